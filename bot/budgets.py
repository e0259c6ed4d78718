"""Budgets: caps on the tokens and images a person, or a whole server, may spend in a period.

Which caps bind a person: their own override if there is one, else the most generous of their
roles' caps, else the cap for every person; and the server's total. Periods are calendar days,
weeks (from Monday) and months, in UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from bot.db.config_store import BudgetRule
from bot.db.models import BudgetScope, Period
from bot.db.usage_store import EVERYONE

_DAYS = {Period.DAY: 1, Period.WEEK: 7, Period.MONTH: 30}  # to compare caps of other periods
_SPOKEN = {Period.DAY: "today", Period.WEEK: "this week", Period.MONTH: "this month"}
WARN_AT = 0.8  # of a cap: a person is told once in a period, under an answer


class Dimension(enum.StrEnum):
    TOKENS = "tokens"
    IMAGES = "images"


@dataclass(frozen=True)
class Cap:
    subject: int  # a person's id, or EVERYONE for the server's total
    dimension: Dimension
    limit: int
    period: Period

    def describe(self, used: int, now: datetime) -> str:
        """'You have used 480 of your 500 tokens today; ...' as one sentence."""
        whose = "This server has used" if self.subject == EVERYONE else "You have used"
        its = "its" if self.subject == EVERYONE else "your"
        reset = int(resets_at(self.period, now).timestamp())
        return (
            f"{whose} {used:,} of {its} {self.limit:,} {self.dimension.value} "
            f"{_SPOKEN[self.period]}; more is allowed <t:{reset}:R>."
        )


def caps_for(rules: Sequence[BudgetRule], person_id: int, roles: frozenset[int]) -> list[Cap]:
    """The caps that bind this person: theirs, and the server's."""
    caps = [
        Cap(EVERYONE, dimension, limit, rule.period)
        for rule in rules
        if rule.scope is BudgetScope.SERVER
        for dimension in Dimension
        if (limit := rule.cap(dimension)) is not None
    ]
    people = [rule for rule in rules if rule.scope is BudgetScope.PERSON]
    own = [rule for rule in people if rule.user_id == person_id]
    of_roles = [rule for rule in people if rule.role_id and rule.role_id in roles]
    everyone = [rule for rule in people if not rule.role_id and not rule.user_id]
    binding = own or of_roles or everyone
    for dimension in Dimension:
        chosen = _most_generous(binding, dimension)
        if chosen is not None:
            limit = chosen.cap(dimension)
            assert limit is not None
            caps.append(Cap(person_id, dimension, limit, chosen.period))
    return caps


def _most_generous(rules: Sequence[BudgetRule], dimension: Dimension) -> BudgetRule | None:
    """The rule allowing the most of `dimension` (None: no cap at all)."""
    if not rules or any(rule.cap(dimension) is None for rule in rules):
        return None

    def per_day(rule: BudgetRule) -> tuple[float, int]:
        limit = rule.cap(dimension) or 0
        return limit / _DAYS[rule.period], limit

    return max(rules, key=per_day)


def period_start(period: Period, now: datetime) -> date:
    today = now.astimezone(UTC).date()
    if period is Period.DAY:
        return today
    if period is Period.WEEK:
        return today - timedelta(days=today.weekday())
    return today.replace(day=1)


def resets_at(period: Period, now: datetime) -> datetime:
    start = period_start(period, now)
    if period is Period.DAY:
        end = start + timedelta(days=1)
    elif period is Period.WEEK:
        end = start + timedelta(days=7)
    else:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return datetime.combine(end, time(), tzinfo=UTC)

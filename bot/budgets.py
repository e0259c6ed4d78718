"""Budgets: caps on the tokens and images a person, or a whole server, may spend in a period.

Which caps bind a person: their own override if there is one, else the most generous of their
roles' caps, else the cap for every person; and the server's total. Periods are calendar days,
weeks (from Monday) and months, in UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from bot.db.budget_store import CapCheck, Ledger
from bot.db.config_store import BudgetRule
from bot.db.models import BudgetScope, Period
from bot.db.usage_store import EVERYONE, DaySpent, RecordedUse, Spent, UsageStore
from bot.server_config import ServerConfig

_DAYS = {Period.DAY: 1, Period.WEEK: 7, Period.MONTH: 30}  # to compare caps of other periods
SPOKEN = {Period.DAY: "today", Period.WEEK: "this week", Period.MONTH: "this month"}
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

    def describe(
        self, used: int, now: datetime, *, asked: int = 1, needed: int | None = None
    ) -> str:
        """'You have used 480 of your 500 tokens today; the count starts again in 5 hours.'
        (`asked`: images asked for at once, said when more than one; `needed`: the tokens a
        question needs, said when some are left but too few.)"""
        whose = "This server has" if self.subject == EVERYONE else "You have"
        its = "its" if self.subject == EVERYONE else "your"
        what = f"{self.limit:,} {self.dimension.value} {SPOKEN[self.period]}"
        reset = f"the count starts again <t:{int(resets_at(self.period, now).timestamp())}:R>"
        if needed is not None and used < self.limit:
            left = f"{self.limit - used:,} {self.dimension.value} left"
            limit = f"{its} {self.limit:,} {SPOKEN[self.period]}"
            return f"{whose} {left} of {limit}, and this needs about {needed:,}; {reset}."
        too_many = f", so {asked} more can't be made" if asked > 1 else ""
        return f"{whose} used {used:,} of {its} {what}{too_many}; {reset}."


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


def checks_for(caps: Sequence[Cap], now: datetime) -> list[CapCheck]:
    """The caps as the ledger checks them, each counted from its period's start."""
    return [
        CapCheck(cap.subject, cap.dimension.value, cap.limit, period_start(cap.period, now))
        for cap in caps
    ]


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


@dataclass(frozen=True)
class CapUse:
    cap: Cap
    used: int  # used and held now
    resets_at: datetime


@dataclass(frozen=True)
class RuleUse:
    """A budget, and (where one number says it) how much of it is used now."""

    rule: BudgetRule
    used: Spent | None  # the server's, or the one member's; None for everyone's or a role's


@dataclass(frozen=True)
class UsageView:
    """What /usage shows: use against the caps, and the last 30 days."""

    caps: list[CapUse]
    since: date  # the period the totals below are of
    spent: Spent
    days: list[DaySpent]
    top_people: list[tuple[int, Spent]]  # the server's view only
    by_model: dict[str, Spent]  # the server's view only


CHART_DAYS = 30


class Budgets:
    """Budgets as admins set and read them (/budget), and use as people see it (/usage)."""

    def __init__(
        self,
        config: ServerConfig,
        ledger: Ledger,
        usage: UsageStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._ledger = ledger
        self._usage = usage
        self.now = clock

    async def set(self, guild_id: int, rule: BudgetRule, *, by: int) -> None:
        await self._config.set_budget(guild_id, rule, by=by)

    async def clear(self, guild_id: int, rule: BudgetRule) -> bool:
        return await self._config.clear_budget(guild_id, rule)

    async def overview(self, guild_id: int) -> list[RuleUse]:
        now = self.now()
        uses = []
        for rule in await self._config.budgets(guild_id):
            subject = EVERYONE if rule.scope is BudgetScope.SERVER else rule.user_id
            used = None
            if rule.scope is BudgetScope.SERVER or rule.user_id:
                used = await self._usage.spent(
                    guild_id, subject, since=period_start(rule.period, now)
                )
            uses.append(RuleUse(rule, used))
        return uses

    async def view(self, guild_id: int, person_id: int, roles: frozenset[int]) -> UsageView:
        """A person's use: their caps (and the server's) and their own days."""
        caps = caps_for(await self._config.budgets(guild_id), person_id, roles)
        return await self._view(guild_id, person_id, caps)

    async def server_view(self, guild_id: int) -> UsageView:
        rules = await self._config.budgets(guild_id)
        servers = [rule for rule in rules if rule.scope is BudgetScope.SERVER]
        return await self._view(guild_id, EVERYONE, caps_for(servers, EVERYONE, frozenset()))

    async def _view(self, guild_id: int, subject: int, caps: Sequence[Cap]) -> UsageView:
        now = self.now()
        used = await self._ledger.used(guild_id, checks_for(caps, now), now)
        uses = [
            CapUse(cap, spent, resets_at(cap.period, now))
            for cap, spent in zip(caps, used, strict=True)
        ]
        # Totals over the shortest period a cap counts, else this month.
        periods = [cap.period for cap in caps if cap.subject == subject] or [Period.MONTH]
        since = max(period_start(period, now) for period in periods)
        today = now.astimezone(UTC).date()
        server = subject == EVERYONE
        return UsageView(
            caps=uses,
            since=since,
            spent=await self._usage.spent(guild_id, subject, since=since),
            days=await self._usage.by_day(
                guild_id, subject, since=today - timedelta(days=CHART_DAYS - 1)
            ),
            top_people=await self._usage.top_people(guild_id, since=since) if server else [],
            by_model=await self._usage.by_model(guild_id, since=since) if server else {},
        )

    async def records_since(self, guild_id: int, since: date) -> list[RecordedUse]:
        return await self._usage.records(
            guild_id, since=datetime.combine(since, time(), tzinfo=UTC)
        )

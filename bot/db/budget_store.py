"""The budget ledger: what is used and held against a cap, and holds taken atomically.

A hold (reservation) is checked and written in one transaction that first takes the server's
lock (`lock_server`): concurrent requests, in one process or several, cannot together pass a
cap. Holds a crashed process left behind stop counting when they expire.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.config_store import lock_server
from bot.db.models import Reservation, UsageDay
from bot.db.usage_store import EVERYONE


@dataclass(frozen=True)
class CapCheck:
    """One cap to check: `limit` of "tokens" or "images" for a person (or EVERYONE), counted
    from day `since`."""

    subject: int
    dimension: str
    limit: int
    since: date


class CapReached(Exception):
    """The cap `checks[index]` leaves too little; `used` is what was used and held."""

    def __init__(self, index: int, used: int) -> None:
        super().__init__(index, used)
        self.index = index
        self.used = used


@dataclass(frozen=True)
class Held:
    id: int
    tokens: int
    images: int
    used: tuple[int, ...]  # per check, used and held before this hold


class Ledger:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def used(self, guild_id: int, checks: Sequence[CapCheck], now: datetime) -> list[int]:
        """What is used and held now against each cap."""
        async with self._sessions() as session:
            return [await _used(session, guild_id, check, now) for check in checks]

    async def hold(
        self,
        guild_id: int,
        user_id: int,
        checks: Sequence[CapCheck],
        *,
        least_tokens: int = 0,
        most_tokens: int = 0,
        images: int = 0,
        now: datetime,
        expires_at: datetime,
    ) -> Held:
        """Hold up to `most_tokens` (at least `least_tokens`, or CapReached) and `images`
        (all of them, or CapReached) against every cap."""
        async with self._sessions.begin() as session:
            await lock_server(session, guild_id)
            await session.execute(
                delete(Reservation).where(
                    Reservation.guild_id == guild_id, Reservation.expires_at <= now
                )
            )
            tokens = most_tokens
            used_now = []
            for index, check in enumerate(checks):
                used = await _used(session, guild_id, check, now)
                used_now.append(used)
                asks_tokens = check.dimension == "tokens"
                if not (most_tokens if asks_tokens else images):
                    continue  # the request takes none of it
                left = check.limit - used
                if left < (max(least_tokens, 1) if asks_tokens else images):
                    raise CapReached(index, used)
                if asks_tokens:
                    tokens = min(tokens, left)
            row = Reservation(
                guild_id=guild_id,
                user_id=user_id,
                tokens=tokens,
                images=images,
                expires_at=expires_at,
            )
            session.add(row)
            await session.flush()
            return Held(row.id, tokens, images, tuple(used_now))

    async def release(self, hold_id: int) -> None:
        async with self._sessions.begin() as session:
            await session.execute(delete(Reservation).where(Reservation.id == hold_id))


async def _used(session: AsyncSession, guild_id: int, check: CapCheck, now: datetime) -> int:
    """Used and held, read in one statement: one snapshot, so that an answer recorded at the
    same moment (its usage in, its hold out) is counted once, never zero times."""
    tokens = check.dimension == "tokens"
    day_column = UsageDay.tokens if tokens else UsageDay.images
    used = select(func.coalesce(func.sum(day_column), 0)).where(
        UsageDay.guild_id == guild_id,
        UsageDay.user_id == check.subject,
        UsageDay.day >= check.since,
    )
    held = select(
        func.coalesce(func.sum(Reservation.tokens if tokens else Reservation.images), 0)
    ).where(Reservation.guild_id == guild_id, Reservation.expires_at > now)
    if check.subject != EVERYONE:
        held = held.where(Reservation.user_id == check.subject)
    both = select(used.scalar_subquery() + held.scalar_subquery())
    return int(await session.scalar(both) or 0)

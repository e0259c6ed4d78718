"""What requests cost, as the API reported it: every request, and the same summed by day.

Each request is one `usage_records` row, and adds to two `usage_days` rows (the person's and
the server's) in the same transaction: a period's total then reads a few dozen rows whatever
the server's size, which is what budgets check before every paid call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot import metrics
from bot.db.models import Reservation, UsageDay, UsageKind, UsageRecord

EVERYONE = 0  # the user id of a server's own rows in usage_days
_EXPORT_BATCH = 5_000
DIRECT = 0  # the guild id of direct messages in usage_days


@dataclass(frozen=True)
class UsageTotals:
    requests: int
    prompt_tokens: int
    completion_tokens: int
    images: int


@dataclass(frozen=True)
class Spent:
    """Tokens (prompt plus completion) and images."""

    tokens: int = 0
    images: int = 0


@dataclass(frozen=True)
class DaySpent:
    day: date
    tokens: int
    images: int


@dataclass(frozen=True)
class RecordedUse:
    """One request, as the export lists it."""

    at: datetime
    user_id: int
    channel_id: int | None
    kind: UsageKind
    model: str
    prompt_tokens: int
    completion_tokens: int
    images: int


class UsageStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def record(
        self,
        *,
        user_id: int,
        guild_id: int | None,
        channel_id: int | None,
        kind: UsageKind,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        images: int = 0,
        reservation_id: int | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record one request (made `at`, default now); its reservation (if any) ends in the
        same transaction."""
        async with self._sessions.begin() as session:
            record = UsageRecord(
                user_id=user_id,
                guild_id=guild_id,
                channel_id=channel_id,
                kind=kind,
                model=model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                images=images,
            )
            if at is not None:
                record.created_at = at
            session.add(record)
            await session.flush()
            await session.execute(
                _add_to_day(
                    session,
                    guild_id=guild_id or DIRECT,
                    user_id=user_id,
                    day=record.created_at.date(),
                    model=model,
                    tokens=prompt_tokens + completion_tokens,
                    images=images,
                )
            )
            if reservation_id is not None:
                await session.execute(delete(Reservation).where(Reservation.id == reservation_id))
        metrics.count_usage(
            model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, images=images
        )

    async def totals(
        self, *, since: datetime, user_id: int | None = None, guild_id: int | None = None
    ) -> UsageTotals:
        query = select(
            func.count(UsageRecord.id),
            func.coalesce(func.sum(UsageRecord.prompt_tokens), 0),
            func.coalesce(func.sum(UsageRecord.completion_tokens), 0),
            func.coalesce(func.sum(UsageRecord.images), 0),
        ).where(UsageRecord.created_at >= since)
        if user_id is not None:
            query = query.where(UsageRecord.user_id == user_id)
        if guild_id is not None:
            query = query.where(UsageRecord.guild_id == guild_id)
        async with self._sessions() as session:
            row = (await session.execute(query)).one()
        return UsageTotals(int(row[0]), int(row[1]), int(row[2]), int(row[3]))

    async def spent(self, guild_id: int, user_id: int, *, since: date) -> Spent:
        """What a person (`EVERYONE`: the whole server) spent from day `since` on."""
        query = select(
            func.coalesce(func.sum(UsageDay.tokens), 0),
            func.coalesce(func.sum(UsageDay.images), 0),
        ).where(
            UsageDay.guild_id == guild_id,
            UsageDay.user_id == user_id,
            UsageDay.day >= since,
        )
        async with self._sessions() as session:
            tokens, images = (await session.execute(query)).one()
        return Spent(int(tokens), int(images))

    async def by_day(self, guild_id: int, user_id: int, *, since: date) -> list[DaySpent]:
        """Day by day from `since` on (days without use are left out), all models together."""
        query = (
            select(UsageDay.day, func.sum(UsageDay.tokens), func.sum(UsageDay.images))
            .where(
                UsageDay.guild_id == guild_id,
                UsageDay.user_id == user_id,
                UsageDay.day >= since,
            )
            .group_by(UsageDay.day)
            .order_by(UsageDay.day)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [DaySpent(day, int(tokens), int(images)) for day, tokens, images in rows]

    async def by_model(self, guild_id: int, *, since: date) -> dict[str, Spent]:
        """The server's use from `since` on, by model, most tokens first."""
        tokens = func.sum(UsageDay.tokens)
        query = (
            select(UsageDay.model, tokens, func.sum(UsageDay.images))
            .where(
                UsageDay.guild_id == guild_id,
                UsageDay.user_id == EVERYONE,
                UsageDay.day >= since,
            )
            .group_by(UsageDay.model)
            .order_by(tokens.desc())
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return {model: Spent(int(t), int(i)) for model, t, i in rows}

    async def top_people(
        self, guild_id: int, *, since: date, limit: int = 10
    ) -> list[tuple[int, Spent]]:
        """Who spent the most tokens from `since` on (then images), with what they spent."""
        tokens, images = func.sum(UsageDay.tokens), func.sum(UsageDay.images)
        query = (
            select(UsageDay.user_id, tokens, images)
            .where(
                UsageDay.guild_id == guild_id,
                UsageDay.user_id != EVERYONE,
                UsageDay.day >= since,
            )
            .group_by(UsageDay.user_id)
            .order_by(tokens.desc(), images.desc(), UsageDay.user_id)
            .limit(limit)
        )
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [(int(user), Spent(int(t), int(i))) for user, t, i in rows]

    async def records(self, guild_id: int, *, since: datetime) -> list[RecordedUse]:
        """Every request in the server from `since` on, oldest first (read as plain rows: a
        busy month has hundreds of thousands)."""
        query = (
            select(
                UsageRecord.created_at,
                UsageRecord.user_id,
                UsageRecord.channel_id,
                UsageRecord.kind,
                UsageRecord.model,
                UsageRecord.prompt_tokens,
                UsageRecord.completion_tokens,
                UsageRecord.images,
            )
            .where(UsageRecord.guild_id == guild_id, UsageRecord.created_at >= since)
            .order_by(UsageRecord.id)
        )
        records: list[RecordedUse] = []
        async with self._sessions() as session:
            result = await session.stream(query)
            async for rows in result.partitions(_EXPORT_BATCH):
                records += (RecordedUse(*row) for row in rows)
                await asyncio.sleep(0)  # answers being written go on meanwhile
        return records


def _add_to_day(
    session: AsyncSession,
    *,
    guild_id: int,
    user_id: int,
    day: date,
    model: str,
    tokens: int,
    images: int,
) -> Any:
    """Add to the day's rows of the person and of the whole server, creating each if it is
    the day's first: one statement."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    statement = insert(UsageDay).values(
        [
            {
                "guild_id": guild_id,
                "user_id": who,
                "day": day,
                "model": model,
                "tokens": tokens,
                "images": images,
                "requests": 1,
            }
            for who in (user_id, EVERYONE)
        ]
    )
    return statement.on_conflict_do_update(
        index_elements=["guild_id", "user_id", "day", "model"],
        set_={
            "tokens": UsageDay.tokens + statement.excluded.tokens,
            "images": UsageDay.images + statement.excluded.images,
            "requests": UsageDay.requests + 1,
        },
    )

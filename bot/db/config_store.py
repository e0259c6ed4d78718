"""Where /config keeps what admins set for a server and its channels, and the log of changes.

Every change also gives the server's row a new random `version`, in the same transaction, so
that a process holding a server's settings knows with one read whether they are still current.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import (
    Budget,
    BudgetScope,
    ChannelSettings,
    ConfigChange,
    Conversation,
    GuildSettings,
    Period,
    Reservation,
    ScopeSettings,
)

# The columns of a server's or a channel's settings, named as /config names them.
SETTINGS = (
    "model",
    "image_model",
    "system_prompt",
    "temperature",
    "max_answer_tokens",
    "reply_mode",
    "history",
    "roles",
    "memory",
)

Values = dict[str, Any]  # setting -> value, only those set


@dataclass(frozen=True)
class BudgetRule:
    """A budget as /budget set stores it (0: no role, no user)."""

    scope: BudgetScope
    period: Period
    tokens: int | None  # None: no cap
    images: int | None
    role_id: int = 0
    user_id: int = 0

    def cap(self, dimension: str) -> int | None:
        return self.tokens if dimension == "tokens" else self.images


@dataclass(frozen=True)
class GuildConfig:
    """A server's settings, its channels' and its budgets, as of `version` (None: nothing was
    ever set)."""

    version: str | None
    server: Values
    channels: dict[int, Values]
    budgets: tuple[BudgetRule, ...] = ()


@dataclass(frozen=True)
class LoggedChange:
    channel_id: int | None  # None: the server's setting
    user_id: int
    setting: str
    old: Any  # None: not set there
    new: Any
    at: datetime


def _values(row: ScopeSettings | None) -> Values:
    if row is None:
        return {}
    return {name: value for name in SETTINGS if (value := getattr(row, name)) is not None}


def _encoded(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def _decoded(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class ConfigStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def version(self, guild_id: int) -> str | None:
        async with self._sessions() as session:
            found: str | None = await session.scalar(
                select(GuildSettings.version).where(GuildSettings.guild_id == guild_id)
            )
            return found

    async def load(self, guild_id: int) -> GuildConfig:
        async with self._sessions() as session:
            # The version is read first: rows newer than it only make the next read reload,
            # while rows older than a version read after them would be kept as current.
            server = await session.get(GuildSettings, guild_id)
            version = server.version if server else None
            channels = await session.scalars(
                select(ChannelSettings).where(ChannelSettings.guild_id == guild_id)
            )
            budgets = await session.scalars(
                select(Budget).where(Budget.guild_id == guild_id).order_by(Budget.id)
            )
            return GuildConfig(
                version,
                _values(server),
                {row.channel_id: _values(row) for row in channels},
                tuple(map(_rule, budgets)),
            )

    async def set_budget(self, guild_id: int, rule: BudgetRule, *, by: int) -> None:
        """Set a budget, in place of the one for the same people."""
        async with self._sessions.begin() as session:
            await self._renew_version(session, guild_id)
            row = await session.scalar(_budget_of(guild_id, rule))
            if row is None:
                row = Budget(
                    guild_id=guild_id, scope=rule.scope, role_id=rule.role_id, user_id=rule.user_id
                )
                session.add(row)
            row.period, row.tokens, row.images = rule.period, rule.tokens, rule.images
            row.updated_by = by

    async def clear_budget(self, guild_id: int, rule: BudgetRule) -> bool:
        """Remove the budget for the same people as `rule`; False if there was none."""
        async with self._sessions.begin() as session:
            await self._renew_version(session, guild_id)
            row = await session.scalar(_budget_of(guild_id, rule))
            if row is None:
                return False
            await session.delete(row)
            return True

    async def change(
        self, guild_id: int, channel_id: int | None, setting: str, value: Any, *, by: int
    ) -> Any:
        """Set `setting` for the server (`channel_id` None) or a channel; None unsets it.
        Logged, and the server's version renewed, in the same transaction. Returns the old
        value."""
        if setting not in SETTINGS:
            raise ValueError(f"no setting {setting!r}")
        async with self._sessions.begin() as session:
            await self._renew_version(session, guild_id)  # locks the server's row first
            row: ScopeSettings | None
            if channel_id is None:
                row = await session.get(GuildSettings, guild_id)
            else:
                await session.execute(
                    _insert_missing(session, ChannelSettings, channel_id=channel_id).values(
                        guild_id=guild_id
                    )
                )
                row = await session.get(ChannelSettings, channel_id)
            assert row is not None
            old = getattr(row, setting)
            setattr(row, setting, value)
            session.add(
                ConfigChange(
                    guild_id=guild_id,
                    channel_id=channel_id,
                    user_id=by,
                    setting=setting,
                    old_value=_encoded(old),
                    new_value=_encoded(value),
                )
            )
            return old

    async def forget_role(self, guild_id: int, role_id: int, *, by: int) -> None:
        """A role was deleted: it leaves every `roles` list (each change logged, by `by`), and
        its budgets go."""
        async with self._sessions.begin() as session:
            await lock_server(session, guild_id)
            server = await session.get(GuildSettings, guild_id)
            channels = await session.scalars(
                select(ChannelSettings).where(ChannelSettings.guild_id == guild_id)
            )
            rows: list[ScopeSettings] = [*([server] if server else []), *channels]
            changed = False
            for row in rows:
                if row.roles is None or role_id not in row.roles:
                    continue
                old, row.roles = row.roles, [role for role in row.roles if role != role_id]
                session.add(
                    ConfigChange(
                        guild_id=guild_id,
                        channel_id=getattr(row, "channel_id", None),
                        user_id=by,
                        setting="roles",
                        old_value=_encoded(old),
                        new_value=_encoded(row.roles),
                    )
                )
                changed = True
            budgets = await session.execute(
                delete(Budget).where(Budget.guild_id == guild_id, Budget.role_id == role_id)
            )
            if changed or budgets.rowcount:  # type: ignore[attr-defined]
                await self._renew_version(session, guild_id)

    async def history(self, guild_id: int, *, limit: int) -> list[LoggedChange]:
        """The newest changes first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(ConfigChange)
                .where(ConfigChange.guild_id == guild_id)
                .order_by(ConfigChange.id.desc())
                .limit(limit)
            )
            return [
                LoggedChange(
                    row.channel_id,
                    row.user_id,
                    row.setting,
                    _decoded(row.old_value),
                    _decoded(row.new_value),
                    row.created_at,
                )
                for row in rows
            ]

    async def forget_channels(self, guild_id: int, channel_ids: Sequence[int]) -> None:
        """Channels (or threads) that are gone: their settings and conversations go too, and
        their threads' conversations."""
        async with self._sessions.begin() as session:
            await lock_server(session, guild_id)
            dropped = await session.execute(
                delete(ChannelSettings).where(ChannelSettings.channel_id.in_(channel_ids))
            )
            if dropped.rowcount:  # type: ignore[attr-defined]
                await self._renew_version(session, guild_id)
            await session.execute(
                delete(Conversation).where(
                    Conversation.channel_id.in_(channel_ids)
                    | Conversation.parent_id.in_(channel_ids)
                )
            )

    async def forget_guild(self, guild_id: int) -> None:
        """The bot left the server: its settings, their log and its conversations go."""
        async with self._sessions.begin() as session:
            await lock_server(session, guild_id)
            for table in (ChannelSettings, ConfigChange, Conversation, Budget, Reservation):
                await session.execute(delete(table).where(table.guild_id == guild_id))
            # Gone with its version: a later one is new, so nothing held from before matches.
            await session.execute(delete(GuildSettings).where(GuildSettings.guild_id == guild_id))

    async def _renew_version(self, session: AsyncSession, guild_id: int) -> None:
        version = uuid.uuid4().hex
        await session.execute(
            _insert_missing(session, GuildSettings, guild_id=guild_id).values(version=version)
        )
        await session.execute(
            update(GuildSettings).where(GuildSettings.guild_id == guild_id).values(version=version)
        )


def _rule(row: Budget) -> BudgetRule:
    return BudgetRule(row.scope, row.period, row.tokens, row.images, row.role_id, row.user_id)


def _budget_of(guild_id: int, rule: BudgetRule) -> Select[Budget]:
    return select(Budget).where(
        Budget.guild_id == guild_id,
        Budget.scope == rule.scope,
        Budget.role_id == rule.role_id,
        Budget.user_id == rule.user_id,
    )


async def lock_server(session: AsyncSession, guild_id: int) -> None:
    """Take the server's row first in a transaction that must not interleave with another
    one of the same server: PostgreSQL locks the row (other processes wait for it); SQLite
    takes its one write lock, by writing. Every such transaction takes it first, so that two
    never wait for each other in opposite orders."""
    row = GuildSettings.guild_id == guild_id
    if session.get_bind().dialect.name == "sqlite":
        await session.execute(update(GuildSettings).where(row).values(guild_id=guild_id))
    else:
        await session.execute(select(GuildSettings.guild_id).where(row).with_for_update())


def _insert_missing(
    session: AsyncSession, table: type[GuildSettings] | type[ChannelSettings], **key: int
) -> Any:
    """INSERT of a row by its key that does nothing when the row is there already."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).values(**key).on_conflict_do_nothing()

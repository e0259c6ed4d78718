"""Where /config keeps its settings and their log, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db import migrate
from bot.db.config_store import BudgetRule, ConfigStore, GuildConfig
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import BudgetScope, ConversationKind, Period
from bot.db.repository import ConversationStore

GUILD, OTHER_GUILD = 1, 2
PERSON = BudgetScope.PERSON


async def test_each_change_is_logged_and_renews_the_version(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConfigStore(sessions)
    assert await store.version(GUILD) is None
    assert await store.change(GUILD, None, "model", "gpt-4o", by=5) is None
    first = await store.version(GUILD)
    assert await store.change(GUILD, 10, "roles", [7, 8], by=6) is None
    assert await store.change(GUILD, 10, "roles", [], by=6) == [7, 8]
    assert await store.change(GUILD, 10, "temperature", None, by=6) is None
    config = await store.load(GUILD)
    assert config.version not in (None, first)
    assert config.server == {"model": "gpt-4o"}
    assert config.channels == {10: {"roles": []}}
    history = await store.history(GUILD, limit=3)
    assert [(c.channel_id, c.user_id, c.setting, c.old, c.new) for c in history] == [
        (10, 6, "temperature", None, None),
        (10, 6, "roles", [7, 8], []),
        (10, 6, "roles", None, [7, 8]),
    ]
    assert await store.history(OTHER_GUILD, limit=25) == []


async def test_concurrent_changes_from_two_processes_all_count(database_url: str) -> None:
    """Two engines (as two processes would have) change one server at once: every change
    lands, each is logged with the value it replaced, and the last one stays."""
    engines: list[AsyncEngine] = []
    stores = []
    for _ in range(2):
        engine = create_engine(database_url)
        engines.append(engine)
        stores.append(ConfigStore(create_sessionmaker(engine)))
    await migrate.upgrade(engines[0])
    try:
        await asyncio.gather(
            *(stores[i % 2].change(GUILD, 10, "max_answer_tokens", i + 1, by=i) for i in range(10))
        )
        history = list(reversed(await stores[0].history(GUILD, limit=25)))
        assert len(history) == 10
        # Each change replaced the one before it: none was lost to a race.
        assert history[0].old is None
        for before, after in itertools.pairwise(history):
            assert after.old == before.new
        config = await stores[1].load(GUILD)
        assert config.channels[10]["max_answer_tokens"] == history[-1].new
    finally:
        for engine in engines:
            await engine.dispose()


async def test_forgetting_a_channel_and_a_server(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConfigStore(sessions)
    conversations = ConversationStore(sessions)
    for guild, channel in ((GUILD, 10), (GUILD, 11), (OTHER_GUILD, 20)):
        await store.change(guild, channel, "reply_mode", "all", by=5)
        await conversations.open(channel, guild_id=guild, kind=ConversationKind.CHANNEL)
    await conversations.open(100, guild_id=GUILD, kind=ConversationKind.THREAD, parent_id=10)
    before = await store.version(GUILD)

    await store.forget_channels(GUILD, [10])
    assert (await store.load(GUILD)).channels == {11: {"reply_mode": "all"}}
    assert await store.version(GUILD) != before
    assert await conversations.find(10) is None
    assert await conversations.find(100) is None  # its thread's, archived or not
    assert await conversations.find(11) is not None

    await store.forget_guild(GUILD)
    assert await store.version(GUILD) is None
    assert await store.load(GUILD) == GuildConfig(None, {}, {})
    assert await store.history(GUILD, limit=25) == []
    assert await conversations.find(11) is None
    # Another server keeps what is its own.
    assert (await store.load(OTHER_GUILD)).channels == {20: {"reply_mode": "all"}}
    assert await conversations.find(20) is not None


async def test_a_deleted_role_leaves_every_roles_list_and_its_budgets_go(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConfigStore(sessions)
    await store.change(GUILD, None, "roles", [7, 8], by=5)
    await store.change(GUILD, 10, "roles", [7], by=5)
    for role in (7, 8):
        await store.set_budget(GUILD, BudgetRule(PERSON, Period.DAY, 100, None, role), by=5)
    before = await store.version(GUILD)

    await store.forget_role(GUILD, 7, by=99)
    config = await store.load(GUILD)
    assert config.server["roles"] == [8]
    assert config.channels[10]["roles"] == []
    assert [rule.role_id for rule in config.budgets] == [8]
    assert config.version != before
    logged = await store.history(GUILD, limit=2)
    assert {(c.channel_id, c.user_id, tuple(c.old), tuple(c.new)) for c in logged} == {
        (None, 99, (7, 8), (8,)),
        (10, 99, (7,), ()),
    }

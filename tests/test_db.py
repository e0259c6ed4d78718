from __future__ import annotations

import asyncio
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db import migrate
from bot.db.engine import create_engine
from bot.db.models import Base, ConversationKind, TurnStatus, UsageKind
from bot.db.repository import ConversationStore, ImageRef, NewTurn, StateStore, UsageStore


def _turn(n: int, *, role: str = "user", tokens: int = 10) -> NewTurn:
    return NewTurn(role=role, content=f"message {n}", token_estimate=tokens, author_id=7)


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as connection:
        assert await connection.run_sync(differences) == []


async def test_migrating_again_changes_nothing(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        await migrate.upgrade(engine)
        current, head = await migrate.pending(engine)
        assert current == head is not None
    finally:
        await engine.dispose()


async def test_processes_starting_at_once_do_not_race(database_url: str, tmp_path: Path) -> None:
    """Several bot processes migrating one PostgreSQL database at once: the lock serialises
    them and every one of them succeeds."""
    if not database_url.startswith("postgresql"):
        pytest.skip("several processes share a database on PostgreSQL")
    environment = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(Path(__file__).parents[1]),
        "DISCORD_TOKEN": "x",
        "ACEDATACLOUD_API_TOKEN": "y",
        "DATABASE_URL": database_url,
    }
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            "migrate",
            cwd=tmp_path,
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    results = [await asyncio.wait_for(p.communicate(), 60) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], results
    engine = create_engine(database_url)
    try:
        current, head = await migrate.pending(engine)
        assert current == head is not None
    finally:
        await engine.dispose()


async def test_sqlite_runs_with_wal_and_foreign_keys(engine: AsyncEngine) -> None:
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as connection:
        assert (await connection.scalar(text("PRAGMA journal_mode"))) == "wal"
        assert (await connection.scalar(text("PRAGMA foreign_keys"))) == 1


async def test_conversation_is_created_once(sessions: async_sessionmaker[AsyncSession]) -> None:
    store = ConversationStore(sessions)
    results = await asyncio.gather(
        *(store.open(42, guild_id=1, kind=ConversationKind.CHANNEL) for _ in range(5))
    )
    assert len({ref.id for ref in results}) == 1
    assert await store.find(43) is None


async def test_newest_turns_fit_the_budget_whole_and_in_order(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(1, guild_id=None, kind=ConversationKind.THREAD)
    ids = [await store.append_turn(conversation.id, _turn(n)) for n in range(200)]

    turns = await store.newest_turns(conversation.id, token_budget=95)
    # Nine turns of ten tokens fit in 95; a tenth would be half a turn, so it is left out.
    assert [turn.id for turn in turns] == ids[-9:]
    assert [turn.content for turn in turns][-1] == "message 199"

    limited = await store.newest_turns(conversation.id, token_budget=10**6, max_turns=70)
    assert [turn.id for turn in limited] == ids[-70:]  # spans more than one page

    before = await store.newest_turns(conversation.id, token_budget=30, before_turn_id=ids[100])
    assert [turn.id for turn in before] == ids[97:100]


async def test_in_progress_answers_are_not_history_until_finished(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(2, guild_id=None, kind=ConversationKind.CHANNEL)
    await store.append_turn(conversation.id, _turn(1))
    answer = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    assert len(await store.newest_turns(conversation.id, token_budget=1000)) == 1

    await store.finish_turn(
        answer,
        content="the answer",
        token_estimate=5,
        status=TurnStatus.COMPLETE,
        message_ids=[555, 556],
        model="gpt-4o",
        prompt_tokens=12,
        completion_tokens=3,
    )
    turns = await store.newest_turns(conversation.id, token_budget=1000)
    assert [(t.role, t.content, t.message_ids) for t in turns] == [
        ("user", "message 1", []),
        ("assistant", "the answer", [555, 556]),
    ]


async def test_crashed_answers_are_marked_interrupted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(3, guild_id=None, kind=ConversationKind.CHANNEL)
    turn = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="half", token_estimate=2, status=TurnStatus.IN_PROGRESS),
    )
    other = await store.open(4, guild_id=77, kind=ConversationKind.CHANNEL)
    theirs = await store.append_turn(
        other.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    # Another process serves server 77: its answer may still be running.
    interrupted = await store.interrupt_unfinished(lambda guild_id: guild_id != 77)
    assert [(t.id, channel_id) for t, channel_id in interrupted] == [(turn, 3)]
    stored = await store.get_turn(turn)
    assert stored is not None and stored.status is TurnStatus.INTERRUPTED
    running = await store.get_turn(theirs)
    assert running is not None and running.status is TurnStatus.IN_PROGRESS
    assert await store.interrupt_unfinished(lambda guild_id: guild_id != 77) == []


async def test_reset_forgets_turns_and_their_images(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    store = ConversationStore(sessions)
    conversation = await store.open(4, guild_id=9, kind=ConversationKind.CHANNEL)
    other = await store.open(5, guild_id=9, kind=ConversationKind.CHANNEL)
    image = ImageRef(channel_id=4, message_id=10, attachment_id=11, filename="a.png", prompt="cat")
    await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="img", token_estimate=1, images=[image]),
    )
    await store.append_turn(other.id, _turn(1))
    assert await store.newest_image(conversation.id) == image

    assert await store.reset(4) == 1
    assert await store.newest_turns(conversation.id, token_budget=100) == []
    assert await store.newest_image(conversation.id) is None
    assert len(await store.newest_turns(other.id, token_budget=100)) == 1
    assert await store.reset(999) == 0


async def test_usage_totals_by_user_and_server(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    usage = UsageStore(sessions)
    for user, tokens in ((1, 10), (1, 5), (2, 100)):
        await usage.record(
            user_id=user,
            guild_id=50,
            channel_id=60,
            kind=UsageKind.CHAT,
            model="gpt-4o",
            prompt_tokens=tokens,
            completion_tokens=1,
        )
    await usage.record(
        user_id=1, guild_id=50, channel_id=60, kind=UsageKind.IMAGE, model="gpt-image-1", images=2
    )
    since = datetime.now(UTC) - timedelta(hours=1)
    mine = await usage.totals(since=since, user_id=1)
    assert (mine.requests, mine.prompt_tokens, mine.completion_tokens, mine.images) == (3, 15, 2, 2)
    server = await usage.totals(since=since, guild_id=50)
    assert server.prompt_tokens == 115
    future = await usage.totals(since=datetime.now(UTC) + timedelta(hours=1))
    assert future.requests == 0


async def test_state_values(sessions: async_sessionmaker[AsyncSession]) -> None:
    state = StateStore(sessions)
    assert await state.get("k") is None
    await state.set("k", "one")
    await state.set("k", "two")
    assert await state.get("k") == "two"


async def test_turn_ids_are_never_reused(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Buttons carry turn ids: after a delete, a new turn must not take an old id."""
    store = ConversationStore(sessions)
    conversation = await store.open(6, guild_id=None, kind=ConversationKind.CHANNEL)
    first = await store.append_turn(conversation.id, _turn(1))
    await store.delete_turns([first])
    second = await store.append_turn(conversation.id, _turn(2))
    assert second > first


async def test_nul_characters_are_stored_as_replacement_characters(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """PostgreSQL refuses NUL in text; a model or a person can still send one."""
    store = ConversationStore(sessions)
    conversation = await store.open(3, guild_id=None, kind=ConversationKind.CHANNEL)
    image = ImageRef(3, 30, 300, "a\x00.png", "image/png", prompt="draw\x00 it")
    await store.append_turn(
        conversation.id,
        NewTurn(
            role="user",
            content="hi\x00there",
            token_estimate=3,
            author_name="ev\x00e",
            images=[image],
        ),
    )
    answer = await store.append_turn(
        conversation.id,
        NewTurn(role="assistant", content="", token_estimate=0, status=TurnStatus.IN_PROGRESS),
    )
    await store.finish_turn(
        answer, content="x\x00y", token_estimate=1, status=TurnStatus.COMPLETE, message_ids=[]
    )
    question, reply = await store.newest_turns(conversation.id, token_budget=1000)
    assert (question.content, question.author_name) == ("hi\ufffdthere", "ev\ufffde")
    assert (question.images[0].filename, question.images[0].prompt) == (
        "a\ufffd.png",
        "draw\ufffd it",
    )
    assert reply.content == "x\ufffdy"

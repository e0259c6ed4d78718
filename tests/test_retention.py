"""HISTORY_RETENTION_DAYS: the retention sweep on a real database, with an injected clock."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import InstrumentedAttribute

from bot.ai import EmbeddingResult
from bot.db.models import ConversationKind, Turn, TurnImage, TurnStatus, TurnVector
from bot.db.repository import ConversationStore, ImageRef, NewTurn
from bot.db.usage_store import UsageStore
from bot.db.vector_store import NewVector, VectorStore
from bot.memory import Memory, MemoryOptions
from bot.retention import Retention
from tests.helpers import admission_on

NOW = datetime(2027, 3, 1, 12, tzinfo=UTC)
DAYS = 30
# Every turn gets the same unit vector: each is as like a question as can be.
VECTOR = b"\x00\x00\x80\x3f" + b"\x00" * 4 * 255

pytestmark = pytest.mark.timeout(30)


class NoEmbeddings:
    async def embed(
        self, inputs: str | Sequence[str], *, model: str, dimensions: int | None = None
    ) -> EmbeddingResult:
        raise AssertionError("nothing is embedded here")


class Batches:
    """A watcher recording each deletion it is told of."""

    def __init__(self) -> None:
        self.deleted: list[list[int]] = []

    def answer_replaced(self, conversation_id: int, turn_id: int) -> None: ...

    def turns_deleted(self, conversation_id: int, turn_ids: Sequence[int]) -> None:
        self.deleted.append(list(turn_ids))

    def conversation_reset(self, conversation_id: int) -> None: ...


async def _turn(
    store: ConversationStore,
    sessions: async_sessionmaker[AsyncSession],
    conversation_id: int,
    *,
    age: timedelta,
    status: TurnStatus = TurnStatus.COMPLETE,
) -> int:
    turn_id = await store.append_turn(
        conversation_id,
        NewTurn(
            role="user",
            content=f"turn {age}",
            token_estimate=5,
            status=status,
            images=[ImageRef(1, 2, 3, "cat.png")],
        ),
    )
    async with sessions.begin() as session:
        await session.execute(update(Turn).where(Turn.id == turn_id).values(created_at=NOW - age))
    return turn_id


async def _ids(
    sessions: async_sessionmaker[AsyncSession], column: InstrumentedAttribute[int]
) -> set[int]:
    async with sessions() as session:
        return set(await session.scalars(select(column)))


async def test_old_turns_go_in_batches_with_their_images_and_vectors(
    sessions: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    store = ConversationStore(sessions)
    vectors = VectorStore(sessions, model="text-embedding-3-small", dimensions=256)
    memory = Memory(
        NoEmbeddings(),
        admission_on(sessions),
        vectors,
        store,
        UsageStore(sessions),
        MemoryOptions("text-embedding-3-small", 256),
    )
    batches = Batches()
    store.watchers.append(batches)
    talk = await store.open(10, guild_id=1, kind=ConversationKind.CHANNEL)
    other = await store.open(11, guild_id=1, kind=ConversationKind.CHANNEL)
    old = [
        await _turn(store, sessions, talk.id, age=timedelta(days=DAYS, hours=10 - n))
        for n in range(10)
    ]
    kept = [
        await _turn(store, sessions, talk.id, age=timedelta(days=DAYS - 1)),
        await _turn(store, sessions, other.id, age=timedelta(hours=1)),
        # Still being answered, however old: never deleted under it.
        await _turn(
            store, sessions, other.id, age=timedelta(days=DAYS + 5), status=TurnStatus.IN_PROGRESS
        ),
    ]
    finished = old + kept[:2]
    async with sessions() as session:
        contents = {t.id: t.content for t in await session.scalars(select(Turn))}
    await vectors.add(
        [NewVector(t, talk.id if t != kept[1] else other.id, VECTOR, contents[t]) for t in finished]
    )
    # The bot's own search holds the conversation's vectors in memory from here on.
    found = await memory.nearest(talk.id, VECTOR, before=None, limit=20)
    assert {f.turn.id for f in found} == set(old) | {kept[0]}

    retention = Retention(store, DAYS, lambda: NOW, batch_size=3, pause=0)
    with caplog.at_level(logging.INFO, logger="bot.retention"):
        assert await retention.sweep() == 10

    assert [len(batch) for batch in batches.deleted] == [3, 3, 3, 1]
    assert sorted(t for batch in batches.deleted for t in batch) == old
    assert await _ids(sessions, Turn.id) == set(kept)
    assert await _ids(sessions, TurnImage.turn_id) == set(kept)
    assert await _ids(sessions, TurnVector.turn_id) == set(kept[:2])
    held = memory._cache.get(talk.id)  # what the bot's search would look through
    assert held is not None and list(held.ids[: held.count]) == [kept[0]]
    assert "Deleted 10 turns older than 30 days" in caplog.text
    # Nothing left to delete: a second run (or another process's) finds nothing.
    assert await retention.sweep() == 0

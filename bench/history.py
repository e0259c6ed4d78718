"""How long loading the newest 50 turns takes with 100 and with 100,000 stored turns.

    python -m bench.history [--database-url URL] [--repeat 200]

Walking the (conversation_id, id) index backwards should make both figures about equal.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import ConversationKind, Turn, TurnStatus
from bot.db.repository import ConversationStore

_BATCH = 5_000


async def _fill(store: ConversationStore, engine_url: str, channel_id: int, turns: int) -> int:
    conversation = await store.open(channel_id, guild_id=1, kind=ConversationKind.CHANNEL)
    engine = create_engine(engine_url)
    rows: list[dict[str, object]] = [
        {
            "conversation_id": conversation.id,
            "role": "user" if n % 2 == 0 else "assistant",
            "content": f"turn {n}: " + "lorem ipsum dolor sit amet " * 8,
            "token_estimate": 80,
            "status": TurnStatus.COMPLETE,
            "message_ids": [],
            "author_id": 1,
        }
        for n in range(turns)
    ]
    async with engine.begin() as connection:
        for start in range(0, turns, _BATCH):
            await connection.execute(insert(Turn), rows[start : start + _BATCH])
    await engine.dispose()
    return conversation.id


async def _time_loads(store: ConversationStore, conversation_id: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        turns = await store.newest_turns(conversation_id, token_budget=10**9, max_turns=50)
        samples.append(time.perf_counter() - started)
        assert len(turns) == 50
    return statistics.median(samples)


async def main(database_url: str | None, repeat: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = database_url or f"sqlite+aiosqlite:///{Path(folder) / 'bench.db'}"
        engine = create_engine(url)
        await migrate.upgrade(engine)
        store = ConversationStore(create_sessionmaker(engine))
        small = await _fill(store, url, channel_id=1_000_001, turns=100)
        large = await _fill(store, url, channel_id=1_000_002, turns=100_000)
        await _time_loads(store, large, 20)  # warm up caches and the connection pool
        small_time = await _time_loads(store, small, repeat)
        large_time = await _time_loads(store, large, repeat)
        await engine.dispose()
    print(f"database: {engine.dialect.name}")
    print(f"newest 50 of 100 turns:     {small_time * 1000:.2f} ms (median of {repeat})")
    print(f"newest 50 of 100,000 turns: {large_time * 1000:.2f} ms (median of {repeat})")
    print(f"ratio: {large_time / small_time:.2f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url", help="default: a temporary SQLite file")
    parser.add_argument("--repeat", type=int, default=200)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.database_url, arguments.repeat))

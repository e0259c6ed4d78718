"""How long long-term memory's search takes over a conversation of 100,000 embedded turns.

    python -m bench.memory [--postgres URL] [--turns 100000]

Fills a database with one conversation of 100,000 turns, each with a random unit vector of 256
dimensions (EMBEDDING_DIMENSIONS' default), in bulk. Then times `Memory.nearest`, the search a
recall makes once the question is embedded (the 4 most similar turns older than the newest
window, read back as turns): the first search of a process (where the bot searches itself, it
reads the conversation's vectors into memory then), and p50 and max of 50 more, each for
another query, with the cache warm.

SQLite runs in a temporary folder. With --postgres, that database's public schema is dropped
and made again; where it has pgvector, searching is timed twice: with pgvector's HNSW index,
and by the bot itself as without the extension. Exits with 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.usage import Row, _print
from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import Conversation, ConversationKind, Turn, TurnStatus, TurnVector
from bot.db.repository import ConversationStore
from bot.db.vector_store import VectorStore, vector_literal
from bot.memory import Memory, MemoryOptions
from tests.conftest import empty_postgres
from tests.helpers import admission_on

MODEL, DIMENSIONS = "text-embedding-3-small", 256
CHUNK = 5_000
RUNS = 50
WARM_TARGET_S, FIRST_TARGET_S = 0.050, 0.500
# The index as revision 0005 makes it (a module name that starts with a digit).
INDEX = importlib.import_module("bot.migrations.versions.0005_turn_vectors").EMBEDDING_INDEX


def _unit_vectors(count: int, seed: int) -> list[bytes]:
    import numpy as np

    matrix = np.random.default_rng(seed).standard_normal((count, DIMENSIONS), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return [row.astype("<f4").tobytes() for row in matrix]


async def _fill(engine: AsyncEngine, turns: int) -> tuple[int, int, bool]:
    """One conversation of `turns` embedded turns; returns its id, its newest turn's, and
    whether pgvector holds the vectors too."""
    vectors = VectorStore(create_sessionmaker(engine), model=MODEL, dimensions=DIMENSIONS)
    await vectors.prepare()
    async with engine.begin() as connection:
        if vectors.pgvector:  # built once at the end: far quicker than row by row
            await connection.execute(text("DROP INDEX ix_turn_vectors_embedding_256"))
        conversation_id = (
            await connection.execute(
                insert(Conversation).returning(Conversation.id),
                {"channel_id": 1, "guild_id": 1, "kind": ConversationKind.CHANNEL},
            )
        ).scalar_one()
    for start in range(0, turns, CHUNK):
        count = min(CHUNK, turns - start)
        blobs = _unit_vectors(count, seed=start)
        async with engine.begin() as connection:
            ids = (
                await connection.execute(
                    insert(Turn).returning(Turn.id),
                    [
                        {
                            "conversation_id": conversation_id,
                            "role": "user" if n % 2 == 0 else "assistant",
                            "author_id": 7,
                            "author_name": "someone",
                            "content": f"someone: turn {start + n} of a long conversation",
                            "token_estimate": 20,
                            "status": TurnStatus.COMPLETE,
                            "message_ids": [],
                        }
                        for n in range(count)
                    ],
                )
            ).scalars()
            rows: list[dict[str, Any]] = [
                {
                    "turn_id": turn_id,
                    "conversation_id": conversation_id,
                    "model": MODEL,
                    "dimensions": DIMENSIONS,
                    "vector": blob,
                }
                for turn_id, blob in zip(ids, blobs, strict=True)
            ]
            await connection.execute(insert(TurnVector), rows)
            if vectors.pgvector:
                await connection.execute(
                    text(
                        "UPDATE turn_vectors SET embedding = CAST(CAST(:literal AS text) AS vector)"
                        " WHERE turn_id = :turn_id"
                    ),
                    [
                        {"turn_id": r["turn_id"], "literal": vector_literal(r["vector"])}
                        for r in rows
                    ],
                )
    if engine.dialect.name == "postgresql":
        async with engine.begin() as connection:
            if vectors.pgvector:
                await connection.execute(text("SET maintenance_work_mem = '512MB'"))
                await connection.execute(text(INDEX))
            await connection.execute(text("ANALYZE"))
    return conversation_id, int(rows[-1]["turn_id"]), vectors.pgvector


def _memory(sessions: async_sessionmaker[AsyncSession], pgvector: bool) -> Memory:
    vectors = VectorStore(sessions, model=MODEL, dimensions=DIMENSIONS)
    vectors.pgvector = pgvector
    return Memory(
        api=None,  # type: ignore[arg-type]  # searching embeds nothing
        admission=admission_on(sessions),
        vectors=vectors,
        conversations=ConversationStore(sessions),
        usage=None,  # type: ignore[arg-type]
        options=MemoryOptions(MODEL, DIMENSIONS),
    )


async def _measure(url: str, turns: int) -> tuple[str, float, list[tuple[str, list[Row]]]]:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        started = time.perf_counter()
        conversation_id, newest, pgvector = await _fill(engine, turns)
        filled = time.perf_counter() - started
        sessions = create_sessionmaker(engine)
        queries = _unit_vectors(RUNS + 1, seed=-1 % 2**32)
        window = newest - 40  # the newest turns are in the history
        results = []
        for searched_by_database in [True, False] if pgvector else [False]:
            memory = _memory(sessions, searched_by_database)

            async def search(query: bytes, memory: Memory = memory) -> None:
                await memory.nearest(conversation_id, query, before=window, limit=4)

            started = time.perf_counter()
            await search(queries[0])
            first = time.perf_counter() - started
            samples = []
            for query in queries[1:]:
                started = time.perf_counter()
                await search(query)
                samples.append(time.perf_counter() - started)
            label = "pgvector (HNSW)" if searched_by_database else "the bot (numpy)"
            results.append(
                (
                    f"searched by {label}",
                    [
                        Row("first search", first, first, FIRST_TARGET_S),
                        Row(
                            f"then {RUNS} searches",
                            statistics.median(samples),
                            max(samples),
                            WARM_TARGET_S,
                        ),
                    ],
                )
            )
        return engine.dialect.name, filled, results
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL (emptied!)")
    parser.add_argument("--turns", type=int, default=100_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    print(f"{args.turns:,} embedded turns in one conversation, {DIMENSIONS} dimensions")
    passed = True
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite+aiosqlite:///{Path(folder) / 'memory.db'}"
        for url in [sqlite_url] + ([args.postgres] if args.postgres else []):
            if url == args.postgres:
                asyncio.run(empty_postgres(url))
            name, filled, results = asyncio.run(_measure(url, args.turns))
            for label, rows in results:
                _print(f"{name} (filled in {filled:.1f} s), {label}:", rows)
                passed &= all(row.ok for row in rows)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

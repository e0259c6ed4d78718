"""How long a server's usage totals take with 1,000,000 recorded requests, and the usage chart.

    python -m bench.usage [--postgres URL] [--records 1000000]

Fills a database with the usage of one server (about 1,000 people, a few of them busy, 3 models,
spread over the 60 days to now, in UTC) and the matching `usage_days` rows, with bulk inserts.
Then times, p50 and max over 50 runs after one warm-up, what a budget check reads:
`UsageStore.spent` for the whole server and for its busiest person from the first day of this
month, and for comparison the sum over every request of the month in `usage_records`
(`UsageStore.totals`, as before revision 0004). Early in a month the month holds few requests,
so the same is timed over the last 31 days too, a month's worth. Then `chart_png` of the
server's last 30 days: its first render (which imports matplotlib), then p50 and max of 20.

SQLite runs in a temporary folder, as the bot leaves it (no ANALYZE). With --postgres, that
database's public schema is dropped and made again, and ANALYZEd once filled, as autovacuum
would. Exits with 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as day_time
from pathlib import Path
from typing import Any, ParamSpec

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import UsageDay, UsageKind, UsageRecord
from bot.db.usage_store import EVERYONE, DaySpent, UsageStore
from bot.usage_report import chart_png
from tests.conftest import empty_postgres

GUILD = 1_100_000_000_000_000_001
FIRST_PERSON = 2_200_000_000_000_000_001
PEOPLE = 1_000
DAYS = 60
CHANNELS = 25
# (model, kind, share of the requests)
MODELS = (
    ("gpt-4o-mini", UsageKind.CHAT, 0.6),
    ("gpt-4o", UsageKind.CHAT, 0.3),
    ("gpt-image-1", UsageKind.IMAGE, 0.1),
)
CHUNK = 10_000
RUNS, RENDERS = 50, 20
SUM_TARGET_S = 0.050
CHART_TARGET_S = 0.300

P = ParamSpec("P")


@dataclass
class Row:
    label: str
    p50: float
    max: float
    target: float | None = None

    @property
    def ok(self) -> bool:
        return self.target is None or self.p50 < self.target


def _requests(count: int, now: datetime) -> Iterator[list[dict[str, Any]]]:
    """`count` requests in chunks, the same ones on every run. The people's shares fall off
    like a power law: a few people make much of the traffic."""
    chance = random.Random(20261201)
    people = range(FIRST_PERSON, FIRST_PERSON + PEOPLE)
    by_person = list(itertools.accumulate(1 / (n + 1) ** 0.8 for n in range(PEOPLE)))
    by_model = list(itertools.accumulate(share for _, _, share in MODELS))
    start = datetime.combine(now.date() - timedelta(days=DAYS - 1), day_time(), UTC)
    window = (now - start).total_seconds()
    made = 0
    while made < count:
        size = min(CHUNK, count - made)
        who = chance.choices(people, cum_weights=by_person, k=size)
        which = chance.choices(MODELS, cum_weights=by_model, k=size)
        rows = []
        for user, (model, kind, _) in zip(who, which, strict=True):
            image = kind is UsageKind.IMAGE
            rows.append(
                {
                    "guild_id": GUILD,
                    "channel_id": 3_300_000_000_000_000_000 + chance.randrange(CHANNELS),
                    "user_id": user,
                    "kind": kind,
                    "model": model,
                    "prompt_tokens": 0 if image else chance.randrange(50, 4_000),
                    "completion_tokens": 0 if image else chance.randrange(20, 1_000),
                    "images": chance.randrange(1, 5) if image else 0,
                    "created_at": start + timedelta(seconds=chance.random() * window),
                }
            )
        made += size
        yield rows


async def _fill(engine: AsyncEngine, count: int, now: datetime) -> None:
    """The requests and their sums by day, per person and for the server, as `record` keeps
    them, in bulk."""
    days: dict[tuple[int, date, str], list[int]] = {}
    async with engine.begin() as connection:
        for rows in _requests(count, now):
            await connection.execute(insert(UsageRecord), rows)
            for row in rows:
                tokens = row["prompt_tokens"] + row["completion_tokens"]
                for who in (row["user_id"], EVERYONE):
                    key = (who, row["created_at"].date(), row["model"])
                    summed = days.setdefault(key, [0, 0, 0])
                    summed[0] += tokens
                    summed[1] += row["images"]
                    summed[2] += 1
        day_rows = [
            {
                "guild_id": GUILD,
                "user_id": who,
                "day": day,
                "model": model,
                "tokens": tokens,
                "images": images,
                "requests": requests,
            }
            for (who, day, model), (tokens, images, requests) in days.items()
        ]
        for start in range(0, len(day_rows), CHUNK):
            await connection.execute(insert(UsageDay), day_rows[start : start + CHUNK])


async def _timed(
    call: Callable[P, Awaitable[object]], *args: P.args, **kwargs: P.kwargs
) -> tuple[float, float]:
    """p50 and max of RUNS calls, after one more to warm up."""
    await call(*args, **kwargs)
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await call(*args, **kwargs)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples), max(samples)


async def _measure(url: str, count: int, now: datetime) -> tuple[str, float, list[Row]]:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        started = time.perf_counter()
        await _fill(engine, count, now)
        if engine.dialect.name == "postgresql":
            async with engine.begin() as connection:
                await connection.execute(text("ANALYZE"))
        filled = time.perf_counter() - started
        store = UsageStore(create_sessionmaker(engine))
        busiest = FIRST_PERSON  # the first person has the largest share

        today = now.date()
        rows: list[Row] = []
        for name, since in (
            (f"this month (since {today.replace(day=1)})", today.replace(day=1)),
            ("the last 31 days", today - timedelta(days=30)),
        ):
            moment = datetime.combine(since, day_time(), UTC)
            raw = await store.totals(since=moment, guild_id=GUILD)
            server = await store.spent(GUILD, EVERYONE, since=since)
            assert server.tokens == raw.prompt_tokens + raw.completion_tokens, (server, raw)
            assert server.images == raw.images, (server, raw)
            rows.append(
                Row(
                    f"spent, server, {name}: {raw.requests:,} requests",
                    *await _timed(store.spent, GUILD, EVERYONE, since=since),
                    SUM_TARGET_S,
                )
            )
            rows.append(
                Row(
                    f"spent, busiest person, {name}",
                    *await _timed(store.spent, GUILD, busiest, since=since),
                )
            )
            rows.append(
                Row(
                    f"SUM over usage_records, {name}",
                    *await _timed(store.totals, since=moment, guild_id=GUILD),
                )
            )
        return engine.dialect.name, filled, rows
    finally:
        await engine.dispose()


def _chart_rows(url: str, now: datetime) -> list[Row]:
    """The chart of the server's last 30 days, from the database at `url`."""

    async def read() -> list[DaySpent]:
        engine = create_engine(url)
        try:
            store = UsageStore(create_sessionmaker(engine))
            return await store.by_day(GUILD, EVERYONE, since=now.date() - timedelta(days=29))
        finally:
            await engine.dispose()

    days = asyncio.run(read())
    assert not any(name.split(".")[0] == "matplotlib" for name in sys.modules)

    def render() -> bytes:
        return chart_png(days, today=now.date(), title="Usage of the server, last 30 days")

    started = time.perf_counter()
    render()
    first = time.perf_counter() - started
    samples = []
    for _ in range(RENDERS):
        started = time.perf_counter()
        render()
        samples.append(time.perf_counter() - started)
    return [
        Row("first render (imports matplotlib)", first, first),
        Row(
            f"then {RENDERS} renders",
            statistics.median(samples),
            max(samples),
            CHART_TARGET_S,
        ),
    ]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def _print(title: str, rows: list[Row]) -> None:
    print(title)
    width = max(len(row.label) for row in rows)
    print(f"  {'':{width}}  {'p50':>10}  {'max':>10}  target")
    for row in rows:
        verdict = (
            ""
            if row.target is None
            else f"< {row.target * 1000:.0f} ms {'ok' if row.ok else 'MISSED'}"
        )
        print(f"  {row.label:{width}}  {_ms(row.p50):>10}  {_ms(row.max):>10}  {verdict}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", metavar="URL", help="also on this PostgreSQL (emptied!)")
    parser.add_argument("--records", type=int, default=1_000_000, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    now = datetime.now(UTC)
    print(
        f"{args.records:,} requests in one server: {PEOPLE:,} people, {len(MODELS)} models, "
        f"the {DAYS} days to {now:%Y-%m-%d %H:%M} UTC; {RUNS} runs after a warm-up"
    )
    passed = True
    with tempfile.TemporaryDirectory() as folder:
        sqlite_url = f"sqlite+aiosqlite:///{Path(folder) / 'usage.db'}"
        databases = [sqlite_url] + ([args.postgres] if args.postgres else [])
        for number, url in enumerate(databases):
            if url == args.postgres:
                asyncio.run(empty_postgres(url))
            name, filled, rows = asyncio.run(_measure(url, args.records, now))
            _print(f"{name} (filled in {filled:.1f} s):", rows)
            passed &= all(row.ok for row in rows)
            if number == 0:
                rows = _chart_rows(url, now)
                _print("chart_png, the server's last 30 days:", rows)
                passed &= all(row.ok for row in rows)
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

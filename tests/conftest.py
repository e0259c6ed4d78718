"""Shared fixtures: databases (SQLite always, PostgreSQL when TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL")

DATABASES = [pytest.param("sqlite", id="sqlite")]
if POSTGRES_URL:
    DATABASES.append(pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres))


def pytest_configure(config: pytest.Config) -> None:
    if POSTGRES_URL and config.getoption("numprocesses", None):
        # Its tests empty the one database they share, so they cannot run side by side.
        raise pytest.UsageError("With TEST_POSTGRES_URL, run the tests one at a time: add -n 0.")


async def empty_postgres(url: str) -> None:
    """Drop every table of the database at `url` (a test's or a benchmark's own)."""
    engine = create_engine(url)
    async with engine.begin() as connection:
        # A connection left behind (by a bot process killed mid-answer, or a task that outlived
        # its test) would hold the drop up until it goes: end it now.
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(params=DATABASES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the environment offers."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    assert POSTGRES_URL is not None
    await empty_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database."""
    engine = create_engine(database_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return create_sessionmaker(engine)


@pytest.fixture(params=["chat_completions", "responses"])
def chat_api(request: pytest.FixtureRequest) -> str:
    """CHAT_API for the end-to-end chat tests, which run through both APIs."""
    return str(request.param)

"""Applying and checking Alembic migrations from inside the running event loop."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every process of this bot.
_ADVISORY_LOCK_KEY = 0x4ACE_DA7A
_LOCK_POLL_SECONDS = 0.05


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_folder()))
    return config


def migrations_folder() -> Path:
    """An installed bot carries its revisions inside the package (bot/migrations, see
    pyproject.toml); a source checkout keeps them in migrations/ beside bot/."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "migrations"
    return installed if installed.is_dir() else package.parent / "migrations"


async def upgrade(engine: AsyncEngine) -> None:
    """Bring the database to the newest revision. Safe when several processes start at once."""
    async with _sqlite_file_lock(engine), migrating(engine) as connection:
        if connection.dialect.name == "postgresql":
            # Held until this transaction ends: the other processes wait, then find nothing to do.
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
        before = await connection.run_sync(_current_revision)
        await connection.run_sync(_upgrade)
        after = await connection.run_sync(_current_revision)
    if before != after:
        log.info("Database migrated from %s to %s", before or "nothing", after)


@contextlib.asynccontextmanager
async def migrating(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection, in a transaction, to change the schema through.

    Alembic changes a SQLite table by copying it and dropping the old one: with foreign keys
    on, that drop would first delete every row referring to it (turns cascade from
    conversations). So on SQLite they are off meanwhile (set outside the transaction, or it is
    ignored), and checked before the transaction commits."""
    async with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            await connection.commit()
        try:
            async with connection.begin():
                yield connection
                if sqlite:
                    broken = (await connection.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"migrating left rows that refer to none: {broken[:3]}")
        finally:
            if sqlite:
                await connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                await connection.commit()


@contextlib.asynccontextmanager
async def _sqlite_file_lock(engine: AsyncEngine) -> AsyncIterator[None]:
    """On SQLite, hold an exclusive lock on a file beside the database: processes migrating a
    new file at once would each find no tables and each create them. PostgreSQL has its
    advisory lock instead."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.lock", "a") as lock_file:  # noqa: ASYNC230 (creating it is instant)
        # Asked again until the other process is done, rather than waited for in a thread:
        # a thread blocked in flock could not be cancelled by a stop meanwhile.
        while True:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(_LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)


async def pending(engine: AsyncEngine) -> tuple[str | None, str | None]:
    """The database's revision and the newest one; equal when the database is current."""
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_revision)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    return current, head


def _upgrade(connection: Connection) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()

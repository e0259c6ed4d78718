"""The database engine: one per process, created at start and disposed at shutdown."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

_ASYNC_DRIVERS = {
    "sqlite:///": "sqlite+aiosqlite:///",
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
}


def async_url(url: str) -> str:
    """The usual URL forms, with the async driver picked for them."""
    for plain, driver in _ASYNC_DRIVERS.items():
        if url.startswith(plain):
            return driver + url.removeprefix(plain)
    if not url.startswith(tuple(_ASYNC_DRIVERS.values())):
        raise ValueError("use a sqlite:/// or postgresql:// URL")
    return url


def create_engine(url: str) -> AsyncEngine:
    """The engine; `hide_parameters` keeps what people wrote out of database errors and logs."""
    url = async_url(url)
    if url.startswith("sqlite"):
        _make_parent_folder(url)
        # One connection per task is fine for SQLite; the busy timeout covers writers that
        # briefly overlap (WAL lets readers go on meanwhile).
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(
        url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _make_parent_folder(url: str) -> None:
    path = url.split(":///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)

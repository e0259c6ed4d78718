"""The database engine: one per process, created at start and disposed at shutdown."""

from __future__ import annotations

import importlib
import shlex
import ssl
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.ext.asyncio import AsyncSession as AsyncSession

from bot import metrics

_ASYNC_DRIVERS = {
    "sqlite:///": "sqlite+aiosqlite:///",
    "postgresql://": "postgresql+asyncpg://",
    "postgres://": "postgresql+asyncpg://",
}
_SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# Keys of libpq's URLs that asyncpg.connect() does not take as they are: SQLAlchemy hands every
# query key to it as a keyword argument, so each is translated here, or dropped, or refused.
_LIBPQ_KEYS = (
    "sslmode",
    "sslrootcert",
    "options",
    "application_name",
    "connect_timeout",
    "channel_binding",  # asyncpg authenticates without it and has no such switch
)
# What asyncpg takes as it is.
_ASYNCPG_KEYS = frozenset({"target_session_attrs", "krbsrvname", "gsslib"})


class DatabaseUnavailable(Exception):
    """The database cannot be used as configured; `str()` is one sentence for the admin."""


def async_url(url: str) -> str:
    """The usual URL forms, with the async driver picked for them (and their options checked)."""
    for plain, driver in _ASYNC_DRIVERS.items():
        if url.startswith(plain):
            url = driver + url.removeprefix(plain)
            break
    if not url.startswith(tuple(_ASYNC_DRIVERS.values())):
        raise ValueError("use a sqlite:/// or postgresql:// URL")
    if url.startswith("postgresql"):
        _libpq_options(make_url(url).query)  # refuses what would fail at connect
    return url


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for PostgreSQL and in-memory databases."""
    parsed = make_url(async_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def create_engine(url: str, *, read_only: bool = False) -> AsyncEngine:
    """An engine for `url`. `read_only` opens an existing SQLite file without creating or
    changing anything (PostgreSQL is only read by what uses such an engine).
    `hide_parameters` keeps what people wrote out of database errors and logs."""
    url = async_url(url)
    path = sqlite_path(url)
    if path is not None and read_only:
        # SQLite's own read-only mode: a missing file is an error, never a new database. A
        # WAL database closed cleanly has no -wal file, and a read-only connection would leave
        # new -wal and -shm files behind; its main file holds everything, so read it as is.
        wal = path.with_name(path.name + "-wal")
        options = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
        uri = f"sqlite+aiosqlite:///{path.resolve().as_uri()}?{options}&uri=true"
        return create_async_engine(uri, connect_args={"timeout": 30})
    if url.startswith("sqlite"):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per task is fine for SQLite; the busy timeout covers writers that
        # briefly overlap (WAL lets readers go on meanwhile).
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    try:
        importlib.import_module("asyncpg")
    except ImportError:
        raise DatabaseUnavailable(
            "A PostgreSQL DATABASE_URL needs the asyncpg driver: install it with "
            "pip install '.[postgres]'."
        ) from None
    parsed = make_url(url)
    connect_args = _asyncpg_arguments(parsed.query)
    parsed = parsed.difference_update_query(_LIBPQ_KEYS)
    return create_async_engine(
        parsed,
        connect_args=connect_args,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=10,
        hide_parameters=True,
    )


_STARTED = "bot_statement_started"


def time_statements(engine: AsyncEngine) -> None:
    """Time every statement `engine` runs (bot_database_call_seconds). A connection runs one
    statement at a time, so one start per connection is enough; a failed statement's start
    is overwritten by the next."""

    def before(conn: Connection, *args: Any) -> None:
        conn.info[_STARTED] = time.perf_counter()

    def after(conn: Connection, *args: Any) -> None:
        started = conn.info.pop(_STARTED, None)
        if started is not None:
            metrics.DATABASE_CALLS.observe(time.perf_counter() - started)

    event.listen(engine.sync_engine, "before_cursor_execute", before)
    event.listen(engine.sync_engine, "after_cursor_execute", after)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _libpq_options(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, str]:
    """The libpq keys of a provider's URL, checked; other keys asyncpg would not take are
    refused here, at the settings, rather than with a traceback at connect."""
    values: dict[str, str] = {}
    for key, value in query.items():
        if key not in _LIBPQ_KEYS and key not in _ASYNCPG_KEYS:
            raise ValueError(f"the URL option {key} is not supported: remove it")
        if isinstance(value, tuple):
            raise ValueError(f"give {key} once")
        values[key] = value
    mode = values.get("sslmode")
    if mode is not None and mode not in _SSL_MODES:
        raise ValueError(f"sslmode must be one of {', '.join(_SSL_MODES)}")
    if "options" in values:
        _server_settings(values["options"])
    timeout = values.get("connect_timeout")
    if timeout is not None and not timeout.isdigit():
        raise ValueError("connect_timeout must be a whole number of seconds")
    return values


def _server_settings(options: str) -> dict[str, str]:
    """libpq's `options=-c name=value -c other=value` (or `--name=value`) as a dict."""
    words = shlex.split(options)
    settings: dict[str, str] = {}
    while words:
        word = words.pop(0)
        if word == "-c" and words:
            pair = words.pop(0)
        elif word.startswith("-c"):
            pair = word[2:]
        elif word.startswith("--"):
            pair = word[2:].replace("-", "_")
        else:
            raise ValueError("options must be -c name=value, once for each setting")
        name, equals, value = pair.partition("=")
        if not name or not equals:
            raise ValueError("options must be -c name=value, once for each setting")
        settings[name] = value
    return settings


def _asyncpg_arguments(query: Mapping[str, str | tuple[str, ...]]) -> dict[str, Any]:
    """What asyncpg.connect() takes for libpq's `sslmode`, `sslrootcert`, `options`,
    `application_name` and `connect_timeout`."""
    values = _libpq_options(query)
    mode, rootcert = values.get("sslmode"), values.get("sslrootcert")
    settings = _server_settings(values.get("options", ""))
    if "application_name" in values:
        settings["application_name"] = values["application_name"]
    arguments: dict[str, Any] = {}
    if settings:
        arguments["server_settings"] = settings
    if values.get("connect_timeout", "0") != "0":  # libpq's 0: wait forever, asyncpg's default
        arguments["timeout"] = float(values["connect_timeout"])
    if rootcert is not None and mode in ("require", "verify-ca", "verify-full"):
        # As in libpq: with a root certificate, `require` checks the chain like `verify-ca`;
        # only `verify-full` also checks the host name.
        context = ssl.create_default_context(cafile=rootcert)
        context.check_hostname = mode == "verify-full"
        arguments["ssl"] = context
    elif mode is not None:
        arguments["ssl"] = mode  # asyncpg takes libpq's mode names
    return arguments

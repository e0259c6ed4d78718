"""The one place a database failure becomes a sentence an admin can act on.

`python -m bot`, `migrate` and `check` all report through `describe`. Passwords never appear:
the sentences are built from the URL's host, port, user and database, and from the server's or
SQLite's own messages, which do not carry them.
"""

from __future__ import annotations

import os
import socket
import ssl
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from bot.db.engine import DatabaseUnavailable, sqlite_path

# What opening or migrating a database may raise (OSError covers refused connections,
# unknown hosts, timeouts and folders that cannot be made).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    DatabaseUnavailable,
)


def describe(exc: BaseException, url: str) -> str:
    """One sentence naming why the database at `url` cannot be used."""
    if isinstance(exc, DatabaseUnavailable):
        return str(exc)
    cause = _innermost(exc)
    path = sqlite_path(url)
    if path is not None:
        return _sqlite(cause, path)
    return _postgres(cause, make_url(url))


def _innermost(exc: BaseException) -> BaseException:
    """The driver's own exception inside SQLAlchemy's wrappers."""
    for _ in range(5):
        inner = getattr(exc, "orig", None) or exc.__cause__
        if inner is None:
            break
        exc = inner
    return exc


def _postgres(cause: BaseException, url: URL) -> str:
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    user, database = url.username or "(none given)", url.database or "(none given)"
    sqlstate = getattr(cause, "sqlstate", None)
    message = str(cause).strip().rstrip(".")
    if sqlstate == "28P01":
        return f"Password authentication failed for user {user} at {where}: check DATABASE_URL."
    if sqlstate == "3D000":
        return f"The database {database} does not exist at {where}: create it or fix DATABASE_URL."
    if isinstance(sqlstate, str) and sqlstate.startswith("28"):
        return f"The PostgreSQL server at {where} refused user {user}: {message}."
    if sqlstate == "42501":
        return f"User {user} lacks a permission in the database {database}: {message}."
    if isinstance(sqlstate, str):
        return (
            f"The PostgreSQL server at {where} reported an error (SQLSTATE {sqlstate}): {message}."
        )
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"The TLS certificate of {where} was not accepted: {cause.verify_message}."
    if isinstance(cause, ssl.SSLError):
        return f"The TLS connection to {where} failed: {cause.reason or message}."
    if isinstance(cause, ConnectionError) and "rejected SSL upgrade" in message:
        return f"The PostgreSQL server at {where} does not offer TLS, which sslmode asks for."
    if isinstance(cause, socket.gaierror):
        return f"Cannot find the database host {url.host}: check DATABASE_URL."
    if isinstance(cause, TimeoutError):
        return f"Cannot reach the database server at {where}: it did not answer in time."
    if isinstance(cause, ConnectionRefusedError):
        return f"Cannot reach the database server at {where}: the connection was refused."
    if isinstance(cause, OSError):
        reason = os.strerror(cause.errno) if cause.errno else message or "no connection"
        return f"Cannot reach the database server at {where} ({reason})."
    return f"Cannot use the PostgreSQL database at {where}: {message or type(cause).__name__}."


def _sqlite(cause: BaseException, path: Path) -> str:
    path = path.absolute()
    uid = os.getuid()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if _read_only_file_system(existing):
        return (
            f"The file {path} is on a read-only file system: put DATABASE_URL somewhere writable."
        )
    if path.exists():
        owner = path.stat().st_uid
        if not os.access(path, os.W_OK):
            if owner == uid:
                return f"The file {path} is read-only: make it writable (chmod u+w)."
            return (
                f"No permission to write the file {path}: it belongs to uid {owner} and the bot "
                f"runs as uid {uid}."
            )
        if not os.access(path.parent, os.W_OK | os.X_OK):
            return (
                f"No permission to write in the folder {path.parent}, where SQLite keeps its "
                f"journal beside the file: the bot runs as uid {uid}, which needs it."
            )
    elif not os.access(existing, os.W_OK | os.X_OK):
        return (
            f"No permission to create the file {path}: the folder {existing} is not writable "
            f"for uid {uid}, which the bot runs as."
        )
    reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
    return f"SQLite cannot use the file {path}: {reason}."


def _read_only_file_system(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)

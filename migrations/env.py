"""Alembic environment.

The bot runs migrations from inside its event loop: `bot.db.migrate` opens an async connection
and hands its sync face to Alembic through `config.attributes["connection"]`. The `alembic`
command line has no connection to give, so this file opens one from the settings.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bot.db.models import Base, mapped_here

target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: Alembic copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=mapped_here,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_command_line() -> None:
    from bot.config import load_settings
    from bot.db.engine import create_engine
    from bot.db.migrate import migrating

    engine = create_engine(load_settings().database_url)
    try:
        async with migrating(engine) as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run `python -m bot migrate`.")

given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    asyncio.run(_run_from_command_line())

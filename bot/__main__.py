"""`python -m bot [run|migrate|check|health]`: start the bot, migrate the database, check the setup,
or tell a container engine whether the running bot is connected."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

import aiohttp
import discord
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from bot import health
from bot.ai import ApiClient, ApiError
from bot.app import Bot, StartupError
from bot.config import Settings, SettingsError, load_settings
from bot.db import migrate
from bot.db.engine import create_engine
from bot.logs import setup_logging

log = logging.getLogger("bot")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "migrate", "check", "health"],
        help="run the bot (default), apply database migrations, check the setup, or check that "
        "the running bot is connected",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"Cannot start: {exc}", file=sys.stderr)
        return 2
    secrets = (settings.discord_token, settings.acedatacloud_api_token)
    setup_logging(settings.log_level, secrets=[secret.get_secret_value() for secret in secrets])
    command = {"run": _run, "migrate": _migrate, "check": _check, "health": _health}[args.command]
    try:
        return asyncio.run(command(settings))
    except KeyboardInterrupt:
        return 0
    except discord.LoginFailure:
        _fail("Discord refused DISCORD_TOKEN: copy the bot token again from the Developer Portal.")
    except discord.PrivilegedIntentsRequired:
        _fail(
            "The message content intent is not enabled for this bot: turn it on in the Developer "
            "Portal (Bot, Privileged Gateway Intents), or set MESSAGE_CONTENT_INTENT=false."
        )
    except StartupError as exc:
        _fail(str(exc))
        log.debug("Start-up failure", exc_info=exc.__cause__)
    except (aiohttp.ClientError, TimeoutError) as exc:
        where = settings.discord_api_base_url or "discord.com"
        _fail(f"Cannot reach Discord at {where} ({exc.__class__.__name__}).")
    except (SQLAlchemyError, OSError) as exc:
        _fail(f"Cannot use the database at {_safe_url(settings)} ({exc.__class__.__name__}).")
        log.debug("Database failure", exc_info=exc)
    return 1


def _fail(sentence: str) -> None:
    print(f"Cannot start: {sentence}", file=sys.stderr)


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


async def _run(settings: Settings) -> int:
    bot = Bot(settings)
    loop = asyncio.get_running_loop()
    closing: set[asyncio.Task[None]] = set()  # kept, so the task is not collected mid-way
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, lambda: closing.add(asyncio.create_task(bot.close())))
    async with bot:
        await bot.start(settings.discord_token.get_secret_value())
    return 0


async def _migrate(settings: Settings) -> int:
    engine = create_engine(settings.database_url)
    try:
        await migrate.upgrade(engine)
        current, _head = await migrate.pending(engine)
    finally:
        await engine.dispose()
    print(f"The database at {_safe_url(settings)} is at revision {current}.")
    return 0


async def _check(settings: Settings) -> int:
    """Report on each part of the setup; exit non-zero if any part is not ready."""
    print("Settings: valid.")
    ready = True
    engine = create_engine(settings.database_url)
    try:
        current, head = await migrate.pending(engine)
        if current == head:
            print(f"Database: reachable and current (revision {current}).")
        else:
            ready = False
            print(f"Database: reachable but at {current}, not {head}: run `python -m bot migrate`.")
    except (SQLAlchemyError, OSError) as exc:
        ready = False
        print(f"Database: cannot connect to {_safe_url(settings)} ({exc.__class__.__name__}).")
    finally:
        await engine.dispose()

    async with aiohttp.ClientSession() as session:
        api = ApiClient(
            session,
            base_url=settings.acedatacloud_api_base_url,
            token=settings.acedatacloud_api_token.get_secret_value(),
            path_prefix=settings.api_path_prefix,
        )
        try:
            await api.check_token()
            print(f"API: {settings.acedatacloud_api_base_url} accepts the token.")
        except ApiError as exc:
            ready = False
            print(f"API: {exc.user_message} ({exc})")
    return 0 if ready else 1


async def _health(settings: Settings) -> int:
    """The container health check: costs no call to Discord or to the API."""
    return health.main()


if __name__ == "__main__":
    sys.exit(main())

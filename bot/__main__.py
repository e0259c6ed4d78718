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

from bot import health
from bot.ai import ApiError
from bot.app import Bot, StartupError, open_api, point_at_discord
from bot.config import Settings, SettingsError, load_settings
from bot.db import migrate
from bot.db.engine import create_engine, sqlite_path
from bot.db.failures import DATABASE_ERRORS, describe
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
    if args.command == "check":
        logging.disable()  # the report is the whole output: no log lines among it
    else:
        secrets = (settings.discord_token, settings.acedatacloud_api_token)
        setup_logging(
            settings.log_level,
            secrets=[s.get_secret_value() for s in secrets],
            as_json=settings.log_format == "json",
        )
    command = {"run": _run, "migrate": _migrate, "check": _check, "health": _health}[args.command]
    try:
        return asyncio.run(command(settings))
    except KeyboardInterrupt:
        return 0
    except discord.LoginFailure:
        _fail(_TOKEN_REFUSED)
    except discord.PrivilegedIntentsRequired:
        _fail(_INTENT_OFF)
    except StartupError as exc:
        _fail(str(exc))
        log.debug("Start-up failure", exc_info=exc.__cause__)
    except (aiohttp.ClientError, TimeoutError) as exc:
        _fail(f"Cannot reach Discord at {_discord_address(settings)} ({exc.__class__.__name__}).")
    except DATABASE_ERRORS as exc:
        _fail(describe(exc, settings.database_url))
        log.debug("Database failure", exc_info=exc)
    return 1


_TOKEN_REFUSED = (
    "Discord refused DISCORD_TOKEN: copy the bot token again from the Developer Portal."
)
_INTENT_OFF = (
    "The message content intent is not enabled for this bot: turn it on in the Developer "
    "Portal (Bot, Privileged Gateway Intents), or set MESSAGE_CONTENT_INTENT=false."
)


def _fail(sentence: str) -> None:
    print(f"Cannot start: {sentence}", file=sys.stderr)


def _safe_url(settings: Settings) -> str:
    return make_url(settings.database_url).render_as_string(hide_password=True)


async def _run(settings: Settings) -> int:
    bot = Bot(settings)
    hurry = asyncio.Event()
    stopping: list[asyncio.Task[None]] = []  # kept, so the task is not collected mid-way

    async with bot:
        running = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))

        def on_signal() -> None:
            if stopping:  # a second signal: stop waiting for the work still running
                hurry.set()
                return
            grace = settings.shutdown_grace_seconds
            stopping.append(asyncio.create_task(bot.shut_down(grace, hurry, running)))

        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal)
        await asyncio.wait({running})
        if not running.cancelled():
            running.result()  # raises what ended it: a refused token, a failed start
    if stopping:  # Discord is closed: let the rest close too
        await stopping[0]
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
    """Report on each part of the setup, one line each; exit non-zero if any is not ready."""
    print("Settings: valid.")
    results = [
        await _check_database(settings),
        await _check_discord(settings),
        await _check_api(settings),
    ]
    return 0 if all(results) else 1


async def _check_database(settings: Settings) -> bool:
    """Read the database's revision without creating or changing anything."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        print(
            f"Database: the file {path.absolute()} does not exist yet: "
            "run `python -m bot migrate` or start the bot to create it."
        )
        return False
    try:
        engine = create_engine(settings.database_url, read_only=True)
        try:
            current, head = await migrate.pending(engine)
        finally:
            await engine.dispose()
    except DATABASE_ERRORS as exc:
        print(f"Database: {describe(exc, settings.database_url)}")
        return False
    where = _safe_url(settings)
    if current is None:
        print(f"Database: {where} is reachable but not migrated yet: run `python -m bot migrate`.")
        return False
    if current != head:
        print(
            f"Database: {where} is at revision {current}, not the newest ({head}): "
            "run `python -m bot migrate`."
        )
        return False
    print(f"Database: {where} is reachable and current (revision {current}).")
    return True


async def _check_discord(settings: Settings) -> bool:
    """The token, through GET /users/@me; the intent, through the application's flags."""
    point_at_discord(settings)
    client = discord.Client(intents=discord.Intents.none())
    try:
        await client.login(settings.discord_token.get_secret_value())
        application = await client.application_info()
    except discord.LoginFailure:
        print(f"Discord: {_TOKEN_REFUSED}")
        return False
    except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as exc:
        print(f"Discord: cannot reach {_discord_address(settings)} ({_reason(exc)}).")
        return False
    finally:
        await client.close()
    print(f"Discord: the token is accepted (bot {client.user}, application {application.id}).")
    flags = application.flags
    enabled = flags.gateway_message_content or flags.gateway_message_content_limited
    if settings.message_content_intent and not enabled:
        print(f"Discord: {_INTENT_OFF}")
        return False
    if settings.message_content_intent:
        print("Discord: the message content intent is enabled, as MESSAGE_CONTENT_INTENT asks.")
    elif enabled:
        print(
            "Discord: MESSAGE_CONTENT_INTENT is false, so messages in /chat threads go "
            "unanswered although the Developer Portal allows the intent."
        )
    else:
        print("Discord: the message content intent is off, as MESSAGE_CONTENT_INTENT asks.")
    return True


async def _check_api(settings: Settings) -> bool:
    session, api = open_api(settings)
    async with session:
        try:
            await api.check_token()
        except ApiError as exc:
            print(f"API: {exc.user_message} ({exc})")
            return False
    print(f"API: {settings.acedatacloud_api_base_url} accepts the token.")
    return True


def _discord_address(settings: Settings) -> str:
    return settings.discord_api_base_url or "discord.com"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, discord.HTTPException):
        return f"HTTP {exc.status}"
    return str(exc) or exc.__class__.__name__


async def _health(settings: Settings) -> int:
    """The container health check: costs no call to Discord or to the API."""
    return health.main(settings.metrics_port, settings.metrics_host)


if __name__ == "__main__":
    sys.exit(main())

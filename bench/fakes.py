"""What the benchmarks share: the fakes as child processes, and the bot in the benchmark's own
process against them (so that its CPU time and memory are the process's)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.app import Bot
from bot.config import load_settings
from tests.fakes.api import DEFAULT_TOKEN

ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT = 15.0

Json = dict[str, Any]


@dataclass(frozen=True)
class Fakes:
    api_url: str
    discord: Json  # what `python -m tests.fakes.discord` printed: addresses, token and ids

    @property
    def control(self) -> str:
        return str(self.discord["control_base"])

    def channels(self, count: int) -> list[str]:
        return list(self.discord["channel_ids"][:count])

    def people(self, count: int) -> list[str]:
        """The ids of the first `count` human users."""
        users: dict[str, str] = self.discord["users"]
        return [uid for name, uid in users.items() if name.startswith("user")][:count]


@contextlib.asynccontextmanager
async def running_fakes(
    api_args: Sequence[str], discord_args: Sequence[str]
) -> AsyncIterator[Fakes]:
    """`python -m tests.fakes.api` and `python -m tests.fakes.discord` with these arguments,
    stopped on leaving."""
    processes: list[asyncio.subprocess.Process] = []
    try:
        api, api_url = await _spawn("tests.fakes.api", "--port", "0", *api_args)
        processes.append(api)
        discord, line = await _spawn("tests.fakes.discord", "--port", "0", *discord_args)
        processes.append(discord)
        yield Fakes(api_url, json.loads(line))
    finally:
        await asyncio.gather(*(_stop(process) for process in processes))


@contextlib.asynccontextmanager
async def running_bot(fakes: Fakes, database: Path, **settings: Any) -> AsyncIterator[Bot]:
    """The bot, connected to the fakes and ready, on a SQLite file; closed on leaving."""
    token = fakes.discord["token"]
    bot = Bot(
        load_settings(
            discord_token=token,
            acedatacloud_api_token=DEFAULT_TOKEN,
            acedatacloud_api_base_url=fakes.api_url,
            database_url=f"sqlite+aiosqlite:///{database}",
            discord_api_base_url=fakes.discord["api_base"],
            discord_gateway_url=fakes.discord["gateway_url"],
            _env_file=None,
            **settings,
        ),
        guild_ready_timeout=0.05,
    )
    task = asyncio.create_task(bot.start(token))
    ready = asyncio.ensure_future(bot.started.wait())
    try:
        await asyncio.wait({ready, task}, timeout=STARTUP_TIMEOUT, return_when="FIRST_COMPLETED")
        if task.done():
            task.result()  # raises what ended the start
        if not ready.done():
            raise RuntimeError("the bot did not become ready")
        yield bot
    finally:
        ready.cancel()
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 10)


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def post_json(session: aiohttp.ClientSession, url: str, body: Json) -> Json:
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        result: Json = await response.json()
        return result


async def _spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    """Start `python -m args...` from the project root and return it with its first stdout line."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    try:
        line = await asyncio.wait_for(process.stdout.readline(), STARTUP_TIMEOUT)
    except BaseException:
        await _stop(process)
        raise
    if not line:
        await _stop(process)
        raise RuntimeError(f"python -m {args[0]} exited before printing its address")
    return process, line.decode().strip()


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

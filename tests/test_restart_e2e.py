"""Restarting `python -m bot` as a service manager does, with SIGTERM, in the middle of three
streaming answers and an image job: new questions are refused without a paid call, what runs
finishes within SHUTDOWN_GRACE_SECONDS (or ends with its partial text and a notice), and the
process exits 0 in time. The bot runs as a process against the fakes in the test process."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import text

from bot.admission import RESTARTING
from bot.db.engine import create_engine
from tests.fakes.api import FakeApi, Hang, Reply
from tests.fakes.discord import FakeChannel, FakeDiscord, FakeUser, InteractionRecord, MessageRecord
from tests.harness import shown_to
from tests.test_main import environment, python_m_bot
from tests.test_monitoring_e2e import free_port

pytestmark = pytest.mark.timeout(120)

# An answer that streams for about four seconds: 40 pieces a tenth of a second apart.
ANSWER = " ".join(f"w{n:02d}" for n in range(40))
# What `python -m bot` may take past the grace period to exit.
CLOSING = 5.0


@dataclass
class World:
    channels: list[FakeChannel]
    people: list[FakeUser]


def build_world(discord: FakeDiscord) -> World:
    guild = discord.add_guild("Rolling", channels=["one", "two", "three", "four"])
    people = [discord.add_user(f"person{n}") for n in range(5)]
    for person in people:
        discord.add_member(guild, person)
    return World([discord.channels[id_] for id_ in guild.channel_ids], people)


@dataclass
class BotProcess:
    """`python -m bot`, with its log read line by line as it comes."""

    process: asyncio.subprocess.Process
    lines: list[str] = field(default_factory=list)
    _logged: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reading: asyncio.Task[None] | None = None

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        async for line in self.process.stderr:
            async with self._logged:
                self.lines.append(line.decode().rstrip())
                self._logged.notify_all()

    async def logged(self, part: str, within: float = 10) -> str:
        """The first log line containing `part`, once it is written."""

        def found() -> str | None:
            return next((line for line in self.lines if part in line), None)

        async with asyncio.timeout(within), self._logged:
            await self._logged.wait_for(lambda: found() is not None)
        line = found()
        assert line is not None
        return line

    async def exited(self, within: float) -> int:
        """The exit code, once the process has exited and its log is read."""
        code = await asyncio.wait_for(self.process.wait(), within)
        if self._reading is not None:
            await asyncio.wait_for(self._reading, 5)
        return code

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@contextlib.asynccontextmanager
async def bot_process(
    discord: FakeDiscord,
    api: FakeApi,
    database_url: str,
    folder: Path,
    *,
    grace: float,
    **settings: str,
) -> AsyncIterator[BotProcess]:
    """The bot as a process, connected and with its commands registered; killed if the test
    leaves it running."""
    env = environment(
        discord,
        api,
        folder / "unused.db",
        DATABASE_URL=database_url,
        SHUTDOWN_GRACE_SECONDS=str(grace),
        **settings,
    )
    bot = BotProcess(await python_m_bot(env=env, cwd=folder))
    bot._reading = asyncio.create_task(bot.read_log())
    try:
        await bot.logged("Connected as", within=30)
        await discord.wait_for(lambda: bool(discord.registered_commands()), timeout=10)
        yield bot
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()
        bot._reading.cancel()


async def stream_answers(
    discord: FakeDiscord, api: FakeApi, world: World, count: int
) -> list[MessageRecord]:
    """`count` people ask at once, each in their own channel; returns the bot's replies once
    each shows its first words."""
    askers = list(zip(world.channels[1:], world.people[1:], strict=False))[:count]
    api.script(*(Reply(text=ANSWER, chunk_size=4, chunk_interval=0.1) for _ in askers))
    questions = [
        await discord.post_message(channel, person, "Tell me", mentions=[discord.bot_user])
        for channel, person in askers
    ]

    def replies() -> list[MessageRecord] | None:
        found = [reply_to(discord, question) for question in questions]
        if all(m is not None and m.versions[-1].content.startswith("w00") for m in found):
            return [m for m in found if m is not None]
        return None

    answering = await discord.wait_for(replies, timeout=15)
    assert answering is not None
    return answering


def reply_to(discord: FakeDiscord, question: MessageRecord) -> MessageRecord | None:
    return next(
        (
            m
            for m in discord.messages_in(question.channel_id)
            if (m.reference or {}).get("message_id") == str(question.id)
        ),
        None,
    )


async def start_image_job(
    discord: FakeDiscord, api: FakeApi, world: World, seconds: float
) -> InteractionRecord:
    """/image, whose request the API answers after `seconds`; returns once it is asked."""
    api.script(Hang(seconds))
    interaction = await discord.invoke_command(
        "image", {"prompt": "a lighthouse"}, channel=world.channels[0], user=world.people[0]
    )
    await discord.wait_for(lambda: bool(api.requests_to("/images/generations")), timeout=10)
    return interaction


async def stored_turns(database_url: str) -> list[tuple[str, str, str]]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT role, content, status FROM turns ORDER BY id")
            )
            return [(row.role, row.content, str(row.status)) for row in rows]
    finally:
        await engine.dispose()


async def healthz(port: int) -> tuple[int, str]:
    """/healthz's status, and its reason (or "ok")."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/healthz") as response,
    ):
        body = await response.json()
        return response.status, body.get("reason", body["status"])


def has_stop(message: MessageRecord) -> bool:
    return "answer:stop:" in str(message.versions[-1].components)


async def terminate(bot: BotProcess) -> Callable[[], float]:
    """SIGTERM, once the bot has said it is shutting down; returns the time since."""
    bot.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    await bot.logged("Shutting down:")
    return lambda: time.monotonic() - sent


async def test_a_rolling_restart_finishes_what_runs_and_refuses_what_is_new(
    database_url: str, tmp_path: Path
) -> None:
    grace = 10.0
    port = free_port()
    async with FakeApi.running() as api, FakeDiscord() as discord:
        world = build_world(discord)
        async with bot_process(
            discord, api, database_url, tmp_path, grace=grace, METRICS_PORT=str(port)
        ) as bot:
            image = await start_image_job(discord, api, world, seconds=4)
            answers = await stream_answers(discord, api, world, 3)
            assert await healthz(port) == (200, "ok")

            since_signal = await terminate(bot)
            assert (
                "Shutting down: waiting up to 10 s for 3 answers and 1 image jobs"
                in await bot.logged("Shutting down:")
            )
            # Unhealthy from the signal on, while what runs finishes.
            assert await healthz(port) == (503, "The bot is shutting down.")
            # A new question, by mention or by command, is told at once, and costs nothing.
            paid = len(api.requests)
            question = await discord.post_message(
                world.channels[0], world.people[4], "Hello", mentions=[discord.bot_user]
            )
            refusal = await discord.wait_for(lambda: reply_to(discord, question), timeout=5)
            assert refusal is not None
            await discord.wait_for(lambda: refusal.versions[-1].content == f"⚠️ {RESTARTING}")
            command = await discord.invoke_command(
                "ask", {"prompt": "Hello"}, channel=world.channels[0], user=world.people[4]
            )
            await discord.wait_for(lambda: shown_to(command) == f"⚠️ {RESTARTING}", timeout=5)

            assert await bot.exited(within=grace + CLOSING + 5) == 0, bot.log
            assert since_signal() < grace + CLOSING
            # Only the embeddings of the finished answers were asked for meanwhile.
            assert {r.path for r in api.requests[paid:]} <= {"/openai/embeddings"}
            assert "0 answers and 0 image jobs were cut short" in await bot.logged("Shut down in")

        # Every answer and the images were delivered whole.
        for answer in answers:
            assert answer.versions[-1].content == ANSWER
            assert not has_stop(answer)
        assert image.original is not None
        assert image.original.versions[-1].attachments
        finished = await stored_turns(database_url)
        assert [status for _, _, status in finished] == ["complete"] * 8
        assert [content for role, content, _ in finished if role == "assistant"].count(ANSWER) == 3

        # The next process on the same database finds nothing left unfinished.
        async with bot_process(discord, api, database_url, tmp_path, grace=grace) as again:
            await terminate(again)
            assert await again.exited(within=grace + CLOSING) == 0, again.log
        assert await stored_turns(database_url) == finished
        assert "unfinished" not in again.log
        for answer in answers:
            assert answer.versions[-1].content == ANSWER


async def test_what_runs_past_a_short_grace_ends_with_its_text_and_a_notice(
    database_url: str, tmp_path: Path
) -> None:
    grace = 1.0
    async with FakeApi.running() as api, FakeDiscord() as discord:
        world = build_world(discord)
        async with bot_process(discord, api, database_url, tmp_path, grace=grace) as bot:
            image = await start_image_job(discord, api, world, seconds=60)
            answers = await stream_answers(discord, api, world, 2)
            since_signal = await terminate(bot)
            assert await bot.exited(within=grace + CLOSING + 5) == 0, bot.log
            assert since_signal() < grace + CLOSING
            assert "2 answers and 1 image jobs were cut short" in await bot.logged("Shut down in")
            assert "never retrieved" not in bot.log

        ending = f"\n\n-# {RESTARTING}"
        shown = []
        for answer in answers:
            content = answer.versions[-1].content
            assert content.endswith(ending) and not has_stop(answer)
            shown.append(content.removesuffix(ending))
            assert shown[-1].startswith("w00") and ANSWER.startswith(shown[-1])
            assert shown[-1] != ANSWER
        assert image.original is not None
        assert image.original.versions[-1].content == f"⚠️ {RESTARTING}"
        stored = [
            (content, status)
            for role, content, status in await stored_turns(database_url)
            if role == "assistant"
        ]
        assert sorted(stored) == sorted((text, "interrupted") for text in shown)


async def test_a_second_signal_cuts_the_wait_short(database_url: str, tmp_path: Path) -> None:
    grace = 60.0
    async with FakeApi.running() as api, FakeDiscord() as discord:
        world = build_world(discord)
        async with bot_process(discord, api, database_url, tmp_path, grace=grace) as bot:
            (answer,) = await stream_answers(discord, api, world, 1)
            since_signal = await terminate(bot)
            bot.process.send_signal(signal.SIGINT)
            assert await bot.exited(within=CLOSING + 5) == 0, bot.log
            assert since_signal() < CLOSING
        assert answer.versions[-1].content.endswith(f"\n\n-# {RESTARTING}")


async def started_bot(discord: FakeDiscord, api: FakeApi, folder: Path, **extra: str) -> BotProcess:
    """`python -m bot` as it starts, not waited for."""
    env = environment(discord, api, folder / "bot.db", SHUTDOWN_GRACE_SECONDS="5", **extra)
    bot = BotProcess(await python_m_bot(env=env, cwd=folder))
    bot._reading = asyncio.create_task(bot.read_log())
    return bot


def closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        port: int = listener.getsockname()[1]
    return port


async def test_a_signal_while_the_gateway_cannot_be_reached_ends_the_process(
    tmp_path: Path,
) -> None:
    async with FakeApi.running() as api, FakeDiscord() as discord:
        bot = await started_bot(
            discord,
            api,
            tmp_path,
            SHARD_COUNT="1",  # so that the gateway is the one set, not the one Discord names
            DISCORD_GATEWAY_URL=f"ws://127.0.0.1:{closed_port()}",
        )
        try:
            await bot.logged("Failed to connect", within=30)
            bot.process.send_signal(signal.SIGTERM)
            assert await bot.exited(within=CLOSING) == 0, bot.log
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()


async def test_a_signal_during_start_up_lets_it_finish_then_exits_0(tmp_path: Path) -> None:
    async with FakeApi.running() as api, FakeDiscord() as discord:
        discord.config.latency = 0.3  # logging in and registering commands take a while
        bot = await started_bot(discord, api, tmp_path)
        try:
            await bot.logged("logging in", within=30)
            bot.process.send_signal(signal.SIGTERM)
            assert await bot.exited(within=5 + CLOSING) == 0, bot.log
            assert "Cannot start" not in bot.log
            assert "Traceback" not in bot.log
        finally:
            if bot.process.returncode is None:
                bot.process.kill()
                await bot.process.wait()

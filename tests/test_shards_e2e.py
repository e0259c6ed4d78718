"""Two bot processes, each running one of two shards, on one PostgreSQL and one Discord.

Discord sends a server's events only to the shard `(guild_id >> 22) % 2`, so the fake serves
one server on each shard, and each process talks to an API of its own: which API was asked
tells which process answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.conversation.runs import INTERRUPTED
from bot.conversation.tokens import estimate_tokens
from bot.db.engine import create_engine
from bot.db.models import Conversation, Turn, TurnStatus
from tests.conftest import POSTGRES_URL, empty_postgres
from tests.fakes.api import FakeApi, Reply
from tests.fakes.discord import (
    FakeChannel,
    FakeDiscord,
    FakeDiscordConfig,
    FakeGuild,
    FakeUser,
    InteractionRecord,
    MessageRecord,
    Perm,
)
from tests.harness import shown_to
from tests.test_main import environment, python_m_bot

pytestmark = pytest.mark.postgres

USAGE = {"prompt_tokens": 100, "completion_tokens": 100, "total_tokens": 200}
PIRATE = "Speak like a pirate."


@pytest.fixture
async def postgres_url() -> str:
    if POSTGRES_URL is None:
        pytest.skip("needs TEST_POSTGRES_URL")
    await empty_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
async def database(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    """The test's own connection to the database the processes share."""
    engine = create_engine(postgres_url)
    yield engine
    await engine.dispose()


@dataclass
class World:
    discord: FakeDiscord
    zero: FakeGuild  # on shard 0
    one: FakeGuild  # on shard 1
    alice: FakeUser
    bob: FakeUser
    admin: FakeUser

    def channel(self, guild: FakeGuild, index: int = 0) -> FakeChannel:
        return self.discord.channels[guild.channel_ids[index]]


@contextlib.asynccontextmanager
async def sharded_world() -> AsyncIterator[World]:
    async with FakeDiscord(FakeDiscordConfig(shards=2)) as discord:
        zero = discord.add_guild("zero", channels=["general", "crash"], shard=0)
        one = discord.add_guild("one", channels=["general", "crash"], shard=1)
        alice, bob, admin = (discord.add_user(name) for name in ("alice", "bob", "admin"))
        for guild in (zero, one):
            discord.add_member(guild, alice)
            discord.add_member(guild, bob)
            discord.add_member(guild, admin, permissions=Perm.MANAGE_GUILD)
        yield World(discord, zero, one, alice, bob, admin)


def shard_connected(discord: FakeDiscord, shard_id: int, old_sessions: set[str]) -> bool:
    """A new session of the shard is connected (a killed process's may still look open)."""
    return any(
        c.open
        and c.session is not None
        and c.session.id not in old_sessions
        and c.session.shard == (shard_id, 2)
        for c in discord.connections
    )


class BotProcess:
    """`python -m bot` running `shard_ids` of two shards, asking `api`."""

    def __init__(self, world: World, api: FakeApi, database_url: str, folder: Path) -> None:
        self._world, self._api, self._database_url, self._folder = world, api, database_url, folder
        self._process: asyncio.subprocess.Process | None = None

    async def start(self, shard_ids: str) -> None:
        discord = self._world.discord
        old_sessions = set(discord.sessions)
        env = environment(
            discord,
            self._api,
            self._folder / "unused.db",
            DATABASE_URL=self._database_url,
            SHARD_COUNT="2",
            SHARD_IDS=shard_ids,
            MAX_ANSWER_TOKENS="100",
        )
        self._process = await python_m_bot(env=env, cwd=self._folder)
        shards = [int(n) for n in shard_ids.split(",")]
        # discord.py waits 5 s before identifying each shard after the first.
        await discord.wait_for(
            lambda: all(shard_connected(discord, n, old_sessions) for n in shards), 40
        )

    async def stop(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(self._process.communicate(), 30)
        assert self._process.returncode == 0, stderr.decode()
        self._process = None

    async def kill(self) -> None:
        assert self._process is not None
        self._process.kill()
        await asyncio.wait_for(self._process.communicate(), 30)
        self._process = None

    async def close(self) -> None:
        """Whatever a failed test left running."""
        if self._process is not None:
            await self.kill()


@contextlib.asynccontextmanager
async def processes(
    world: World, database_url: str, folder: Path, count: int
) -> AsyncIterator[list[tuple[BotProcess, FakeApi]]]:
    """`count` bot processes (not started), each with an API of its own."""
    async with contextlib.AsyncExitStack() as stack:
        made = []
        for n in range(count):
            api = await stack.enter_async_context(
                FakeApi.running(default=Reply(text=f"Answer from process {n}.", usage=USAGE))
            )
            process = BotProcess(world, api, database_url, folder)
            stack.push_async_callback(process.close)
            made.append((process, api))
        yield made


def chat_requests(api: FakeApi) -> list[str]:
    """The newest message of each chat request the API was sent."""
    return [json.dumps(r.json["messages"][-1]) for r in api.requests_to("/chat/completions")]


def system_prompt(api: FakeApi) -> str:
    return str(api.requests_to("/chat/completions")[-1].json["messages"][0]["content"])


def reply_to(discord: FakeDiscord, question: MessageRecord) -> MessageRecord | None:
    return next(
        (
            m
            for m in discord.messages_in(question.channel_id)
            if (m.reference or {}).get("message_id") == str(question.id)
        ),
        None,
    )


async def mention(world: World, guild: FakeGuild, user: FakeUser, text: str) -> MessageRecord:
    """Mention the bot in the server's first channel; the finished reply."""
    discord = world.discord
    question = await discord.post_message(
        world.channel(guild), user, text, mentions=[discord.bot_user]
    )

    def finished() -> MessageRecord | None:
        reply = reply_to(discord, question)
        refused = reply is not None and reply.latest.content.startswith("⚠️")
        done = reply is not None and "regenerate" in str(reply.latest.components)
        return reply if refused or done else None

    answer = await discord.wait_for(finished, timeout=15)
    assert answer is not None
    assert discord.shards_told("MESSAGE_CREATE", question.id) == [((guild.id >> 22) % 2, 2)]
    return answer


async def command(
    world: World, guild: FakeGuild, user: FakeUser, name: str, options: dict[str, object]
) -> InteractionRecord:
    """Run a slash command in the server's first channel and wait until it is done."""
    discord = world.discord
    interaction = await discord.invoke_command(
        name, options, channel=world.channel(guild), user=user
    )

    def done() -> bool:
        original = interaction.original
        shown = shown_to(interaction) or ""
        return shown.startswith("✅") or (
            original is not None and "regenerate" in str(original.latest.components)
        )

    await discord.wait_for(done, timeout=15)
    assert discord.shards_told("INTERACTION_CREATE", interaction.id) == [((guild.id >> 22) % 2, 2)]
    return interaction


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Wait (at most 15 s) for a condition of the database, which announces no change."""
    async with asyncio.timeout(15):
        while not await check():  # noqa: ASYNC110 - nothing to wait on but the next look
            await asyncio.sleep(0.05)


async def last_answer(
    engine: AsyncEngine, channel: FakeChannel
) -> tuple[TurnStatus, list[int]] | None:
    """The status and message ids of the newest answer stored for the channel."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(Turn.status, Turn.message_ids)
                .join(Conversation)
                .where(Conversation.channel_id == channel.id, Turn.role == "assistant")
                .order_by(Turn.id.desc())
                .limit(1)
            )
        ).first()
    return None if row is None else (row.status, list(row.message_ids))


async def test_each_process_answers_and_recovers_only_its_shards_servers(
    postgres_url: str, database: AsyncEngine, tmp_path: Path
) -> None:
    async with (
        sharded_world() as world,
        processes(world, postgres_url, tmp_path, 2) as [(first, api0), (second, api1)],
    ):
        discord = world.discord
        await first.start("0")
        await second.start("1")

        # Mentions and slash commands: each server's are answered by its shard's process.
        await mention(world, world.zero, world.alice, "Hello from zero")
        await mention(world, world.one, world.alice, "Hello from one")
        await command(world, world.zero, world.bob, "ask", {"prompt": "Ask in zero"})
        await command(world, world.one, world.bob, "ask", {"prompt": "Ask in one"})
        for api, place in ((api0, "zero"), (api1, "one")):
            asked = chat_requests(api)
            assert len(asked) == 2 and all(place in question for question in asked), asked

        # Both processes die in the middle of an answer.
        crashes = {world.zero: world.channel(world.zero, 1), world.one: world.channel(world.one, 1)}
        slow = Reply(text="word " * 400, chunk_size=10, chunk_interval=0.1, usage=USAGE)
        questions = {}
        for api, (guild, channel) in zip((api0, api1), crashes.items(), strict=True):
            api.script(slow)
            questions[guild] = await discord.post_message(
                channel, world.alice, "Tell me a long story", mentions=[discord.bot_user]
            )

        async def both_stored_while_streaming() -> bool:
            for channel in crashes.values():
                stored = await last_answer(database, channel)
                if stored is None or stored[0] is not TurnStatus.IN_PROGRESS or not stored[1]:
                    return False
            return True

        await until(both_stored_while_streaming)
        await first.kill()
        await second.kill()
        shown_zero = reply_to(discord, questions[world.zero])
        shown_one = reply_to(discord, questions[world.one])
        assert shown_zero is not None and shown_one is not None
        versions_one = len(shown_one.versions)

        # Process 0 comes back: only its server's answer is marked interrupted.
        await first.start("0")
        await discord.wait_for(lambda: INTERRUPTED in shown_zero.latest.content, timeout=15)
        zero_stored = await last_answer(database, crashes[world.zero])
        one_stored = await last_answer(database, crashes[world.one])
        assert zero_stored is not None and one_stored is not None
        assert (zero_stored[0], one_stored[0]) == (TurnStatus.INTERRUPTED, TurnStatus.IN_PROGRESS)
        assert len(shown_one.versions) == versions_one

        # Then process 1 does its own.
        await second.start("1")
        await discord.wait_for(lambda: INTERRUPTED in shown_one.latest.content, timeout=15)
        assert await last_answer(database, crashes[world.one]) == (
            TurnStatus.INTERRUPTED,
            [shown_one.id],
        )
        await first.stop()
        await second.stop()


async def test_a_server_keeps_its_settings_and_budget_when_its_shard_moves(
    postgres_url: str, tmp_path: Path
) -> None:
    """With one Discord, a server's events reach only the process running its shard, so two
    processes never serve one server at once. What must hold across processes is that
    everything about a server lives in the database: when its shard moves to another
    process (here the deployment goes from two processes to one running both shards), the
    settings and the budget spent so far, written through the first, bind the second."""
    async with (
        sharded_world() as world,
        processes(world, postgres_url, tmp_path, 3) as [(first, _), (second, api1), (both, api)],
    ):
        await first.start("0")
        await second.start("1")
        # Alice may spend one question's worst case twice, less a token: one question, as
        # each costs more than that worst case (USAGE).
        worst = estimate_tokens(PIRATE) + estimate_tokens("alice: Hello") + 100
        assert USAGE["total_tokens"] > worst
        await command(
            world,
            world.one,
            world.admin,
            "config set",
            {"setting": "system_prompt", "value": PIRATE},
        )
        await command(
            world,
            world.one,
            world.admin,
            "budget set",
            {"scope": "person", "tokens": 2 * worst - 1, "user": world.alice},
        )
        await mention(world, world.one, world.alice, "Hello")
        assert system_prompt(api1) == PIRATE
        await first.stop()
        await second.stop()

        await both.start("0,1")
        await mention(world, world.one, world.bob, "Hello")
        assert system_prompt(api) == PIRATE
        refused = await mention(world, world.one, world.alice, "Hello")
        assert refused.latest.content.startswith("⚠️ You have"), refused.latest.content
        assert len(chat_requests(api)) == 1
        await both.stop()

"""Two bot processes on one database: a /config change made through one is used by the other
on its next request, and a budget holds across both. Each process talks to a Discord of its
own that serves the same server (same ids), so that the test decides which process sees which
event."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from bot.config import DEFAULT_SYSTEM_PROMPT
from bot.conversation.tokens import estimate_tokens
from tests.fakes.api import FakeApi, Reply
from tests.fakes.discord import (
    FakeChannel,
    FakeDiscord,
    FakeDiscordConfig,
    FakeUser,
    MessageRecord,
    Perm,
)
from tests.harness import shown_to
from tests.test_main import environment, python_m_bot

SEED = 4242
PEOPLE = 10


def build_world(discord: FakeDiscord) -> tuple[FakeChannel, FakeUser, FakeUser]:
    """The same server in every fake with the same seed: built in the same order."""
    guild = discord.add_guild("Shared", channels=[f"room{n}" for n in range(PEOPLE)])
    alice, admin = discord.add_user("alice"), discord.add_user("admin")
    discord.add_member(guild, alice)
    discord.add_member(guild, admin, permissions=Perm.MANAGE_GUILD)
    for n in range(PEOPLE):
        discord.add_member(guild, discord.add_user(f"person{n}"))
    return discord.channels[guild.channel_ids[0]], alice, admin


@contextlib.asynccontextmanager
async def bot_process(
    discord: FakeDiscord, api: FakeApi, database_url: str, folder: Path, **settings: str
) -> AsyncIterator[None]:
    env = environment(discord, api, folder / "unused.db", DATABASE_URL=database_url, **settings)
    process = await python_m_bot(env=env, cwd=folder)
    try:
        await discord.wait_for(lambda: discord.gateway_connected, timeout=30)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, stderr.decode()


async def ask(discord: FakeDiscord, api: FakeApi, channel: FakeChannel, user: FakeUser) -> str:
    """Mention the bot, wait for the whole answer, and return the system prompt it was sent."""
    api.script(Reply(text="Ahoy."))
    question = await discord.post_message(channel, user, "Hello", mentions=[discord.bot_user])

    def answered() -> MessageRecord | None:
        return next(
            (
                m
                for m in discord.messages_in(channel)
                if (m.reference or {}).get("message_id") == str(question.id)
                and "regenerate" in str(m.latest.components)
            ),
            None,
        )

    await discord.wait_for(answered, timeout=15)
    return str(api.requests_to("/chat/completions")[-1].json["messages"][0]["content"])


async def test_a_change_through_one_process_is_used_by_the_other(
    database_url: str, tmp_path: Path
) -> None:
    twins = FakeDiscordConfig(snowflake_seed=SEED)
    async with (
        FakeApi.running() as api,
        FakeDiscord(twins) as one,
        FakeDiscord(FakeDiscordConfig(snowflake_seed=SEED)) as two,
    ):
        general, alice, admin = build_world(one)
        assert build_world(two)[0].id == general.id
        async with (
            bot_process(one, api, database_url, tmp_path),
            bot_process(two, api, database_url, tmp_path),
        ):
            # The second process reads the server's settings, and keeps them.
            assert await ask(two, api, general, alice) == DEFAULT_SYSTEM_PROMPT

            assert one.registered_commands()  # synced by the first process to start
            change = await one.invoke_command(
                "config set",
                {"setting": "system_prompt", "value": "Speak like a pirate."},
                channel=general,
                user=admin,
            )
            await one.wait_for(lambda: (shown_to(change) or "").startswith("✅"), timeout=10)

            assert await ask(two, api, general, alice) == "Speak like a pirate."
            assert await ask(one, api, general, alice) == "Speak like a pirate."


async def test_a_budget_holds_across_two_processes(database_url: str, tmp_path: Path) -> None:
    """Ten questions at once, half through each process, against a server cap that fits the
    worst case of three: exactly three reach the API."""
    async with (
        FakeApi.running() as api,
        FakeDiscord(FakeDiscordConfig(snowflake_seed=SEED)) as one,
        FakeDiscord(FakeDiscordConfig(snowflake_seed=SEED)) as two,
    ):
        _, _, admin = build_world(one)
        build_world(two)
        worst = estimate_tokens(DEFAULT_SYSTEM_PROMPT) + estimate_tokens("person0: Hi") + 100
        async with (
            bot_process(one, api, database_url, tmp_path, MAX_ANSWER_TOKENS="100"),
            bot_process(two, api, database_url, tmp_path, MAX_ANSWER_TOKENS="100"),
        ):
            cap = await one.invoke_command(
                "budget set", {"scope": "server", "tokens": 3 * worst}, user=admin
            )
            await one.wait_for(lambda: (shown_to(cap) or "").startswith("✅"), timeout=10)
            for _ in range(PEOPLE):
                api.script(Reply(text="Hello.", first_byte_delay=1.0))
            questions = []
            for n in range(PEOPLE):
                discord = (one, two)[n % 2]
                guild = next(iter(discord.guilds.values()))
                channel = discord.channels[guild.channel_ids[n]]
                person = next(u for u in discord.users.values() if u.name == f"person{n}")
                questions.append((discord, channel, person))
            asked = await asyncio.gather(
                *(
                    discord.post_message(channel, person, "Hi", mentions=[discord.bot_user])
                    for discord, channel, person in questions
                )
            )

            def replies() -> list[str]:
                found = []
                for (discord, channel, _), question in zip(questions, asked, strict=True):
                    for message in discord.messages_in(channel):
                        if (message.reference or {}).get("message_id") == str(question.id):
                            found.append(message.latest.content)
                            break
                return found

            await one.wait_for(lambda: len(replies()) == PEOPLE, timeout=15)
            refused = [text for text in replies() if text.startswith("⚠️ This server has used")]
            assert len(refused) == PEOPLE - 3
            assert len(api.requests_to("/chat/completions")) == 3

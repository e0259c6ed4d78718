"""Two bot processes on one database: a /config change made through one is used by the other
on its next request. Each process talks to a Discord of its own that serves the same server
(same ids), so that the test decides which process sees which event."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from bot.config import DEFAULT_SYSTEM_PROMPT
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


def build_world(discord: FakeDiscord) -> tuple[FakeChannel, FakeUser, FakeUser]:
    """The same server in every fake with the same seed: built in the same order."""
    guild = discord.add_guild("Shared", channels=["general"])
    alice, admin = discord.add_user("alice"), discord.add_user("admin")
    discord.add_member(guild, alice)
    discord.add_member(guild, admin, permissions=Perm.MANAGE_GUILD)
    return discord.channels[guild.channel_ids[0]], alice, admin


@contextlib.asynccontextmanager
async def bot_process(
    discord: FakeDiscord, api: FakeApi, database_url: str, folder: Path
) -> AsyncIterator[None]:
    env = environment(discord, api, folder / "unused.db", DATABASE_URL=database_url)
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

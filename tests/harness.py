"""The real bot against the fakes of Discord and of the API, over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bot.app import Bot
from bot.config import Settings, load_settings
from cogs.sinks import DiscordLimits
from tests.fakes.api import FakeApi, RecordedRequest
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

STARTUP_TIMEOUT = 15.0
CHAT_PATHS = ("/chat/completions", "/responses")


@dataclass
class Harness:
    discord: FakeDiscord
    api: FakeApi
    database_url: str
    guild: FakeGuild
    general: FakeChannel
    random: FakeChannel
    alice: FakeUser
    bob: FakeUser
    moderator: FakeUser
    other_bot: FakeUser
    limits: DiscordLimits = field(default_factory=DiscordLimits)
    chat_api: str = "chat_completions"  # CHAT_API of every bot started (unless overridden)
    bot: Bot | None = None
    _task: asyncio.Task[None] | None = None

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "discord_token": self.discord.token,
            "acedatacloud_api_token": self.api.token,
            "acedatacloud_api_base_url": self.api.url,
            "database_url": self.database_url,
            "discord_api_base_url": self.discord.api_base,
            "discord_gateway_url": self.discord.gateway_url,
            "chat_api": self.chat_api,
            "_env_file": None,
        }
        values.update(overrides)
        return load_settings(**values)

    async def start_bot(
        self, *, clock: Callable[[], datetime] | None = None, **overrides: Any
    ) -> Bot:
        """Start the same Bot that `python -m bot` runs, and wait until it is ready. `clock`:
        the time budgets count by, for a test to move on."""
        assert self.bot is None, "stop the running bot first"
        bot = Bot(
            self.settings(**overrides),
            limits=self.limits,
            clock=clock,
            guild_ready_timeout=0.05,
        )
        self.bot = bot
        self._task = asyncio.create_task(bot.start(self.discord.token))
        ready = asyncio.ensure_future(bot.started.wait())
        await asyncio.wait(
            {ready, self._task}, timeout=STARTUP_TIMEOUT, return_when="FIRST_COMPLETED"
        )
        if self._task.done():
            self._task.result()  # raises what stopped the start
        assert ready.done(), "the bot did not become ready"
        return bot

    async def stop_bot(self) -> None:
        bot, task = self.bot, self._task
        self.bot, self._task = None, None
        if bot is None or task is None:
            return
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)

    def add_admin(self, name: str = "admin") -> FakeUser:
        """A member who may manage the server."""
        admin = self.discord.add_user(name)
        self.discord.add_member(self.guild, admin, permissions=Perm.MANAGE_GUILD)
        return admin

    async def mention(
        self,
        text: str,
        *,
        author: FakeUser | None = None,
        channel: FakeChannel | None = None,
        **kwargs: Any,
    ) -> MessageRecord:
        """A person mentions the bot in a channel."""
        return await self.discord.post_message(
            channel or self.general,
            author or self.alice,
            text,
            mentions=[self.discord.bot_user],
            **kwargs,
        )

    def bot_messages(self, channel: FakeChannel | None = None) -> list[MessageRecord]:
        return [
            message
            for message in self.discord.messages_in(channel or self.general)
            if message.author.id == self.discord.bot_user.id
        ]

    def chat_requests(self) -> list[RecordedRequest]:
        """The requests for chat answers, to chat completions or to the Responses API."""
        return [rec for rec in self.api.requests if rec.path.endswith(CHAT_PATHS)]

    def sent_messages(self, index: int = -1) -> list[dict[str, Any]]:
        """What chat request `index` sent, as chat messages whichever API it went to: the
        Responses API's `instructions` as the system message, its parts as chat parts."""
        return chat_messages(self.chat_requests()[index].json)

    def sent_history(self, index: int = -1) -> list[str]:
        """What the model was sent in chat request `index`, message by message."""
        return [str(message["content"]) for message in self.sent_messages(index)]

    async def told(self, interaction: InteractionRecord, *, within: float = 5) -> str:
        """What the person who acted was last told (see `shown_to`), once there is something."""
        await self.discord.wait_for(lambda: shown_to(interaction) is not None, timeout=within)
        text = shown_to(interaction)
        assert text is not None
        return text

    async def answer_to(self, question: MessageRecord, *, within: float = 10) -> MessageRecord:
        """Wait until the bot's reply to `question` is finished (no Stop button), and return it.

        That is the answer's first message: one that continues in more messages loses its Stop
        button there as soon as the next one starts, so wait for the last one instead."""

        def finished() -> MessageRecord | None:
            for message in self.discord.messages_in(question.channel_id):
                reference = message.reference or {}
                if reference.get("message_id") == str(question.id) and not _has_stop(message):
                    return message
            return None

        await self.discord.wait_for(lambda: finished() is not None, timeout=within)
        answer = finished()
        assert answer is not None
        return answer


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat request's messages, from chat completions' `messages` or from the Responses
    API's `instructions` and `input` (`input_text` read as `text`, `input_image` as
    `image_url`), so that a test asserts the same whichever API answered."""
    if "messages" in body:
        return list(body["messages"])
    items = body["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    messages = (
        [{"role": "system", "content": body["instructions"]}] if "instructions" in body else []
    )
    for item in items:
        content = item["content"]
        if isinstance(content, list):
            content = [_chat_part(part) for part in content]
        messages.append({"role": item["role"], "content": content})
    return messages


def _chat_part(part: dict[str, Any]) -> dict[str, Any]:
    if part["type"] == "input_text":
        return {"type": "text", "text": part["text"]}
    if part["type"] == "input_image":
        return {"type": "image_url", "image_url": {"url": part["image_url"]}}
    return part


def shown_to(interaction: InteractionRecord) -> str | None:
    """What the person who acted was last shown: the interaction's response, or a followup (a
    refusal after a public "thinking" message comes as a private followup once that message
    is removed). A button's message itself does not count."""
    shown = [
        message.versions[-1].content
        for message in (interaction.original, *interaction.followups)
        if message is not None
        and message.id != interaction.message_id
        and not message.deleted
        and message.versions[-1].content
    ]
    return shown[-1] if shown else None


def _has_stop(message: MessageRecord) -> bool:
    return "answer:stop:" in str(message.versions[-1].components)


def custom_ids(message: MessageRecord) -> list[str]:
    """The custom ids of the buttons the message shows now."""
    ids: list[str] = []
    for row in message.versions[-1].components:
        for component in row.get("components", []):
            if "custom_id" in component:
                ids.append(component["custom_id"])
    return ids


@contextlib.asynccontextmanager
async def running_harness(
    database_url: str,
    *,
    config: FakeDiscordConfig | None = None,
    limits: DiscordLimits | None = None,
    chat_api: str = "chat_completions",
) -> AsyncIterator[Harness]:
    async with FakeApi.running() as api, FakeDiscord(config) as fake:
        guild = fake.add_guild("Test Guild", channels=["general", "random"])
        general, random_channel = (fake.channels[i] for i in guild.channel_ids[:2])
        users = [fake.add_user(name) for name in ("alice", "bob", "moderator")]
        fake.add_member(guild, users[0])
        fake.add_member(guild, users[1])
        fake.add_member(guild, users[2], permissions=Perm.MANAGE_MESSAGES)
        other_bot = fake.add_user("otherbot", bot=True)
        fake.add_member(guild, other_bot)
        alice, bob, moderator = users
        harness = Harness(
            discord=fake,
            api=api,
            database_url=database_url,
            guild=guild,
            general=general,
            random=random_channel,
            alice=alice,
            bob=bob,
            moderator=moderator,
            other_bot=other_bot,
            limits=limits or DiscordLimits(),
            chat_api=chat_api,
        )
        try:
            yield harness
        finally:
            await harness.stop_bot()


def sqlite_url(folder: Path) -> str:
    return f"sqlite+aiosqlite:///{folder / 'bot.db'}"

"""The bot: owns every resource, builds the services, hands them to the cogs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.ai import ApiClient, ApiError, Timeouts
from bot.config import Settings
from bot.conversation.pacing import WriteScheduler
from bot.conversation.service import ChatOptions, ChatService
from bot.db import migrate
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.repository import ConversationStore, StateStore, UsageStore
from bot.errors import UserError
from bot.images.files import ImageProblem
from bot.images.service import ImageOptions, ImageService
from cogs.chat import ChatCog
from cogs.images import ImagesCog
from cogs.sinks import NO_MENTIONS, DiscordBudget, DiscordLimits

log = logging.getLogger(__name__)

_COMMANDS_HASH_KEY = "app_commands_hash"
# aiohttp refuses lines longer than its buffer; streamed replies can carry long ones.
_READ_BUFSIZE = 2**20


class ErrorReportingTree(app_commands.CommandTree["Bot"]):
    """The one place an app command's failure becomes a sentence for the person."""

    async def on_error(
        self, interaction: discord.Interaction[Bot], error: app_commands.AppCommandError
    ) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, UserError | ImageProblem):
            sentence = str(cause)
        elif isinstance(cause, ApiError):
            log.warning("Command /%s failed: %s", _command_name(interaction), cause)
            sentence = cause.user_message
        elif isinstance(cause, app_commands.CheckFailure):
            sentence = "You can't use this command here."
        else:
            log.error("Command /%s failed", _command_name(interaction), exc_info=cause)
            sentence = "Something went wrong; the bot's admin can find the details in its log."
        await _tell(interaction, f"⚠️ {sentence}")


async def _tell(interaction: discord.Interaction[Any], text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.edit_original_response(content=text, view=None)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException as exc:
        log.warning("Could not report an error to the user: %s", exc)


def _command_name(interaction: discord.Interaction[Any]) -> str:
    return interaction.command.qualified_name if interaction.command else "?"


class Bot(commands.AutoShardedBot):
    def __init__(
        self, settings: Settings, *, limits: DiscordLimits | None = None, **options: Any
    ) -> None:
        _point_at_discord(settings)
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=ErrorReportingTree,
            allowed_mentions=NO_MENTIONS,
            **_sharding(settings),
            **options,
        )
        self.settings = settings
        self.limits = limits or DiscordLimits()
        self.started = asyncio.Event()
        self.chat: ChatService | None = None
        # What setup_hook opened, closed in reverse order by close().
        self._closing: list[Callable[[], Awaitable[Any]]] = []

    async def setup_hook(self) -> None:
        settings = self.settings
        engine = create_engine(settings.database_url)
        self._closing.append(engine.dispose)
        await migrate.upgrade(engine)
        sessions = create_sessionmaker(engine)

        session = aiohttp.ClientSession(read_bufsize=_READ_BUFSIZE)
        self._closing.append(session.close)
        api = ApiClient(
            session,
            base_url=settings.acedatacloud_api_base_url,
            token=settings.acedatacloud_api_token.get_secret_value(),
            path_prefix=settings.api_path_prefix,
            timeouts=Timeouts(
                chat=settings.chat_timeout,
                stream_idle=settings.stream_idle_timeout,
                images=settings.image_timeout,
            ),
        )

        scheduler = WriteScheduler()
        scheduler_task = asyncio.create_task(scheduler.run(), name="write-scheduler")
        self._closing.append(functools.partial(_cancel, scheduler_task))

        conversations = ConversationStore(sessions)
        usage = UsageStore(sessions)
        interrupted = await conversations.interrupt_unfinished()
        if interrupted:
            log.info(
                "Marked %d answers left unfinished by the last run as interrupted", len(interrupted)
            )
        self.chat = ChatService(
            api,
            conversations,
            usage,
            scheduler,
            ChatOptions(
                default_model=settings.chat_model,
                system_prompt=settings.system_prompt,
                temperature=settings.temperature,
                history_token_budget=settings.history_token_budget,
                max_answer_tokens=settings.max_answer_tokens,
                max_prompt_chars=settings.max_prompt_chars,
                max_concurrent_requests=settings.max_concurrent_requests,
            ),
        )
        await self.add_cog(
            ChatCog(
                self,
                self.chat,
                conversations,
                DiscordBudget(self.limits),
                models=settings.chat_models,
                allow_direct_messages=settings.allow_direct_messages,
            )
        )
        images = ImageService(
            api,
            conversations,
            usage,
            ImageOptions(
                default_model=settings.image_model,
                models=settings.image_models,
                max_image_bytes=settings.max_image_bytes,
            ),
        )
        await self.add_cog(ImagesCog(images, progress_interval=self.limits.progress_interval))
        await self._sync_commands(StateStore(sessions))

    async def _sync_commands(self, state: StateStore) -> None:
        """Register slash commands with Discord only when their definitions changed."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        scope = f"guild:{guild.id}" if guild else "global"
        digest = hashlib.sha256(json.dumps([scope, payload], sort_keys=True).encode()).hexdigest()
        if await state.get(_COMMANDS_HASH_KEY) == digest:
            return
        await self.tree.sync(guild=guild)
        await state.set(_COMMANDS_HASH_KEY, digest)
        log.info("Registered %d slash commands (%s)", len(payload), scope)

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: messages are the chat cog's alone."""

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("Connected as %s (id %s) to %d servers", self.user, self.user.id, len(self.guilds))
        if not self.intents.message_content:
            log.warning(
                "The message content intent is off: the bot answers slash commands and mentions, "
                "but not the follow-up messages in /chat threads."
            )
        self.started.set()

    async def close(self) -> None:
        # Answers in progress end with a notice while Discord is still reachable.
        if self.chat is not None:
            await self.chat.shutdown()
        await super().close()
        closing, self._closing = self._closing, []
        for step in reversed(closing):
            try:
                await step()
            except Exception:
                log.exception("Shutting down a resource failed")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _sharding(settings: Settings) -> dict[str, Any]:
    """discord.py picks the shard count itself unless told; shard ids need a count."""
    if settings.shard_count is None:
        return {}
    if settings.shard_ids is None:
        return {"shard_count": settings.shard_count}
    return {"shard_count": settings.shard_count, "shard_ids": settings.shard_ids}


def _point_at_discord(settings: Settings) -> None:
    """Send Discord traffic to a proxy or a test double instead of Discord itself."""
    if settings.discord_api_base_url:
        discord.http.Route.BASE = settings.discord_api_base_url
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)

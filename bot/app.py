"""The bot: owns every resource, builds the services, hands them to the cogs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import health, metrics
from bot.admission import HOLD_LIFETIME, Admission, Rules
from bot.ai import ApiClient, Timeouts
from bot.ai.routing import ChatRouter
from bot.budgets import Budgets
from bot.config import Settings
from bot.conversation.service import ChatOptions, ChatService
from bot.db import migrate
from bot.db.budget_store import Ledger
from bot.db.config_store import ConfigStore
from bot.db.engine import create_engine, create_sessionmaker, time_statements
from bot.db.failures import DATABASE_ERRORS, describe
from bot.db.repository import ConversationStore, StateStore
from bot.db.usage_store import UsageStore
from bot.db.vector_store import VectorStore
from bot.delivery.pacing import WriteScheduler, reply_received
from bot.delivery.reply import Replies
from bot.images.service import ImageOptions, ImageService
from bot.images.work import ImageWork
from bot.memory import Memory, MemoryOptions
from bot.retention import Retention
from bot.server_config import Catalog, PlaceSettings, ServerConfig
from cogs.budgets import BudgetsCog
from cogs.chat import ChatCog
from cogs.config import ConfigCog
from cogs.failures import tell_failure
from cogs.images import ImagesCog
from cogs.memory import MemoryCog
from cogs.sinks import NO_MENTIONS, DiscordBudget, DiscordLimits

log = logging.getLogger(__name__)

_COMMANDS_HASH_KEY = "app_commands_hash"
# How long the answers and image jobs cut at shutdown get to show their notice.
_CUT_WAIT = 3.0
# Streamed replies can carry long lines (a whole image in base64): read them in larger pieces.
_READ_BUFSIZE = 2**20


class StartupError(Exception):
    """The bot cannot start; `str()` is one sentence for the admin."""


class ErrorReportingTree(app_commands.CommandTree["Bot"]):
    """An app command's failure goes the one way every failure goes (cogs.failures)."""

    async def on_error(
        self, interaction: discord.Interaction[Bot], error: app_commands.AppCommandError
    ) -> None:
        await tell_failure(interaction, error, doing=f"/{_command_name(interaction)}")


def _command_name(interaction: discord.Interaction[Any]) -> str:
    return interaction.command.qualified_name if interaction.command else "?"


def _discord_trace() -> aiohttp.TraceConfig:
    """What the bot learns from each of Discord's replies: when it came, for the write
    scheduler, and whether it was a 429, for the metrics."""

    async def noted(*_: object) -> None:
        reply_received()

    trace = metrics.discord_trace()
    trace.on_request_end.append(noted)
    return trace


class Bot(commands.AutoShardedBot):
    def __init__(
        self,
        settings: Settings,
        *,
        limits: DiscordLimits | None = None,
        clock: Callable[[], datetime] | None = None,
        **options: Any,
    ) -> None:
        point_at_discord(settings)
        intents = discord.Intents.default()
        intents.message_content = settings.message_content_intent
        super().__init__(
            command_prefix=commands.when_mentioned,
            help_command=None,
            intents=intents,
            tree_cls=ErrorReportingTree,
            # Registered with every command, so that Discord offers them only where they work.
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=settings.allow_direct_messages
            ),
            allowed_installs=app_commands.AppInstallationType(guild=True),
            allowed_mentions=NO_MENTIONS,
            http_trace=_discord_trace(),
            **_sharding(settings),
            **options,
        )
        self.settings = settings
        self.limits = (limits or DiscordLimits()).share(shard_share(settings))
        self.clock = clock
        self.started = asyncio.Event()
        # Set once setup_hook has opened everything: closing before would pull the database
        # and the sessions from under it.
        self.set_up = asyncio.Event()
        self.admission: Admission | None = None
        self.chat: ChatService | None = None
        self.images: ImageService | None = None
        self.memory: Memory | None = None
        # What setup_hook opened, closed in reverse order by close().
        self._closing: list[Callable[[], Awaitable[Any]]] = []

    async def setup_hook(self) -> None:
        settings = self.settings
        try:
            engine = create_engine(settings.database_url)
            self._closing.append(engine.dispose)
            time_statements(engine)
            # Served from the start, so that a check says "not ready yet" rather than nothing.
            await self._start_monitor(engine)
            await migrate.upgrade(engine)
        except DATABASE_ERRORS as exc:
            raise StartupError(describe(exc, settings.database_url)) from exc
        sessions = create_sessionmaker(engine)

        session, api = open_api(settings)
        self._closing.append(session.close)

        scheduler = WriteScheduler()
        scheduler_task = asyncio.create_task(scheduler.run(), name="write-scheduler")
        scheduler_task.add_done_callback(_report_crash)
        self._closing.append(functools.partial(_cancel, scheduler_task))

        conversations = ConversationStore(sessions)
        usage = UsageStore(sessions)
        admission = self.admission = build_admission(settings, sessions, self.clock)
        memory = await self._start_memory(api, admission, sessions, conversations, usage)
        router = ChatRouter(
            api,
            use_responses=settings.chat_api == "responses",
            responses_models=settings.responses_models,
        )
        self.chat = ChatService(
            router,
            admission,
            conversations,
            usage,
            Replies(scheduler),
            ChatOptions(
                history_token_budget=settings.history_token_budget,
                max_concurrent_requests=settings.max_concurrent_requests,
                answer_timeout=settings.answer_timeout,
                max_answer_messages=settings.max_answer_messages,
            ),
            memory=memory,
        )
        interrupted = await self.chat.recover(self._owns)
        # One budget for image work bot-wide: a picture of the largest size allowed runs alone.
        image_work = ImageWork(
            max_bytes=settings.max_image_bytes,
            max_pixels=settings.max_image_pixels,
            budget_pixels=settings.max_image_pixels,
        )
        await self.add_cog(
            ChatCog(
                self,
                self.chat,
                DiscordBudget(self.limits),
                image_work,
                interrupted=interrupted,
            )
        )
        images = self.images = ImageService(
            api,
            admission,
            conversations,
            usage,
            ImageOptions(
                task_poll_every=(
                    settings.image_task_poll_seconds if settings.image_async_tasks else None
                ),
            ),
            image_work,
        )
        await self.add_cog(ImagesCog(images, self.limits))
        await self.add_cog(ConfigCog(self, admission.config))
        budgets = Budgets(admission.config, admission.ledger, usage, admission.now)
        await self.add_cog(BudgetsCog(budgets))
        await self.add_cog(MemoryCog(memory))
        await self._sync_commands(StateStore(sessions))
        self._start_heartbeat()
        self._start_retention(conversations)
        self.set_up.set()

    async def _start_memory(
        self,
        api: ApiClient,
        admission: Admission,
        sessions: async_sessionmaker[AsyncSession],
        conversations: ConversationStore,
        usage: UsageStore,
    ) -> Memory:
        """Long-term memory, with its one embedding worker for this process."""
        settings = self.settings
        vectors = VectorStore(
            sessions, model=settings.embedding_model, dimensions=settings.embedding_dimensions
        )
        await vectors.prepare()
        log.info("Memory is searched %s", "by pgvector" if vectors.pgvector else "in the bot")
        options = MemoryOptions(settings.embedding_model, settings.embedding_dimensions)
        memory = Memory(api, admission, vectors, conversations, usage, options, self._owns)
        self.memory = memory
        worker = asyncio.create_task(memory.run(), name="memory")
        worker.add_done_callback(_report_crash)
        self._closing.append(functools.partial(_cancel, worker))
        return memory

    async def _start_monitor(self, engine: AsyncEngine) -> None:
        """With METRICS_PORT, serve /healthz and /metrics (see bot.monitoring)."""
        host, port = self.settings.metrics_host, self.settings.metrics_port
        if port is None:
            return
        # Imported only here: aiohttp's server side adds about 25 ms to every start.
        from bot.monitoring import Monitor, ping_database

        monitor = Monitor(self, functools.partial(ping_database, engine))
        try:
            await monitor.start(host, port)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else type(exc).__name__
            raise StartupError(f"Cannot serve METRICS_PORT {port} on {host}: {reason}.") from exc
        self._closing.append(monitor.close)

    def _start_heartbeat(self) -> None:
        """Keep the heartbeat file of `python -m bot health` fresh while connected."""
        beating = asyncio.create_task(health.keep_beating(self.gateway_connected), name="heartbeat")
        beating.add_done_callback(_report_crash)
        self._closing.append(functools.partial(_cancel, beating))

    def _start_retention(self, conversations: ConversationStore) -> None:
        """With HISTORY_RETENTION_DAYS, this process deletes old turns once a day."""
        days = self.settings.history_retention_days
        if days is None:
            return
        retention = Retention(conversations, days, self.clock or (lambda: datetime.now(UTC)))
        task = asyncio.create_task(retention.run(), name="retention")
        task.add_done_callback(_report_crash)
        self._closing.append(functools.partial(_cancel, task))

    def gateway_connected(self) -> bool:
        """Ready, with every shard's gateway connection open."""
        shards = self.shards.values()
        return self.is_ready() and bool(shards) and not any(s.is_closed() for s in shards)

    def _owns(self, guild_id: int | None) -> bool:
        """Whether this process serves the server (None: direct messages, which Discord sends
        to shard 0). Without SHARD_IDS one process serves everything."""
        shard_ids, count = self.settings.shard_ids, self.settings.shard_count
        if shard_ids is None or count is None:
            return True
        return ((guild_id or 0) >> 22) % count in shard_ids

    async def _sync_commands(self, state: StateStore) -> None:
        """Register slash commands with Discord only when their definitions changed."""
        guild = discord.Object(self.settings.dev_guild_id) if self.settings.dev_guild_id else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands(guild=guild)]
        # A new application on the same database must register its commands too.
        scope = f"{self.application_id}:" + (f"guild:{guild.id}" if guild else "global")
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

    @property
    def shutting_down(self) -> bool:
        """From the signal on: unhealthy, so that nothing routes work here any more."""
        return self.is_closed() or (self.admission is not None and self.admission.restarting)

    async def shut_down(
        self, grace: float, hurry: asyncio.Event, running: asyncio.Task[None]
    ) -> None:
        """Refuse new questions at once, let the answers and image jobs running finish for
        up to `grace` seconds (until `hurry` is set, if sooner), then close. A start-up
        under way finishes first, within the same time. `running`: the task of `start`,
        ended before closing (discord.py retries for ever a gateway it cannot reach, and
        fails on the sessions closed under it)."""
        started = time.monotonic()
        hurried = asyncio.create_task(hurry.wait())
        setting_up = asyncio.create_task(self.set_up.wait())
        try:
            first = asyncio.FIRST_COMPLETED
            await asyncio.wait({setting_up, hurried}, timeout=grace, return_when=first)
            chat, images = self.chat, self.images
            if self.admission is not None:
                self.admission.restarting = True
            if chat is not None:
                chat.begin_shutdown()
            if images is not None:
                images.begin_shutdown()
            log.info(
                "Shutting down: waiting up to %g s for %d answers and %d image jobs",
                grace,
                chat.answers_running if chat else 0,
                images.jobs_running if images else 0,
            )
            work = asyncio.create_task(_work_ended(chat, images))
            left = max(grace - (time.monotonic() - started), 0)
            await asyncio.wait({work, hurried}, timeout=left, return_when=first)
            work.cancel()
        finally:
            hurried.cancel()
            setting_up.cancel()
        answers_cut = chat.answers_running if chat else 0
        jobs_cut = images.jobs_running if images else 0
        running.cancel()
        # Python 3.11's wait_for may lose a cancel that comes as it finishes: closing ends
        # `start` then.
        await asyncio.wait({running}, timeout=1)
        await self.close()
        log.info(
            "Shut down in %.1f s; %d answers and %d image jobs were cut short",
            time.monotonic() - started,
            answers_cut,
            jobs_cut,
        )

    async def close(self) -> None:
        # What still runs ends with a notice while Discord is still reachable.
        await asyncio.gather(
            *(
                service.shutdown(_CUT_WAIT)
                for service in (self.chat, self.images)
                if service is not None
            )
        )
        await super().close()
        closing, self._closing = self._closing, []
        for step in reversed(closing):
            try:
                await step()
            except Exception:
                log.exception("Shutting down a resource failed")


async def _work_ended(chat: ChatService | None, images: ImageService | None) -> None:
    """Wait until the answers and image jobs running have ended."""
    if chat is not None:
        await chat.answers_ended()
    if images is not None:
        await images.jobs_ended()


def _report_crash(task: asyncio.Task[None]) -> None:
    """A background task that must run for the bot's whole life ended: say so loudly."""
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped", task.get_name(), exc_info=task.exception())


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


def shard_share(settings: Settings) -> Fraction:
    """The part of the bot's shards this process runs: all of them unless SHARD_IDS."""
    if settings.shard_ids is None or settings.shard_count is None:
        return Fraction(1)
    return Fraction(len(set(settings.shard_ids)), settings.shard_count)


def build_admission(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime] | None = None,
) -> Admission:
    """Admission with the places' settings and budgets, as `settings` make the deployment's.
    `clock` (tests): the time budgets' periods are counted by."""
    server_config = ServerConfig(
        ConfigStore(sessions),
        PlaceSettings(
            model=settings.chat_model,
            image_model=settings.image_model,
            system_prompt=settings.system_prompt,
            temperature=settings.temperature,
            max_answer_tokens=settings.max_answer_tokens,
        ),
        Catalog(chat_models=settings.chat_models, image_models=settings.image_models),
    )
    rules = Rules(
        vision_models=settings.vision_models,
        max_prompt_chars=settings.max_prompt_chars,
        allow_direct_messages=settings.allow_direct_messages,
    )
    longest = max(settings.answer_timeout, settings.image_timeout)
    return Admission(
        server_config,
        rules,
        Ledger(sessions),
        clock or (lambda: datetime.now(UTC)),
        hold_lifetime=HOLD_LIFETIME + timedelta(seconds=longest),
    )


def open_api(settings: Settings) -> tuple[aiohttp.ClientSession, ApiClient]:
    """The API client as the bot runs it, on a session of its own that the caller closes.
    `python -m bot check` uses it too, so that it tests what the bot will run."""
    session = aiohttp.ClientSession(read_bufsize=_READ_BUFSIZE)
    api = ApiClient(
        session,
        base_url=settings.acedatacloud_api_base_url,
        token=settings.acedatacloud_api_token.get_secret_value(),
        path_prefix=settings.api_path_prefix,
        timeouts=Timeouts(
            chat=settings.chat_timeout,
            stream_idle=settings.stream_idle_timeout,
            # A reasoning model may think silently for as long as an answer may take.
            thinking=settings.answer_timeout,
            images=settings.image_timeout,
        ),
    )
    return session, api


def point_at_discord(settings: Settings) -> None:
    """Send Discord traffic to a proxy or a test double instead of Discord itself."""
    if settings.discord_api_base_url:
        discord.http.Route.BASE = settings.discord_api_base_url
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)

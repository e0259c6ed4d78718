"""`/healthz` and `/metrics` over HTTP, served while the bot runs when METRICS_PORT is set."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import metrics

if TYPE_CHECKING:
    from bot.conversation.service import ChatService
    from bot.images.service import ImageService

log = logging.getLogger(__name__)

# The database must answer `SELECT 1` within this many seconds for the bot to be healthy.
DATABASE_WAIT = 1.0


class Shard(Protocol):
    def is_closed(self) -> bool: ...

    @property
    def latency(self) -> float: ...


class Watched(Protocol):
    """What the checks read of the running bot (bot.app.Bot)."""

    chat: ChatService | None
    images: ImageService | None

    def is_ready(self) -> bool: ...

    @property
    def shutting_down(self) -> bool: ...

    @property
    def shards(self) -> Mapping[int, Shard]: ...


async def ping_database(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


async def health(bot: Watched, ping: Callable[[], Awaitable[None]]) -> tuple[bool, dict[str, Any]]:
    """Whether every shard of this process is connected and the database answers, and a body
    saying so (with the reason when not)."""
    if bot.shutting_down:
        return False, {"status": "unavailable", "reason": "The bot is shutting down."}
    if not bot.is_ready():
        return False, {"status": "unavailable", "reason": "Not connected to Discord yet."}
    shards = {
        str(shard_id): "disconnected" if shard.is_closed() else "connected"
        for shard_id, shard in sorted(bot.shards.items())
    }
    database = "ok"
    try:
        async with asyncio.timeout(DATABASE_WAIT):
            await ping()
    except TimeoutError:
        database = "slow"
    except Exception as exc:
        # The class only: a driver's message may name the host and the user.
        log.warning("The health check's database call failed: %s", type(exc).__name__)
        database = "unreachable"
    reasons = [
        f"Shard {shard_id} is not connected to Discord."
        for shard_id, state in shards.items()
        if state != "connected"
    ]
    if database == "slow":
        reasons.append(f"The database did not answer within {DATABASE_WAIT:g} s.")
    elif database == "unreachable":
        reasons.append("The database cannot be reached.")
    body: dict[str, Any] = {"status": "ok", "shards": shards, "database": database}
    if reasons:
        body.update(status="unavailable", reason=" ".join(reasons))
    return not reasons, body


class _Running(Collector):
    """The gauges read from the running bot at each scrape."""

    def __init__(self, bot: Watched) -> None:
        self._bot = bot

    def collect(self) -> Iterator[GaugeMetricFamily]:
        bot = self._bot
        queued, answering = bot.chat.load() if bot.chat else (0, 0)
        yield GaugeMetricFamily(
            "bot_answers_queued",
            "Questions waiting for their turn in their conversation or for a place among the "
            "requests allowed upstream at once.",
            value=queued,
        )
        yield GaugeMetricFamily(
            "bot_answers_running", "Questions being answered now.", value=answering
        )
        yield GaugeMetricFamily(
            "bot_image_jobs_running",
            "Image generations and edits running or waiting for the person's previous one.",
            value=bot.images.jobs_running_or_waiting if bot.images else 0,
        )
        latency = GaugeMetricFamily(
            "bot_gateway_latency_seconds",
            "Time between a gateway heartbeat and its acknowledgement, by shard.",
            labels=["shard"],
        )
        for shard_id, shard in sorted(bot.shards.items()):
            if math.isfinite(shard.latency):  # no heartbeat answered yet
                latency.add_metric([str(shard_id)], shard.latency)
        yield latency


class Monitor:
    """The HTTP server of `/healthz` and `/metrics`."""

    def __init__(self, bot: Watched, ping: Callable[[], Awaitable[None]]) -> None:
        self._bot = bot
        self._ping = ping
        self.registry = CollectorRegistry()
        self.registry.register(metrics.REGISTRY)
        self.registry.register(_Running(bot))
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)

    async def start(self, host: str, port: int) -> None:
        """Listen on `host`:`port`; OSError if the port cannot be had."""
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, host, port).start()
        except OSError:
            await self._runner.cleanup()
            raise
        log.info("Serving /healthz and /metrics on %s:%d", host, port)

    async def close(self) -> None:
        await self._runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        healthy, body = await health(self._bot, self._ping)
        return web.json_response(body, status=200 if healthy else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # Prometheus' text format, or OpenMetrics for a scraper that asks for it.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

"""/healthz and /metrics of the real bot against the fakes, and the container's health check
asking them, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import Bot, StartupError
from tests.fakes.api import Reply
from tests.fakes.discord import FakeDiscordConfig
from tests.harness import STARTUP_TIMEOUT, Harness, running_harness, sqlite_url

pytestmark = pytest.mark.timeout(90)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Monitored:
    """The bot's monitoring endpoints, as a scraper and a health checker see them."""

    def __init__(self, http: aiohttp.ClientSession, port: int, folder: Path) -> None:
        self._http = http
        self.port = port
        self._folder = folder
        self.base = f"http://127.0.0.1:{port}"

    async def healthz(self) -> tuple[int, dict[str, Any]]:
        async with self._http.get(f"{self.base}/healthz") as reply:
            return reply.status, await reply.json()

    async def until_health(self, status: int, *, within: float) -> dict[str, Any]:
        """Asks /healthz until it answers `status`; its body."""
        async with asyncio.timeout(within):
            while True:
                answered, body = await self.healthz()
                if answered == status:
                    return body
                await asyncio.sleep(0.05)

    async def exposition(self) -> str:
        async with self._http.get(f"{self.base}/metrics") as reply:
            assert reply.status == 200
            assert reply.headers["Content-Type"].startswith("text/plain; version=")
            return await reply.text()

    async def scrape(self) -> Samples:
        exposition = await self.exposition()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(exposition)
            for sample in family.samples
        }

    async def container_check(self) -> tuple[int, str]:
        """`python -m bot.health` as the Dockerfile's HEALTHCHECK runs it (aside, so that the
        bot goes on serving meanwhile)."""
        env = {"PATH": os.environ.get("PATH", ""), "METRICS_PORT": str(self.port)}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.health",
            env=env,
            cwd=self._folder,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode is not None
        return process.returncode, out.decode()


def documented_metrics() -> set[str]:
    """The bot's metric names in the README's Monitoring table."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(bot_\w+)", section, re.MULTILINE))


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def wait(condition: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """Asks `condition` until it holds (a scraper's view: nothing to wait on but asking)."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def logged_in(harness: Harness, port: int) -> AsyncIterator[Bot]:
    """The bot with METRICS_PORT set, logged in (its setup done) but not yet connected to the
    gateway; closed after."""
    bot = Bot(harness.settings(metrics_port=port), limits=harness.limits, guild_ready_timeout=0.05)
    try:
        await bot.login(harness.discord.token)
        yield bot
    finally:
        await bot.close()


async def test_healthz_follows_the_gateway_and_metrics_show_an_answer(tmp_path: Path) -> None:
    # Discord here allows fewer writes than the bot plans for, so it meets real 429s; and
    # heartbeats come often, so that the gateway's latency is known soon.
    config = FakeDiscordConfig(
        channel_message_limit=1, channel_message_window=2.0, heartbeat_interval_ms=200
    )
    port = free_port()
    async with (
        running_harness(sqlite_url(tmp_path), config=config) as harness,
        aiohttp.ClientSession() as http,
        logged_in(harness, port) as bot,
    ):
        monitored = Monitored(http, port, tmp_path)
        assert await monitored.healthz() == (
            503,
            {"status": "unavailable", "reason": "Not connected to Discord yet."},
        )
        code, said = await monitored.container_check()
        assert (code, said) == (1, "Unhealthy: Not connected to Discord yet.\n")

        connecting = asyncio.create_task(bot.connect())
        await asyncio.wait_for(bot.started.wait(), STARTUP_TIMEOUT)
        assert await monitored.until_health(200, within=5) == {
            "status": "ok",
            "shards": {"0": "connected"},
            "database": "ok",
        }
        code, said = await monitored.container_check()
        assert code == 0, said
        assert said.startswith(f"Healthy: {monitored.base}/healthz says ok.")

        before = await monitored.scrape()
        usage = {"prompt_tokens": 30, "completion_tokens": 60, "total_tokens": 90}
        text = "word " * 60
        harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05, usage=usage))
        question = await harness.mention("Tell me a long story")
        answer = await harness.answer_to(question, within=30)
        assert answer.versions[-1].content == text.strip()
        after = before

        def grew(name: str, **labels: str) -> float:
            return sample(after, name, **labels) - sample(before, name, **labels)

        async def answered() -> bool:
            """The answer is counted once stored, a moment after it shows."""
            nonlocal after
            after = await monitored.scrape()
            return grew("bot_answers_total", outcome="complete") == 1

        await wait(answered, within=5)
        for timed in ("api_first_token", "first_text", "answer"):
            assert grew(f"bot_{timed}_seconds_count") == 1, timed
        assert grew("bot_tokens_total", model="gpt-4o-mini", kind="prompt") == 30
        assert grew("bot_tokens_total", model="gpt-4o-mini", kind="completion") == 60
        assert harness.discord.rate_limited_count > 0
        assert grew("bot_discord_rate_limits_total", scope="user") == (
            harness.discord.rate_limited_count
        )
        assert grew("bot_database_call_seconds_count") > 0
        assert sample(after, "bot_answers_running") == sample(after, "bot_answers_queued") == 0
        assert sample(after, "process_resident_memory_bytes") > 0

        async def latency_known() -> bool:
            return ("bot_gateway_latency_seconds", frozenset({("shard", "0")})) in (
                await monitored.scrape()
            )

        await wait(latency_known, within=10)
        exported = {
            f"{family.name}_total" if family.type == "counter" else family.name
            for family in text_string_to_metric_families(await monitored.exposition())
        }
        # prometheus-client adds a `_created` time to each counter and histogram.
        own = {n for n in exported if n.startswith("bot_") and not n.endswith("_created")}
        assert own == documented_metrics()
        assert any(name.startswith("process_") for name in exported)

        # Discord ends the session: the bot identifies again, after discord.py's 5 s wait.
        await harness.discord.drop_gateway(resumable=False)
        down = await monitored.until_health(503, within=5)
        assert down["reason"] == "Shard 0 is not connected to Discord."
        assert down["shards"] == {"0": "disconnected"}
        await monitored.until_health(200, within=15)
        assert harness.discord.identify_count == 2

        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(connecting, 10)
    code, said = await monitored.container_check()
    assert code == 1
    assert said.startswith(f"Unhealthy: {monitored.base}/healthz does not answer")


async def test_a_metrics_port_in_use_stops_the_start_with_a_sentence(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        sentence = f"Cannot serve METRICS_PORT {port} on 127.0.0.1: Address already in use."
        with pytest.raises(StartupError) as raised:
            async with running_harness(sqlite_url(tmp_path)) as harness:
                await harness.start_bot(metrics_port=port)
        assert str(raised.value) == sentence

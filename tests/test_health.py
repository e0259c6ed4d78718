"""`python -m bot health`: healthy only while the running bot's gateway is connected."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from bot import health
from bot.__main__ import main
from tests.harness import running_harness, sqlite_url


@pytest.fixture(autouse=True)
def own_temp_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The heartbeat file lives in the temp dir: give each test its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(health, "BEAT_EVERY", 0.01)


def health_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> int:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("DISCORD_TOKEN", "x")
    monkeypatch.setenv("ACEDATACLOUD_API_TOKEN", "x")
    return main(["health"])


def test_health_exit_code_follows_the_heartbeat_age(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert health_command(monkeypatch, tmp_path) == 1
    assert "Unhealthy: not connected to Discord" in capsys.readouterr().out

    health.heartbeat_file().touch()
    assert health_command(monkeypatch, tmp_path) == 0
    assert "Healthy: connected to Discord 0 s ago." in capsys.readouterr().out

    long_ago = time.time() - health.STALE_AFTER - 1
    os.utime(health.heartbeat_file(), (long_ago, long_ago))
    assert health_command(monkeypatch, tmp_path) == 1


def test_the_container_check_gives_the_same_verdict_without_settings(tmp_path: Path) -> None:
    """`python -m bot.health`, as the Dockerfile's HEALTHCHECK runs it."""

    def container_check() -> subprocess.CompletedProcess[str]:
        env = {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(tmp_path)}
        command = [sys.executable, "-m", "bot.health"]
        return subprocess.run(command, env=env, capture_output=True, text=True, cwd=tmp_path)

    assert container_check().returncode == 1
    health.heartbeat_file().touch()
    result = container_check()
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Healthy: connected to Discord")


async def test_beats_only_while_connected_and_stops_with_the_bot() -> None:
    connected = False
    asked = asyncio.Queue[bool]()

    def is_connected() -> bool:
        asked.put_nowait(connected)
        return connected

    async def next_look() -> None:
        """The file is touched (or not) right after each look, before the loop sleeps."""
        while not asked.empty():
            asked.get_nowait()
        async with asyncio.timeout(5):
            await asked.get()

    beating = asyncio.create_task(health.keep_beating(is_connected))
    try:
        await next_look()
        assert not health.heartbeat_file().exists()
        connected = True
        await next_look()
        assert health.heartbeat_file().exists()
        assert health.verdict()[0]
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating
    assert not health.heartbeat_file().exists()
    assert not health.verdict()[0]


async def test_the_running_bot_is_healthy_once_connected_and_not_after_it_stops(
    tmp_path: Path,
) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        bot = await harness.start_bot()
        assert bot.gateway_connected()
        await harness.discord.wait_for(health.heartbeat_file().exists)
        await harness.stop_bot()
        assert not bot.gateway_connected()
        assert not health.heartbeat_file().exists()


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9100/healthz"),
        ("0.0.0.0", "http://127.0.0.1:9100/healthz"),
        ("::", "http://[::1]:9100/healthz"),
        ("::1", "http://[::1]:9100/healthz"),
        ("bot.internal", "http://bot.internal:9100/healthz"),
    ],
)
def test_the_check_asks_healthz_where_the_bot_listens(host: str, url: str) -> None:
    """A wildcard address is asked locally: the check runs in the bot's own container."""
    assert health.healthz_url(9100, host) == url

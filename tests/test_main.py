"""`python -m bot` as an admin runs it: a real process against the fakes."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.api import FakeApi, Reply
from tests.fakes.discord import FakeDiscord, FakeDiscordConfig, Intents

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def fakes() -> AsyncIterator[tuple[FakeDiscord, FakeApi]]:
    async with FakeApi.running() as api, FakeDiscord() as discord:
        discord.add_guild("Test Guild", channels=["general"])
        yield discord, api


def environment(discord: FakeDiscord, api: FakeApi, database: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(ROOT),
        "DISCORD_TOKEN": discord.token,
        "ACEDATACLOUD_API_TOKEN": api.token,
        "ACEDATACLOUD_API_BASE_URL": api.url,
        "DATABASE_URL": f"sqlite:///{database}",
        "DISCORD_API_BASE_URL": discord.api_base,
        "DISCORD_GATEWAY_URL": discord.gateway_url,
        **extra,
    }


async def python_m_bot(
    *args: str, env: dict[str, str], cwd: Path, output: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """`python -m bot ARGS` as an admin would start it, in its own folder."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", *args, cwd=cwd, env=env, stdout=output, stderr=output
    )


async def test_run_migrates_a_new_database_connects_and_stops_cleanly(
    fakes: tuple[FakeDiscord, FakeApi], tmp_path: Path
) -> None:
    discord, api = fakes
    database = tmp_path / "data" / "bot.db"
    process = await python_m_bot(env=environment(discord, api, database), cwd=tmp_path)
    try:
        await discord.wait_for(lambda: discord.identify_count == 1, timeout=30)
        await discord.wait_for(lambda: bool(discord.registered_commands()), timeout=10)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    names = {command["name"] for command in discord.registered_commands()}
    assert {"ask", "chat", "reset"} <= names
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert {"conversations", "turns", "usage_records"} <= tables
    assert revision is not None
    assert discord.token not in stderr.decode()
    assert api.token not in stderr.decode()
    assert "voice will NOT be supported" not in stderr.decode()


REPORT_LINES = ("Settings: ", "Database: ", "Discord: ", "API: ")


async def check(
    discord: FakeDiscord, api: FakeApi, database: Path, cwd: Path, **extra: str
) -> tuple[int, str]:
    """`python -m bot check`: its exit code and its report, which must be all it prints."""
    process = await python_m_bot("check", env=environment(discord, api, database, **extra), cwd=cwd)
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    report = stdout.decode()
    assert stderr.decode() == ""
    assert all(line.startswith(REPORT_LINES) for line in report.splitlines()), report
    assert discord.token not in report and api.token not in report
    return process.returncode, report


async def test_check_reports_each_part_and_never_writes_the_database(
    fakes: tuple[FakeDiscord, FakeApi], tmp_path: Path
) -> None:
    discord, api = fakes
    database = tmp_path / "data" / "bot.db"

    code, report = await check(discord, api, database, tmp_path)
    assert code == 1
    assert "Settings: valid." in report
    assert f"Database: the file {database} does not exist yet" in report
    assert not database.parent.exists()  # reported, not created
    assert "Discord: the token is accepted" in report
    assert "Discord: the message content intent is enabled" in report
    assert "accepts the token" in report

    database.parent.mkdir()
    sqlite3.connect(database).close()  # an empty file: a database nothing has migrated
    code, report = await check(discord, api, database, tmp_path)
    assert code == 1
    assert "is reachable but not migrated yet: run `python -m bot migrate`." in report
    assert "None" not in report

    migrate = await python_m_bot("migrate", env=environment(discord, api, database), cwd=tmp_path)
    await asyncio.wait_for(migrate.communicate(), 60)
    assert migrate.returncode == 0
    files = {path.name: path.read_bytes() for path in database.parent.iterdir()}

    code, report = await check(discord, api, database, tmp_path)
    assert code == 0, report
    assert "is reachable and current (revision " in report
    assert {path.name: path.read_bytes() for path in database.parent.iterdir()} == files

    code, report = await check(discord, api, database, tmp_path, ACEDATACLOUD_API_TOKEN="wrong")
    assert code == 1
    assert "token is missing, invalid or expired" in report

    code, report = await check(discord, api, database, tmp_path, DISCORD_TOKEN="wrong.token.x")
    assert code == 1
    assert "Discord: Discord refused DISCORD_TOKEN" in report
    assert "wrong.token.x" not in report


@pytest.mark.parametrize("verified", [False, True])
async def test_check_compares_the_message_content_intent_with_the_portal(
    tmp_path: Path, verified: bool
) -> None:
    """The application's flags say whether the portal allows the intent (GATEWAY_MESSAGE_CONTENT,
    or its _LIMITED form for apps under 100 servers)."""
    config = FakeDiscordConfig(
        allowed_privileged_intents=Intents.PRIVILEGED & ~Intents.MESSAGE_CONTENT,
        application_verified=verified,
    )
    database = tmp_path / "bot.db"
    async with FakeApi.running() as api, FakeDiscord(config) as discord:
        code, report = await check(discord, api, database, tmp_path)
        assert code == 1
        assert "Discord: The message content intent is not enabled for this bot" in report

        code, report = await check(discord, api, database, tmp_path, MESSAGE_CONTENT_INTENT="false")
        assert (
            "Discord: the message content intent is off, as MESSAGE_CONTENT_INTENT asks." in report
        )

        config.allowed_privileged_intents = Intents.PRIVILEGED
        code, report = await check(discord, api, database, tmp_path)
        assert "Discord: the message content intent is enabled" in report


async def test_an_answer_left_half_written_by_a_crash_is_marked_at_the_next_start(
    fakes: tuple[FakeDiscord, FakeApi], tmp_path: Path
) -> None:
    discord, api = fakes
    guild = next(iter(discord.guilds.values()))
    general = discord.channels[guild.channel_ids[0]]
    alice = discord.add_user("alice")
    discord.add_member(guild, alice)
    database = tmp_path / "bot.db"

    async def start() -> asyncio.subprocess.Process:
        identified = discord.identify_count
        process = await python_m_bot(
            env=environment(discord, api, database), cwd=tmp_path, output=asyncio.subprocess.DEVNULL
        )
        await discord.wait_for(lambda: discord.identify_count > identified, timeout=30)
        return process

    crashing = await start()
    try:
        api.script(Reply(text="word " * 200, chunk_size=5, chunk_interval=0.05))
        question = await discord.post_message(
            general, alice, "a long story, please", mentions=[discord.bot_user]
        )
        await discord.wait_for(lambda: len(discord.messages_in(general)) == 2, timeout=10)
        answer = discord.messages_in(general)[1]
        await discord.wait_for(lambda: _stored_in_progress(database, answer.id), timeout=10)
    finally:
        crashing.kill()  # no goodbye: the answer stays half written
        await crashing.wait()
    assert answer.versions[-1].content.endswith("▌")
    assert (answer.reference or {}).get("message_id") == str(question.id)

    restarted = await start()
    try:
        await discord.wait_for(
            lambda: answer.versions[-1].content.endswith(
                "-# The bot restarted before this answer finished."
            ),
            timeout=15,
        )
    finally:
        restarted.send_signal(signal.SIGTERM)
        await asyncio.wait_for(restarted.wait(), 30)
    assert "▌" not in answer.versions[-1].content
    assert answer.versions[-1].components == []
    with sqlite3.connect(database) as connection:
        statuses = {row[0] for row in connection.execute("SELECT status FROM turns")}
    assert "in_progress" not in statuses and "interrupted" in statuses


def _stored_in_progress(database: Path, message_id: int) -> bool:
    """Whether the database knows which message shows the answer being written."""
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT message_ids FROM turns WHERE status = 'in_progress'")
        return any(str(message_id) in row[0] for row in rows)


def test_voice_warnings_are_silenced_and_other_warnings_are_not() -> None:
    """The bot never joins voice: discord.py's warnings about voice libraries are noise."""
    script = (
        "import logging, discord\n"
        "from discord.voice_client import VoiceClient\n"
        "from bot.logs import setup_logging\n"
        "setup_logging('INFO')\n"
        "VoiceClient.warn_nacl = VoiceClient.warn_dave = True\n"
        "discord.Client(intents=discord.Intents.none())\n"
        "logging.getLogger('discord.client').warning('another warning')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "not installed" not in result.stderr
    assert "discord.client: another warning" in result.stderr

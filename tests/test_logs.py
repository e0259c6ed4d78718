"""What the bot writes to its log, as an admin runs it: no secrets and no private text."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from bot.logs import JsonFormatter, RedactingFormatter
from tests.fakes.api import FakeApi, Reply
from tests.fakes.discord import FakeDiscord
from tests.test_main import environment, python_m_bot

PROMPT = "my secret plan is purple-giraffe-42"
ANSWER = "the answer mentions orange-walrus-17"
NAME = "zelda-the-private"


async def test_a_conversation_at_debug_logs_no_token_and_no_private_text(
    tmp_path: Path,
) -> None:
    async with FakeApi.running() as api, FakeDiscord() as discord:
        guild = discord.add_guild("Test Guild", channels=["general"])
        general = discord.channels[guild.channel_ids[0]]
        person = discord.add_user(NAME)
        discord.add_member(guild, person)
        env = environment(discord, api, tmp_path / "bot.db", LOG_LEVEL="DEBUG")
        process = await python_m_bot(env=env, cwd=tmp_path)
        try:
            await discord.wait_for(lambda: discord.identify_count == 1, timeout=30)
            api.script(Reply(text=ANSWER, chunk_size=3))
            await discord.post_message(
                general, person, f"{PROMPT} (mention)", mentions=[discord.bot_user]
            )
            await discord.wait_for(
                lambda: any(
                    ANSWER in m.latest.content and "regenerate" in str(m.latest.components)
                    for m in discord.messages_in(general)
                ),
                timeout=15,
            )
            api.script(Reply(text=ANSWER, chunk_size=3))
            interaction = await discord.invoke_command(
                "ask", {"prompt": f"{PROMPT} (ask)"}, channel=general, user=person
            )
            await discord.wait_for(
                lambda: (
                    interaction.original is not None
                    and "regenerate" in str(interaction.original.latest.components)
                ),
                timeout=15,
            )
        finally:
            process.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
        log = stdout.decode() + stderr.decode()
        assert "DEBUG" in log  # the level was in force
        for secret in (discord.token, api.token, interaction.token):
            assert secret not in log and quote(secret, "") not in log
        for private in ("purple-giraffe", "orange-walrus", NAME):
            assert private not in log, private


def test_the_formatter_removes_secrets_and_url_tokens_from_whole_records() -> None:
    formatter = RedactingFormatter("%(levelname)s %(message)s", "%H", ["s3cr:et"])
    record = _failure("x", "GET %s failed", "/webhooks/1/abc%3Adef/messages")
    text = formatter.format(record)
    assert text.startswith("ERROR GET /webhooks/1/[redacted]/messages failed")
    assert "s3cr" not in text and "abc" not in text
    assert "ValueError: the token [redacted] was refused" in text
    assert formatter.format(_record("see s3cr%3Aet")) == "INFO see [redacted]"


def test_json_lines_are_one_object_each_and_redacted() -> None:
    formatter = JsonFormatter(["s3cr:et"])
    record = _failure("bot.x", "GET %s failed\nfor s3cr%%3Aet", "/webhooks/1/abc/messages")
    line = formatter.format(record)
    assert "\n" not in line  # one line, whatever the message and traceback hold
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "bot.x"
    assert entry["message"] == "GET /webhooks/1/[redacted]/messages failed\nfor [redacted]"
    assert entry["exception"].endswith("ValueError: the token [redacted] was refused")
    assert datetime.fromisoformat(entry["time"]).tzinfo is not None


def _failure(logger: str, message: str, url: str) -> logging.LogRecord:
    """An error record about `url`, with the traceback of a failure naming the secret."""
    try:
        raise ValueError("the token s3cr:et was refused")
    except ValueError as exc:
        return logging.LogRecord(
            logger, logging.ERROR, __file__, 1, message, (url,), (type(exc), exc, exc.__traceback__)
        )


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, message, None, None)


async def test_log_format_json_makes_every_line_an_object(tmp_path: Path) -> None:
    async with FakeApi.running() as api, FakeDiscord() as discord:
        env = environment(discord, api, tmp_path / "bot.db", LOG_FORMAT="json")
        migrate = await python_m_bot("migrate", env=env, cwd=tmp_path)
        _, stderr = await asyncio.wait_for(migrate.communicate(), 60)
    assert migrate.returncode == 0
    entries = [json.loads(line) for line in stderr.decode().splitlines()]
    assert any(entry["message"].startswith("Database migrated") for entry in entries), entries

"""Every command and button is acknowledged within Discord's three seconds, even while the
database is busy, and still gets its result once the database is free again."""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from pathlib import Path

from PIL import Image

from tests.fakes.api import Reply
from tests.fakes.discord import FakeChannel, InteractionRecord, MessageRecord, UploadFile
from tests.harness import Harness, custom_ids, running_harness, sqlite_url

HELD = 5.0  # seconds the database's write lock is held: longer than Discord waits
SLOW = Reply(text="word " * 60, chunk_size=5, chunk_interval=0.05)


def square_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (30, 90, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def button(message: MessageRecord, prefix: str) -> str | None:
    return next((cid for cid in custom_ids(message) if cid.startswith(prefix)), None)


def answered(message: MessageRecord | None) -> bool:
    """A finished answer: it shows its Regenerate button."""
    return message is not None and button(message, "answer:regenerate:") is not None


def with_images(messages: list[MessageRecord | None]) -> bool:
    return any(m is not None and m.attachments for m in messages)


async def prepared(harness: Harness, quiet: FakeChannel) -> tuple[MessageRecord, ...]:
    """An image with its Regenerate button, a finished answer with its Regenerate button,
    an answer still streaming with its Stop button, and a conversation to forget."""
    discord = harness.discord
    made = await discord.invoke_command("image", {"prompt": "a boat"}, channel=harness.random)
    await discord.wait_for(
        lambda: made.original is not None and button(made.original, "image:again:"), timeout=10
    )
    assert made.original is not None
    answer = await harness.answer_to(await harness.mention("hello", channel=quiet))
    await harness.answer_to(await harness.mention("hello", author=harness.bob))
    harness.api.script(SLOW)
    question = await harness.mention("a long story, please")

    def streaming() -> MessageRecord | None:
        return next(
            (
                m
                for m in harness.bot_messages()
                if (m.reference or {}).get("message_id") == str(question.id)
                and button(m, "answer:stop:")
            ),
            None,
        )

    stoppable = await discord.wait_for(streaming, timeout=15)
    assert stoppable is not None
    return made.original, answer, stoppable


async def test_everything_is_acknowledged_while_the_database_is_locked(tmp_path: Path) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot()
        discord = harness.discord
        quiet = discord.add_channel(harness.guild, "quiet")
        carol, dave, erin = (discord.add_user(name) for name in ("carol", "dave", "erin"))
        for user in (carol, dave, erin):
            discord.add_member(harness.guild, user)
        image, answer, stoppable = await prepared(harness, quiet)

        # Another process, or a long write, holds the database: every write waits for it.
        # Taken in a thread: the bot may be in the middle of a write it finishes on the loop.
        lock = sqlite3.connect(tmp_path / "bot.db", isolation_level=None, check_same_thread=False)
        await asyncio.to_thread(lock.execute, "BEGIN IMMEDIATE")
        held_since = time.monotonic()
        try:
            ask = await discord.invoke_command("ask", {"prompt": "quick"}, user=harness.bob)
            chat = await discord.invoke_command(
                "chat", {"prompt": "a trip"}, channel=harness.random, user=carol
            )
            make = await discord.invoke_command("image", {"prompt": "a cat"}, user=dave)
            edit = await discord.invoke_command(
                "edit",
                {"prompt": "bluer", "model": "dall-e-2"},
                attachments={"image": UploadFile("cat.png", square_png())},
                user=erin,
            )
            reset = await discord.invoke_command("reset", user=harness.moderator)
            stop = await discord.click_button(
                stoppable, button(stoppable, "answer:stop:") or "", harness.alice
            )
            again = await discord.click_button(
                answer, button(answer, "answer:regenerate:") or "", harness.alice
            )
            images_again = await discord.click_button(
                image, button(image, "image:again:") or "", harness.alice
            )
            everything: list[InteractionRecord] = [
                ask,
                chat,
                make,
                edit,
                reset,
                stop,
                again,
                images_again,
            ]
            # Awaited while this block still holds the lock: it is released only below.
            await discord.wait_for(
                lambda: all(i.acknowledged or i.rejected for i in everything), timeout=4
            )
            assert [i for i in everything if i.rejected or not i.acknowledged] == []
            assert all((i.ack_latency or 3) < 3 for i in everything)
            # Held past Discord's three seconds: the writes waiting for it must not give up.
            await asyncio.sleep(held_since + HELD - time.monotonic())
        finally:
            lock.rollback()
            lock.close()

        # And then each gets its result.
        await discord.wait_for(lambda: answered(ask.original), timeout=15)
        await discord.wait_for(
            lambda: any(
                answered(m)
                for c in discord.channels.values()
                if c.is_thread
                for m in harness.bot_messages(c)
            ),
            timeout=15,
        )
        await discord.wait_for(lambda: with_images([make.original]), timeout=15)
        await discord.wait_for(lambda: with_images([edit.original]), timeout=15)
        await discord.wait_for(
            lambda: reset.original is not None and "Forgot" in reset.original.content, timeout=10
        )
        await discord.wait_for(lambda: not button(stoppable, "answer:stop:"), timeout=15)
        assert "alice" in stoppable.content
        await discord.wait_for(
            lambda: any(
                (m.reference or {}).get("message_id") == str(answer.id) and answered(m)
                for m in harness.bot_messages(quiet)
            ),
            timeout=15,
        )
        await discord.wait_for(lambda: with_images(list(images_again.followups)), timeout=15)

"""Budgets and /usage end to end: caps set from Discord hold before any request is paid for."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.config import DEFAULT_SYSTEM_PROMPT
from bot.conversation.tokens import estimate_tokens
from cogs.budgets import ADMINS_ONLY, SERVER_VIEW_ADMINS_ONLY
from tests.fakes.api import Reply
from tests.fakes.discord import FakeUser, InteractionRecord, MessageRecord
from tests.harness import Harness, running_harness, sqlite_url


@pytest.fixture
def clock() -> list[datetime]:
    return [datetime.now(UTC)]


@pytest.fixture
async def harness(tmp_path: Path, clock: list[datetime]) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot(clock=lambda: clock[0], max_answer_tokens=100)
        # Memory off: embeddings, which count too, would add to these sums at their own pace.
        owner = harness.add_admin("owner")
        options = {"setting": "memory", "value": "off", "scope": "server"}
        await harness.told(await harness.discord.invoke_command("config set", options, user=owner))
        yield harness


@pytest.fixture
def admin(harness: Harness) -> FakeUser:
    return harness.add_admin()


async def budget(harness: Harness, admin: FakeUser, **options: object) -> str:
    interaction = await harness.discord.invoke_command("budget set", options, user=admin)
    told = await harness.told(interaction)
    assert told.startswith("✅"), told
    return told


def usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": tokens - 50, "completion_tokens": 50, "total_tokens": tokens}


def reply_to(harness: Harness, question: MessageRecord) -> MessageRecord | None:
    return next(
        (
            m
            for m in harness.bot_messages(harness.discord.channels[question.channel_id])
            if (m.reference or {}).get("message_id") == str(question.id)
        ),
        None,
    )


async def test_a_person_cap_stops_the_third_answer_before_the_api(
    harness: Harness, admin: FakeUser
) -> None:
    told = await budget(harness, admin, scope="person", tokens=500)
    assert told == "✅ Each person may use 500 tokens a day (no cap on images)."
    for _ in range(3):
        harness.api.script(Reply(text="Sure.", usage=usage(300)))
    # In channels of their own: the cap is the person's wherever they ask (and no channel's
    # write limit slows the test).
    elsewhere = harness.discord.add_channel(harness.guild, "elsewhere")
    await harness.answer_to(await harness.mention("One"))
    await harness.answer_to(await harness.mention("Two", channel=harness.random))
    third = await harness.mention("Three", channel=elsewhere)
    # Admitted while the second answer's hold was still below the cap, or refused at once.
    refusal = await harness.discord.wait_for(
        lambda: (r := reply_to(harness, third)) and r.content.startswith("⚠️") and r, timeout=15
    )
    assert refusal
    assert refusal.content.startswith(
        "⚠️ You have used 600 of your 500 tokens today; the count starts again <t:"
    )
    assert len(harness.api.requests_to("/chat/completions")) == 2
    # Someone else has a budget of their own.
    await harness.answer_to(await harness.mention("Hello", author=harness.bob))
    assert len(harness.api.requests_to("/chat/completions")) == 3

    shown = await harness.discord.invoke_command("budget show", {}, user=admin)
    assert await harness.told(shown) == "• each person: 500 tokens a day (no cap on images)"


async def test_a_server_image_cap_refuses_before_any_request_and_resets(
    harness: Harness, admin: FakeUser, clock: list[datetime]
) -> None:
    await budget(harness, admin, scope="server", images=2)
    made = await harness.discord.invoke_command("image", {"prompt": "two owls", "count": 2})
    await harness.discord.wait_for(lambda: made.original and made.original.latest.attachments)
    refused = await harness.discord.invoke_command("image", {"prompt": "a third owl"})
    assert (await harness.told(refused)).startswith(
        "⚠️ This server has used 2 of its 2 images today; the count starts again <t:"
    )
    assert len(harness.api.requests_to("/images/generations")) == 1
    clock[0] += timedelta(days=1)
    again = await harness.discord.invoke_command("image", {"prompt": "a third owl"})
    await harness.discord.wait_for(lambda: again.original and again.original.latest.attachments)
    assert len(harness.api.requests_to("/images/generations")) == 2


async def test_ten_people_at_once_pass_a_server_cap_for_three_exactly(
    harness: Harness, admin: FakeUser
) -> None:
    people = [harness.discord.add_user(f"person{n}") for n in range(10)]
    channels = [harness.discord.add_channel(harness.guild, f"room{n}") for n in range(10)]
    for person in people:
        harness.discord.add_member(harness.guild, person)
    # Each question's worst case: its prompt and the longest answer allowed (100 tokens).
    worst = estimate_tokens(DEFAULT_SYSTEM_PROMPT) + estimate_tokens("person0: Hi") + 100
    await budget(harness, admin, scope="server", tokens=3 * worst)
    for _ in range(10):
        harness.api.script(Reply(text="Hello.", first_byte_delay=1.0, usage=usage(100)))
    questions = await asyncio.gather(
        *(
            harness.mention("Hi", author=person, channel=channel)
            for person, channel in zip(people, channels, strict=True)
        )
    )
    await harness.discord.wait_for(
        lambda: all(reply_to(harness, q) is not None for q in questions), timeout=10
    )
    refusals = [q for q in questions if (reply_to(harness, q) or q).content.startswith("⚠️")]
    assert len(refusals) == 7
    assert len(harness.api.requests_to("/chat/completions")) == 3


def png_of(interaction: InteractionRecord) -> Image.Image:
    assert interaction.original is not None
    files = interaction.original.attachment_files
    (attachment,) = [file for file in files if file.filename == "usage.png"]
    image = Image.open(io.BytesIO(attachment.data))
    image.load()
    return image


async def test_usage_shows_each_person_their_own_and_admins_the_server(
    harness: Harness, admin: FakeUser
) -> None:
    await budget(harness, admin, scope="person", tokens=10_000, images=5)
    harness.api.script(Reply(text="Sure.", usage=usage(300)))
    await harness.answer_to(await harness.mention("One"))
    harness.api.script(Reply(text="Sure.", usage=usage(120)))
    await harness.answer_to(await harness.mention("Two", author=harness.bob))

    mine = await harness.discord.invoke_command("usage", {})
    told = await harness.told(mine)
    assert "• You: 300 of 10,000 tokens today, more <t:" in told
    assert "• You: 0 of 5 images today" in told
    chart = png_of(mine)
    assert chart.format == "PNG" and chart.width >= 600 and chart.height >= 300
    assert len(chart.getcolors(maxcolors=100_000) or []) > 8  # more than a blank frame

    refused = await harness.discord.invoke_command("usage", {"server": True})
    assert await harness.told(refused) == f"⚠️ {SERVER_VIEW_ADMINS_ONLY}"

    server = await harness.discord.invoke_command(
        "usage", {"server": True, "export": True}, user=admin
    )
    told = await harness.told(server)
    assert told.startswith("No budget caps the server.")  # only each person's
    assert f"• <@{harness.alice.id}>: 300 tokens, 0 images" in told
    assert f"• <@{harness.bob.id}>: 120 tokens, 0 images" in told
    assert told.index(str(harness.alice.id)) < told.index(str(harness.bob.id))
    assert "• gpt-4o-mini: 420 tokens, 0 images" in told
    assert server.original is not None
    (csv,) = [f for f in server.original.attachment_files if f.filename.endswith(".csv")]
    rows = csv.data.decode().splitlines()
    assert len(rows) == 3 and rows[0].startswith("time,user_id")


async def test_role_budgets_a_member_override_and_who_may_set_them(
    harness: Harness, admin: FakeUser
) -> None:
    helpers, vips = (harness.discord.add_role(harness.guild, name) for name in ("Helpers", "VIPs"))
    carol, dave = harness.discord.add_user("carol"), harness.discord.add_user("dave")
    harness.discord.add_member(harness.guild, carol, roles=[helpers, vips])
    harness.discord.add_member(harness.guild, dave, roles=[vips])
    await budget(harness, admin, scope="person", images=0)
    await budget(harness, admin, scope="person", images=1, role=helpers)
    await budget(harness, admin, scope="person", images=3, role=vips)
    told = await budget(harness, admin, scope="person", images=0, user=dave)
    assert told == f"✅ <@{dave.id}> may use 0 images a day (no cap on tokens)."

    async def image_for(user: FakeUser, count: int) -> str:
        asked = await harness.discord.invoke_command(
            "image", {"prompt": "a fox", "count": count}, user=user
        )
        await harness.discord.wait_for(
            lambda: (
                (asked.original is not None and bool(asked.original.latest.attachments))
                or any(m.content.startswith("⚠️") for m in asked.followups)
            ),
            timeout=10,
        )
        return await harness.told(asked)

    # The most generous of carol's roles applies: 3 a day, so 3 at once pass and a 4th not.
    assert not (await image_for(carol, 3)).startswith("⚠️")
    refused = await image_for(carol, 1)
    assert refused.startswith("⚠️ You have used 3 of your 3 images today;")
    # Dave's own budget wins over his role; alice has the one for everyone.
    assert (await image_for(dave, 1)).startswith("⚠️ You have used 0 of your 0 images today;")
    assert (await image_for(harness.alice, 2)).startswith(
        "⚠️ You have used 0 of your 0 images today, so 2 more can't be made;"
    )
    assert len(harness.api.requests_to("/images/generations")) == 1

    # Only admins set budgets, whatever Discord lets through; clearing one lifts it.
    refused_set = await harness.discord.invoke_command(
        "budget set", {"scope": "server", "tokens": 1}, user=harness.alice
    )
    assert await harness.told(refused_set) == f"⚠️ {ADMINS_ONLY}"
    refused_export = await harness.discord.invoke_command("usage", {"export": True})
    assert await harness.told(refused_export) == f"⚠️ {SERVER_VIEW_ADMINS_ONLY}"
    cleared = await harness.discord.invoke_command(
        "budget clear", {"scope": "person", "user": dave}, user=admin
    )
    assert await harness.told(cleared) == f"🗑️ Removed the budget for <@{dave.id}>."
    shown = await harness.discord.invoke_command("budget show", {}, user=admin)
    assert str(dave.id) not in await harness.told(shown)

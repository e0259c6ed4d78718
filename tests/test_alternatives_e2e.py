"""/ask `alternatives` and `format` end to end: paging with the buttons, Keep, JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.api import Reply
from tests.fakes.discord import InteractionRecord, MessageRecord
from tests.harness import Harness, custom_ids, running_harness, sqlite_url

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot()
        yield harness


def latest(message: MessageRecord) -> str:
    return message.versions[-1].content


def paging(message: MessageRecord, action: str) -> str:
    return next(cid for cid in custom_ids(message) if cid.endswith(f":{action}"))


async def shown(harness: Harness, message: MessageRecord, start: str) -> None:
    await harness.discord.wait_for(lambda: latest(message).startswith(start), timeout=10)


async def last_message(
    harness: Harness, interaction: InteractionRecord, notice: str
) -> MessageRecord:
    """The interaction's last message, once it ends with `notice`."""

    def last() -> MessageRecord | None:
        messages = [m for m in (interaction.original, *interaction.followups) if m is not None]
        live = [m for m in messages if not m.deleted]
        return live[-1] if live and latest(live[-1]).endswith(notice) else None

    await harness.discord.wait_for(lambda: last() is not None, timeout=10)
    message = last()
    assert message is not None
    return message


async def test_alternatives_page_with_the_buttons_and_only_the_kept_one_is_remembered(
    harness: Harness,
) -> None:
    red = " ".join(["Red."] * 500)  # two messages
    harness.api.script(Reply(choices=(red, "Blue.", "Green."), chunk_size=500))
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "Name a colour", "alternatives": 3}, channel=harness.general
    )
    last = await last_message(harness, interaction, "-# 1/3")
    assert harness.api.requests_to("/chat/completions")[-1].json["n"] == 3
    original = interaction.original
    assert original is not None and last is not original and latest(original).startswith("Red.")
    assert [cid.rsplit(":", 1)[-1] for cid in custom_ids(last)][:3] == ["prev", "next", "keep"]

    await harness.discord.click_button(last, paging(last, "next"), harness.alice)
    await shown(harness, original, "Blue.\n\n-# 2/3")
    await harness.discord.wait_for(lambda: last.deleted, timeout=10)  # not needed by Blue

    # Only the asker (or a moderator) chooses.
    refused = await harness.discord.click_button(original, paging(original, "keep"), harness.bob)
    assert "Only the person who asked" in await harness.told(refused)

    await harness.discord.click_button(original, paging(original, "keep"), harness.alice)
    await harness.discord.wait_for(lambda: latest(original) == "Blue.", timeout=10)
    (regenerate,) = custom_ids(original)
    assert regenerate.startswith("answer:regenerate:")

    await harness.answer_to(await harness.mention("Why that one?"))
    assert harness.sent_history()[1:] == ["alice: Name a colour", "Blue.", "alice: Why that one?"]


async def test_private_json_alternatives_page_in_the_ephemeral_message_until_a_restart(
    harness: Harness,
) -> None:
    harness.api.script(Reply(choices=('{"colour": "red"}', '{"colour": "blue"}')))
    interaction = await harness.discord.invoke_command(
        "ask",
        {"prompt": "A colour", "alternatives": 2, "format": "json", "private": True},
        channel=harness.general,
    )
    original = await last_message(harness, interaction, "-# 1/2")
    assert original.visible_to == harness.alice.id
    assert latest(original) == '```json\n{"colour": "red"}\n```\n\n-# 1/2'
    request = harness.api.requests_to("/chat/completions")[-1].json
    assert request["response_format"] == {"type": "json_object"} and request["n"] == 2

    await harness.discord.click_button(original, paging(original, "next"), harness.alice)
    await shown(harness, original, '```json\n{"colour": "blue"}\n```')

    # Alternatives live in memory: after a restart, their buttons say so.
    await harness.stop_bot()
    await harness.start_bot()
    pressed = await harness.discord.click_button(original, paging(original, "prev"), harness.alice)
    assert await harness.told(pressed) == "⚠️ This button no longer works."


async def test_regenerate_of_a_json_answer_answers_in_json_again(harness: Harness) -> None:
    harness.api.script(Reply(text='{"colour": "red"}'), Reply(text='{"colour": "blue"}'))
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "A colour", "format": "json"}, channel=harness.general
    )
    answer = await last_message(harness, interaction, "```")
    (regenerate,) = custom_ids(answer)
    assert regenerate.startswith("answer:regenerate:") and regenerate.endswith(":json")

    await harness.discord.click_button(answer, regenerate, harness.alice)
    await harness.discord.wait_for(
        lambda: any(
            latest(m) == '```json\n{"colour": "blue"}\n```' for m in harness.bot_messages()
        ),
        timeout=10,
    )
    request = harness.api.requests_to("/chat/completions")[-1].json
    assert request["response_format"] == {"type": "json_object"}

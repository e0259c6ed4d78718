"""/image and /edit end to end: the real bot, the fake Discord and the fake API."""

from __future__ import annotations

import asyncio
import io
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from bot.db.engine import create_engine, create_sessionmaker
from bot.db.repository import ConversationStore
from bot.db.usage_store import UsageStore
from cogs.sinks import DiscordLimits
from tests.fakes.api import Fail, Hang, ImageReply, tiny_png
from tests.fakes.discord import (
    FakeDiscordConfig,
    InteractionRecord,
    MessageRecord,
    Perm,
    UploadFile,
)
from tests.harness import Harness, custom_ids, running_harness, shown_to, sqlite_url


def picture(width: int = 64, height: int = 64, *, fmt: str = "PNG", seed: int = 1) -> bytes:
    """A small image with some detail, so that encoders cannot make it trivially small."""
    generator = random.Random(seed)
    image = Image.new("RGB", (width, height))
    image.putdata([(generator.randrange(256), 90, 160) for _ in range(width * height)])
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def transparent_mask(width: int = 64, height: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (width, height), (0, 0, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    limits = DiscordLimits(progress_interval=0.2)
    async with running_harness(sqlite_url(tmp_path), limits=limits) as harness:
        await harness.start_bot()
        yield harness


async def delivered(harness: Harness, interaction: InteractionRecord) -> MessageRecord:
    """Wait until the interaction's message carries images, and return it: the response to a
    command, a followup to a button (whose original is the message it is on)."""

    def done() -> MessageRecord | None:
        shown = interaction.followups if interaction.custom_id else [interaction.original]
        return next((m for m in shown if m is not None and m.versions[-1].attachments), None)

    message = await harness.discord.wait_for(done, timeout=10)
    assert message is not None
    return message


async def again_button(harness: Harness, message: MessageRecord) -> str:
    """The Regenerate button, which appears once the images are remembered."""

    def found() -> str | None:
        return next((c for c in custom_ids(message) if c.startswith("image:again:")), None)

    await harness.discord.wait_for(lambda: found() is not None, timeout=5)
    button = found()
    assert button is not None
    return button


def attached(message: MessageRecord) -> list[bytes]:
    return [stored.data for stored in message.attachment_files]


async def sentence(harness: Harness, interaction: InteractionRecord) -> str:
    """The sentence the person is told, after any progress shown before it."""
    await harness.discord.wait_for(
        lambda: (shown_to(interaction) or "").startswith("⚠️"), timeout=10
    )
    return await harness.told(interaction)


@pytest.mark.parametrize("response_format", ["b64_json", "url"])
async def test_image_attaches_exactly_what_the_api_made(
    harness: Harness, response_format: str
) -> None:
    made = picture(seed=7)
    harness.api.script(
        ImageReply(
            response_format=response_format, data=made, revised_prompt="A red fox, watercolour"
        )
    )
    interaction = await harness.discord.invoke_command("image", {"prompt": "a fox"})
    message = await delivered(harness, interaction)
    assert attached(message) == [made]
    assert "Revised prompt: A red fox, watercolour" in message.versions[-1].content
    assert (await again_button(harness, message)).startswith("image:again:")
    request = harness.api.requests_to("/images/generations")[-1]
    assert request.json["prompt"] == "a fox" and request.json["model"] == "gpt-image-1"
    assert "response_format" not in request.json


async def test_count_three_with_a_one_image_model_makes_three_requests(harness: Harness) -> None:
    made = [picture(seed=n) for n in (21, 22, 23)]
    harness.api.script(*(ImageReply(data=data) for data in made))
    interaction = await harness.discord.invoke_command(
        "image", {"prompt": "three cats", "model": "dall-e-3", "count": 3, "quality": "hd"}
    )
    message = await delivered(harness, interaction)
    # Each image once (the requests run side by side, so their order may vary).
    assert sorted(attached(message)) == sorted(made)
    requests = harness.api.requests_to("/images/generations")
    assert [r.json["n"] for r in requests] == [1, 1, 1]
    assert {r.json["quality"] for r in requests} == {"hd"}
    # dall-e models are asked for base64; gpt-image models refuse the field.
    assert {r.json["response_format"] for r in requests} == {"b64_json"}


async def test_a_size_the_model_does_not_take_is_refused_before_any_request(
    harness: Harness,
) -> None:
    interaction = await harness.discord.invoke_command(
        "image", {"prompt": "x", "model": "dall-e-3", "size": "256x256"}
    )
    assert "dall-e-3 makes images of 1024x1024, 1792x1024 or 1024x1792" in await sentence(
        harness, interaction
    )
    assert harness.api.requests_to("/images/generations") == []


@pytest.mark.parametrize("command", ["image", "edit"])
async def test_without_attach_files_images_are_refused_before_paying(
    harness: Harness, command: str
) -> None:
    harness.discord.set_overwrite(harness.general, harness.guild.everyone, deny=Perm.ATTACH_FILES)
    files = {"image": UploadFile("cat.png", picture())} if command == "edit" else None
    interaction = await harness.discord.invoke_command(
        command, {"prompt": "a boat", "model": "dall-e-2"}, attachments=files
    )
    await harness.discord.wait_for(lambda: interaction.original is not None, timeout=5)
    assert interaction.original is not None and interaction.ephemeral
    assert interaction.original.content.startswith(
        "⚠️ I need the Attach Files permission in this channel to "
    )
    assert harness.api.requests == []


async def test_size_choices_follow_the_model(harness: Harness) -> None:
    record = await harness.discord.invoke_autocomplete(
        "image", {"prompt": "x", "model": "dall-e-2", "size": ""}, focused="size"
    )
    await harness.discord.wait_for(lambda: record.autocomplete_choices is not None, timeout=5)
    assert [c["value"] for c in record.autocomplete_choices or []] == [
        "256x256",
        "512x512",
        "1024x1024",
    ]


async def test_progress_shows_the_time_waited(harness: Harness) -> None:
    harness.api.script(Hang(1.0))
    interaction = await harness.discord.invoke_command("image", {"prompt": "slow"})
    await harness.discord.wait_for(
        lambda: interaction.original is not None and interaction.original.content.endswith(" s"),
        timeout=5,
    )
    # From now on each write takes longer than a tick: a tick still running would land
    # after the result.
    harness.discord.config.latency = 0.25
    message = await delivered(harness, interaction)
    contents = [version.content for version in message.versions if version.content]
    assert contents[0].startswith("🎨 Making an image with gpt-image-1")
    assert any(content.endswith(" s") for content in contents[1:-1])
    # No tick lands after the result: from the images on, the caption stays, up to the
    # Regenerate button, the job's last write.
    await again_button(harness, message)
    with_images = [v.content for v in message.versions if v.attachments]
    assert with_images == [v.content for v in message.versions[-len(with_images) :]]
    assert all(content.startswith("**alice**: slow") for content in with_images)


@pytest.mark.parametrize(
    "options",
    [
        {"model": "dall-e-2", "size": "512x512", "count": 2},
        {"model": "dall-e-3", "size": "1792x1024", "quality": "hd"},
    ],
    ids=["dall-e-2", "dall-e-3"],
)
async def test_regenerate_makes_the_same_request_again(
    harness: Harness, options: dict[str, object]
) -> None:
    interaction = await harness.discord.invoke_command("image", {"prompt": "a boat", **options})
    message = await delivered(harness, interaction)
    again = await again_button(harness, message)

    refused = await harness.discord.click_button(message, again, harness.bob)
    await harness.discord.wait_for(lambda: refused.followups, timeout=5)
    assert refused.followups[0].visible_to == harness.bob.id
    assert "Only the person who asked" in refused.followups[0].content
    before = len(harness.api.requests_to("/images/generations"))

    click = await harness.discord.click_button(message, again, harness.alice)
    await delivered(harness, click)
    requests = harness.api.requests_to("/images/generations")
    first, second = requests[0], requests[before]
    for field in ("prompt", "model", "size", "n", "quality"):
        assert first.json.get(field) == second.json.get(field)


async def test_edit_sends_the_image_and_mask_and_then_refines_the_result(
    harness: Harness,
) -> None:
    source, mask = picture(seed=3), transparent_mask()
    made = picture(seed=4)
    harness.api.script(ImageReply(data=made))
    interaction = await harness.discord.invoke_command(
        "edit",
        {"prompt": "add a hat"},
        attachments={
            "image": UploadFile("photo.png", source, "image/png"),
            "mask": UploadFile("mask.png", mask, "image/png"),
        },
    )
    message = await delivered(harness, interaction)
    assert attached(message) == [made]
    request = harness.api.requests_to("/images/edits")[-1]
    assert request.parts_named("image")[0].data == source
    assert request.parts_named("mask")[0].data == mask
    assert request.parts_named("prompt")[0].data == b"add a hat"

    # Without an image, the newest image of the conversation is edited.
    follow_up = await harness.discord.invoke_command("edit", {"prompt": "make the hat red"})
    await delivered(harness, follow_up)
    refined = harness.api.requests_to("/images/edits")[-1]
    assert refined.parts_named("image")[0].data == made


async def test_dall_e_2_gets_a_square_png(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command(
        "edit",
        {"prompt": "wider", "model": "dall-e-2"},
        attachments={"image": UploadFile("photo.jpg", picture(96, 48, fmt="JPEG"), "image/jpeg")},
    )
    await delivered(harness, interaction)
    request = harness.api.requests_to("/images/edits")[-1]
    sent = request.parts_named("image")[0].data
    with Image.open(io.BytesIO(sent)) as image:
        assert image.format == "PNG" and image.mode == "RGBA"
        assert image.width == image.height
    # A mask that lets the picture change goes along, or dall-e-2 would change only padding.
    with Image.open(io.BytesIO(request.parts_named("mask")[0].data)) as mask:
        assert mask.size == (image.width, image.height)


BAD_FILES = [
    (UploadFile("notes.png", b"just some text, honestly", "image/png"), "not an image"),
    (UploadFile("broken.png", picture(64, 64)[:400], "image/png"), "damaged"),
    (UploadFile("anim.gif", picture(fmt="GIF"), "image/gif"), "GIF"),
    (UploadFile("huge.png", b"\x89PNG" + bytes(30 * 1024 * 1024), "image/png"), "limit is 20 MB"),
]


@pytest.mark.parametrize(("upload", "expected"), BAD_FILES, ids=["text", "corrupt", "gif", "30mb"])
async def test_bad_images_get_a_sentence_and_no_request(
    tmp_path: Path, upload: UploadFile, expected: str
) -> None:
    config = FakeDiscordConfig(attachment_size_limit=64 * 1024 * 1024)
    async with running_harness(sqlite_url(tmp_path), config=config) as harness:
        await harness.start_bot()
        interaction = await harness.discord.invoke_command(
            "edit", {"prompt": "fix it"}, attachments={"image": upload}
        )
        assert expected in await sentence(harness, interaction)
        assert harness.api.requests_to("/images/edits") == []


async def test_a_mask_of_another_size_is_refused(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command(
        "edit",
        {"prompt": "fix it"},
        attachments={
            "image": UploadFile("photo.png", picture(64, 64), "image/png"),
            "mask": UploadFile("mask.png", transparent_mask(32, 32), "image/png"),
        },
    )
    assert "mask must be the same size" in await sentence(harness, interaction)
    assert harness.api.requests_to("/images/edits") == []


async def test_an_image_over_the_upload_limit_arrives_recompressed(tmp_path: Path) -> None:
    config = FakeDiscordConfig(attachment_size_limit=40 * 1024)
    async with running_harness(sqlite_url(tmp_path), config=config) as harness:
        await harness.start_bot()
        big = picture(400, 300, seed=9)
        assert len(big) > 40 * 1024
        harness.api.script(ImageReply(data=big))
        interaction = await harness.discord.invoke_command("image", {"prompt": "detailed"})
        message = await delivered(harness, interaction)
        [data] = attached(message)
        assert len(data) <= 40 * 1024
        with Image.open(io.BytesIO(data)) as image:
            assert image.format in ("JPEG", "WEBP")


async def test_an_image_that_outlives_the_token_arrives_all_the_same(tmp_path: Path) -> None:
    config = FakeDiscordConfig(interaction_token_lifetime=1.5)
    limits = DiscordLimits(progress_interval=0.2, token_lifetime=1.5, token_margin=0.5)
    async with running_harness(sqlite_url(tmp_path), config=config, limits=limits) as harness:
        await harness.start_bot()
        harness.api.script(Hang(2.0))  # then the fake's own first image
        interaction = await harness.discord.invoke_command("image", {"prompt": "patience"})
        message = await delivered(harness, interaction)
        assert attached(message) == [tiny_png(0)]
        await again_button(harness, message)  # shown once the images are remembered
        assert interaction.errors == []  # nothing was sent with the dead token


async def test_an_image_whose_token_is_refused_early_arrives_all_the_same(
    harness: Harness,
) -> None:
    harness.api.script(Hang(1.0))  # then the fake's own first image
    interaction = await harness.discord.invoke_command("image", {"prompt": "patience"})
    await harness.discord.wait_for(
        lambda: interaction.original is not None and interaction.original.content, timeout=5
    )
    interaction.token_lifetime = 0  # Discord refuses the token from now on (401, 50027)
    message = await delivered(harness, interaction)
    assert attached(message) == [tiny_png(0)]
    await again_button(harness, message)  # shown once the images are remembered


async def test_images_are_remembered_in_the_conversation_and_the_usage(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command("image", {"prompt": "two owls", "count": 2})
    message = await delivered(harness, interaction)
    await again_button(harness, message)  # shown once the images are remembered

    engine = create_engine(harness.database_url)
    try:
        sessions = create_sessionmaker(engine)
        totals = await UsageStore(sessions).totals(
            since=datetime.now(UTC) - timedelta(hours=1), user_id=harness.alice.id
        )
        assert totals.images == 2
        store = ConversationStore(sessions)
        conversation = await store.find(harness.general.id)
        assert conversation is not None
        newest = await store.newest_image(conversation.id)
        assert newest is not None and newest.prompt == "two owls"
        assert newest.message_id == message.id
    finally:
        await engine.dispose()

    # The chat knows what was drawn.
    await harness.answer_to(await harness.mention("What did you draw?"))
    history = harness.sent_history()
    assert history[1] == "alice: /image two owls"
    assert history[2].startswith("[2 image(s) made with gpt-image-1")


async def test_images_as_polled_tasks(tmp_path: Path) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot(image_async_tasks=True, image_task_poll_seconds=0.1)
        made = picture(seed=12)
        harness.api.script(ImageReply(data=made, task_seconds=0.5))
        interaction = await harness.discord.invoke_command("image", {"prompt": "patient fox"})
        message = await delivered(harness, interaction)
        assert attached(message) == [made]
        assert harness.api.requests_to("/images/generations")[-1].json["async"] is True
        assert len(harness.api.requests_to("/tasks")) >= 3  # polled until the task finished

        harness.api.script(ImageReply(task_error="forbidden"))
        refused = await harness.discord.invoke_command("image", {"prompt": "something banned"})
        assert "content policy" in await sentence(harness, refused)


async def test_edit_without_an_image_takes_this_conversations_newest(harness: Harness) -> None:
    mine, theirs = picture(seed=31), picture(seed=32)
    harness.api.script(ImageReply(data=mine))
    await delivered(harness, await harness.discord.invoke_command("image", {"prompt": "here"}))
    harness.api.script(ImageReply(data=theirs))
    elsewhere = await harness.discord.invoke_command(
        "image", {"prompt": "there"}, channel=harness.random
    )
    await delivered(harness, elsewhere)

    edit = await harness.discord.invoke_command(
        "edit", {"prompt": "refine"}, channel=harness.general
    )
    await delivered(harness, edit)
    assert harness.api.requests_to("/images/edits")[-1].parts_named("image")[0].data == mine


async def test_one_failed_request_cancels_the_others(harness: Harness) -> None:
    harness.api.script(Hang(5), Fail(403, "forbidden"), Hang(5))
    interaction = await harness.discord.invoke_command(
        "image", {"prompt": "three", "model": "dall-e-3", "count": 3}
    )
    assert "content policy" in await sentence(harness, interaction)
    requests = harness.api.requests_to("/images/generations")
    slow = [r for r in requests if not r.completed]
    for request in slow:
        await asyncio.wait_for(request.disconnected.wait(), 5)
    # The third request may be cancelled before it is even sent.
    assert len(requests) - len(slow) == 1 and 1 <= len(slow) <= 2


async def test_a_job_running_at_shutdown_ends_with_a_sentence(harness: Harness) -> None:
    harness.api.script(Hang(10))
    interaction = await harness.discord.invoke_command("image", {"prompt": "slow"})
    await harness.discord.wait_for(
        lambda: bool(harness.api.requests_to("/images/generations")), timeout=5
    )
    await harness.stop_bot()
    assert interaction.original is not None
    assert interaction.original.versions[-1].content == (
        "⚠️ The bot is restarting; ask again in a minute."
    )

"""The image service through its ports: an in-memory sink, a scripted API, a real database.

Each test waits on events, never on the clock, so each is deterministic and quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import RESTARTING, Person, RequestKind
from bot.ai import ContentRefused
from bot.db.models import ConversationKind
from bot.db.repository import ConversationStore
from bot.db.usage_store import UsageStore
from bot.errors import UserError
from bot.images.delivery import Repeat
from bot.places import Place
from bot.server_config import History, Scope, Setting
from tests.fakes.api import tiny_png
from tests.helpers import WAIT, ImageRig, MemoryImageSink, admission_on, image_rig

pytestmark = pytest.mark.timeout(10)
BUSY = "You already have images being made; wait for them to finish."


@pytest.fixture
async def rig(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[ImageRig]:
    async with image_rig(
        ConversationStore(sessions), UsageStore(sessions), admission_on(sessions)
    ) as rig:
        yield rig


async def images_recorded(rig: ImageRig) -> int:
    since = datetime.now(UTC) - timedelta(hours=1)
    return (await rig.usage.totals(since=since)).images


async def history(rig: ImageRig, channel_id: int = 10) -> list[tuple[str, str]]:
    conversation = await rig.conversations.find(channel_id)
    if conversation is None:
        return []
    turns = await rig.conversations.newest_turns(conversation.id, token_budget=10**9)
    return [(turn.role, turn.content) for turn in turns]


async def test_a_job_is_delivered_remembered_and_offered_again(rig: ImageRig) -> None:
    sink = MemoryImageSink()
    making = rig.make("a red boat", sink, count=2)
    call = await rig.api.call(1)
    assert (call.prompt, call.model, call.n) == ("a red boat", "gpt-image-1", 2)
    assert sink.progress == "🎨 Making 2 images with gpt-image-1…"
    call.answer(tiny_png(1), tiny_png(2), revised_prompt="a red sailing boat")
    await asyncio.wait_for(making, WAIT)

    assert [file.filename for file in sink.files] == ["image-1.png", "image-2.png"]
    assert sink.caption is not None and "a red sailing boat" in sink.caption
    assert sink.failure is None
    assert sink.repeat == Repeat(2, None, None)
    assert await history(rig) == [
        ("user", "person1: /image a red boat"),
        ("assistant", "[2 image(s) made with gpt-image-1: a red sailing boat]"),
    ]
    conversation = await rig.conversations.find(10)
    assert conversation is not None
    newest = await rig.conversations.newest_image(conversation.id)
    assert newest is not None and newest.prompt == "a red boat"
    assert await images_recorded(rig) == 2
    # What was remembered is enough to make them again.
    place = Place(10, 1, ConversationKind.CHANNEL)
    again = await rig.service.admit_again(
        newest.message_id, place, Person(1), Repeat(1, None, None), moderator=False
    )
    assert (again.prompt, again.model.name, again.count) == ("a red boat", "gpt-image-1", 1)
    with pytest.raises(UserError, match="Only the person who asked"):
        await rig.service.admit_again(
            newest.message_id, place, Person(2), Repeat(1, None, None), moderator=False
        )


async def test_a_failure_is_one_sentence_with_nothing_remembered_or_counted(
    rig: ImageRig,
) -> None:
    sink = MemoryImageSink()
    making = rig.make("a red boat", sink)
    (await rig.api.call(1)).fail(ContentRefused("refused: moderation"))
    await asyncio.wait_for(making, WAIT)

    assert sink.failure == ContentRefused.user_message
    assert sink.files == [] and sink.repeat is None
    assert await history(rig) == []
    assert await images_recorded(rig) == 0


async def test_a_second_job_waits_for_the_first_and_a_third_is_refused(rig: ImageRig) -> None:
    first, second, third = MemoryImageSink(), MemoryImageSink(), MemoryImageSink()
    making_first = rig.make("one", first)
    call = await rig.api.call(1)
    making_second = rig.make("two", second)
    await asyncio.wait_for(second.started.wait(), WAIT)  # and now waits for its turn
    await asyncio.wait_for(rig.make("three", third), WAIT)

    assert third.failure == BUSY
    assert len(rig.api.calls) == 1  # the second has not asked yet
    # Someone else is not held up by them.
    other = MemoryImageSink()
    rig.make("four", other, author_id=2)
    assert (await rig.api.call(2)).prompt == "four"

    call.answer(tiny_png(1))
    await asyncio.wait_for(making_first, WAIT)
    assert (await rig.api.call(3)).prompt == "two"
    rig.api.calls[2].answer(tiny_png(2))
    await asyncio.wait_for(making_second, WAIT)
    assert first.failure is None and second.failure is None
    assert len(second.files) == 1


async def test_shutdown_ends_a_running_job_with_its_sentence(rig: ImageRig) -> None:
    sink = MemoryImageSink()
    making = rig.make("a red boat", sink)
    await rig.api.call(1)
    await asyncio.wait_for(rig.service.shutdown(), WAIT)

    assert making.cancelled()
    assert sink.failure == RESTARTING
    assert await history(rig) == []
    assert await images_recorded(rig) == 0


async def test_shutting_down_refuses_waiting_and_new_jobs_and_lets_a_running_one_finish(
    rig: ImageRig,
) -> None:
    running, waiting = MemoryImageSink(), MemoryImageSink()
    making = rig.make("one", running)
    call = await rig.api.call(1)
    queued = rig.make("two", waiting)
    await asyncio.wait_for(waiting.started.wait(), WAIT)  # and now waits for the first

    rig.admission.restarting = True
    rig.service.begin_shutdown()
    await asyncio.wait_for(asyncio.shield(queued), WAIT)  # told at once
    assert waiting.failure == RESTARTING
    with pytest.raises(UserError, match=RESTARTING):
        await asyncio.wait_for(rig.make("three", MemoryImageSink(), author_id=2), WAIT)
    assert rig.service.jobs_running == 1

    call.answer(tiny_png(1))
    await asyncio.wait_for(rig.service.jobs_ended(), WAIT)
    await asyncio.wait_for(making, WAIT)
    assert running.failure is None and len(running.files) == 1
    assert len(rig.api.calls) == 1  # nothing else was paid for
    assert await images_recorded(rig) == 1
    assert [role for role, _ in await history(rig)] == ["user", "assistant"]


async def test_an_edit_without_an_image_in_the_conversation_asks_for_one(
    rig: ImageRig,
) -> None:
    sink = MemoryImageSink()
    await asyncio.wait_for(rig.make("make it blue", sink, kind=RequestKind.EDIT), WAIT)

    assert sink.failure == "There is no image in this conversation yet: attach one to edit."
    assert rig.api.calls == []


async def test_images_made_again_stay_in_the_conversation_they_are_in(rig: ImageRig) -> None:
    """With `history personal`, a moderator making someone's images again adds them to that
    person's conversation, not their own."""
    channel = Place(10, 1, ConversationKind.CHANNEL)
    await rig.config.change(channel, Setting.HISTORY, History.PERSONAL, Scope.CHANNEL, by=9)
    making = rig.make("a cat", MemoryImageSink())
    (await rig.api.call(1)).answer(tiny_png(1))
    await asyncio.wait_for(making, WAIT)
    conversation = await rig.conversations.find(10, owner_id=1)
    assert conversation is not None
    newest = await rig.conversations.newest_image(conversation.id)
    assert newest is not None
    again = await rig.service.admit_again(
        newest.message_id, channel, Person(2), Repeat(1, None, None), moderator=True
    )
    assert again.place.owner_id == 1

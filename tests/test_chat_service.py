"""The chat service through its ports: an in-memory delivery, a scripted stream, a real database.

Each race is driven by events, never by sleeping, so each test is deterministic and quick.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import RESTARTING, Admitted, Person, Request, RequestKind
from bot.ai import Usage
from bot.conversation.context import Question
from bot.conversation.runs import Slots, StopResult
from bot.conversation.service import QUEUED, WAITING, Ask
from bot.db.models import ConversationKind, TurnStatus
from bot.db.repository import ConversationStore, NewTurn, StoredTurn
from bot.db.usage_store import UsageStore
from bot.delivery.reply import CURSOR, Controls, Paging, Shown
from bot.errors import UserError
from bot.places import Place
from bot.server_config import History, Scope, Setting
from tests.helpers import WAIT, ChatRig, MemorySink, admission_on, chat_rig

CHANNEL = Place(10, 1, ConversationKind.CHANNEL)

pytestmark = pytest.mark.timeout(10)


class GatedStore(ConversationStore):
    """The real store, but storing a question, or finishing an answer, waits at a gate the
    test may close."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessions)
        self.storing = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.finishing = asyncio.Event()
        self.finish_gate = asyncio.Event()
        self.finish_gate.set()
        self.calls: list[str] = []

    async def append_turn(self, conversation_id: int, turn: NewTurn) -> int:
        turn_id = await super().append_turn(conversation_id, turn)
        if turn.role == "user":
            self.storing.set()
            await self.gate.wait()
        return turn_id

    async def finish_turn(self, turn_id: int, **fields: Any) -> None:
        self.finishing.set()
        await self.finish_gate.wait()
        await super().finish_turn(turn_id, **fields)
        self.calls.append(f"finished {turn_id}")

    async def get_turn(self, turn_id: int) -> StoredTurn | None:
        self.calls.append(f"looked up {turn_id}")
        return await super().get_turn(turn_id)


@pytest.fixture
async def store(sessions: async_sessionmaker[AsyncSession]) -> GatedStore:
    return GatedStore(sessions)


@pytest.fixture
async def rig(
    store: GatedStore, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[ChatRig]:
    async with chat_rig(store, UsageStore(sessions), admission_on(sessions)) as rig:
        yield rig


async def history(rig: ChatRig, channel_id: int = 10) -> list[tuple[str, str, TurnStatus]]:
    conversation = await rig.conversations.find(channel_id)
    if conversation is None:
        return []
    turns = await rig.conversations.newest_turns(conversation.id, token_budget=10**9)
    return [(turn.role, turn.content, turn.status) for turn in turns]


def stop_key(sink: MemorySink) -> str:
    key = sink.latest().controls.stop_key
    assert key is not None
    return key


async def test_an_answer_streams_and_is_stored(rig: ChatRig) -> None:
    sink = MemorySink()
    asking = rig.ask("hi", sink)
    stream = await rig.api.stream(1)
    stream.send("Hello")
    await sink.wait_for(lambda s: s.latest().content.startswith("Hello"))
    stream.send(" there.")
    stream.end()
    await asyncio.wait_for(asyncio.shield(asking), WAIT)
    assert sink.latest().content == "Hello there."
    assert sink.latest().controls.regenerate_turn is not None
    assert await history(rig) == [
        ("user", "person1: hi", TurnStatus.COMPLETE),
        ("assistant", "Hello there.", TurnStatus.COMPLETE),
    ]


async def test_stop_while_waiting_ends_it_at_once_and_stores_nothing(rig: ChatRig) -> None:
    first, second = MemorySink(), MemorySink()
    answering = rig.ask("first", first, author_id=1)
    stream = await rig.api.stream(1)
    waiting = rig.ask("second", second, author_id=2)
    await second.wait_for(lambda s: s.latest().content == WAITING)

    result = rig.service.stop(stop_key(second), user_id=2, can_manage=False, by="person2")
    assert result is StopResult.STOPPED
    await asyncio.wait_for(asyncio.shield(waiting), WAIT)  # ended before the first did
    assert second.latest().content == "Stopped by person2."
    assert second.latest().controls.stop_key is None

    stream.send("One.")
    stream.end()
    await asyncio.wait_for(asyncio.shield(answering), WAIT)
    assert first.latest().content == "One."
    assert len(rig.api.streams) == 1  # the stopped question was never asked
    assert [content for _, content, _ in await history(rig)] == ["person1: first", "One."]


async def test_stop_while_its_question_is_being_stored_stores_nothing(
    rig: ChatRig, store: GatedStore
) -> None:
    first, second = MemorySink(), MemorySink()
    rig.ask("first", first, author_id=1)
    stream = await rig.api.stream(1)
    waiting = rig.ask("second", second, author_id=2)
    await second.wait_for(lambda s: s.latest().content == WAITING)
    store.storing.clear()
    store.gate.clear()
    stream.send("One.")
    stream.end()  # the second question's turn comes: it is being stored...
    await asyncio.wait_for(store.storing.wait(), WAIT)
    rig.service.stop(stop_key(second), user_id=2, can_manage=False, by="person2")  # ...Stop
    store.gate.set()
    await asyncio.wait_for(asyncio.shield(waiting), WAIT)
    assert second.latest().content == "Stopped by person2."
    assert [content for _, content, _ in await history(rig)] == ["person1: first", "One."]
    assert len(rig.api.streams) == 1  # the stopped question was never sent


async def test_regenerate_pressed_the_moment_it_shows_works(
    rig: ChatRig, store: GatedStore
) -> None:
    store.finish_gate.clear()  # the answer is shown complete, but not yet stored as such
    sink = MemorySink()
    pressed: list[asyncio.Task[Ask]] = []

    def press(shown: Shown) -> None:
        # The button shows with the answer's last write, before the answer is stored as
        # finished: the press comes in that moment.
        turn = shown.controls.regenerate_turn
        if turn is not None and not pressed:
            regenerating = rig.service.regeneration(
                turn, place=CHANNEL, person=Person(1), can_manage=False
            )
            pressed.append(asyncio.create_task(regenerating))

    sink.on_show = press
    rig.ask("hi", sink)
    stream = await rig.api.stream(1)
    stream.send("Hello.")
    stream.end()
    await sink.wait_for(lambda s: bool(pressed))
    await asyncio.wait_for(store.finishing.wait(), WAIT)
    store.finish_gate.set()
    again = await asyncio.wait_for(pressed[0], WAIT)
    turn = sink.latest().controls.regenerate_turn
    assert again.replacing_turn == turn
    # The press waited for the answer to be stored before looking it up.
    assert store.calls == [f"finished {turn}", f"looked up {turn}"]
    assert again.question.content == "person1: hi"


async def test_deleting_the_answer_mid_stream_lets_the_upstream_go(rig: ChatRig) -> None:
    sink = MemorySink()
    asking = rig.ask("tell me more", sink)
    stream = await rig.api.stream(1)
    stream.send("Once upon")
    await sink.wait_for(lambda s: "Once upon" in s.latest().content)
    sink.gone = True  # the person deleted the message
    stream.send(" a time")
    await asyncio.wait_for(stream.closed.wait(), WAIT)
    await asyncio.wait_for(asyncio.shield(asking), WAIT)
    (_, (_, content, status)) = await history(rig)
    assert status is TurnStatus.STOPPED
    assert content.startswith("Once upon")


async def test_shutdown_ends_answers_with_a_notice_and_marks_them(rig: ChatRig) -> None:
    sink = MemorySink()
    asking = rig.ask("long story", sink)
    stream = await rig.api.stream(1)
    stream.send("It began")
    await sink.wait_for(lambda s: "It began" in s.latest().content)
    await asyncio.wait_for(rig.service.shutdown(grace=WAIT), WAIT)
    assert asking.done()
    assert stream.closed.is_set()
    assert sink.latest().content == f"It began\n\n-# {RESTARTING}"
    assert (await history(rig))[-1] == ("assistant", "It began", TurnStatus.INTERRUPTED)


def begin_shutdown(rig: ChatRig) -> None:
    """As the bot begins to shut down."""
    rig.admission.restarting = True
    rig.service.begin_shutdown()


async def test_shutting_down_refuses_what_was_not_asked_upstream_and_lets_answers_finish(
    store: GatedStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admission = admission_on(sessions)
    async with chat_rig(store, UsageStore(sessions), admission, max_concurrent_requests=1) as rig:
        running, in_queue, in_turn = MemorySink(), MemorySink(), MemorySink()
        answering = rig.ask("long story", running, author_id=1, channel_id=10)
        stream = await rig.api.stream(1)
        stream.send("It began")
        queued = rig.ask("wait for a slot", in_queue, author_id=2, channel_id=20)
        await in_queue.wait_for(lambda s: s.latest().content == QUEUED)
        waiting = rig.ask("wait for the first", in_turn, author_id=3, channel_id=10)
        await in_turn.wait_for(lambda s: s.latest().content == WAITING)
        admitted_before = await rig.service.admit(
            Request(RequestKind.QUESTION, Place(30, 1, ConversationKind.CHANNEL), Person(4))
        )

        begin_shutdown(rig)
        # Those not asked upstream yet are told at once, and leave no trace.
        await asyncio.wait_for(asyncio.shield(asyncio.gather(queued, waiting)), WAIT)
        for sink in (in_queue, in_turn):
            assert sink.latest().content == f"⚠️ {RESTARTING}"
            assert sink.latest().controls.stop_key is None
        assert await history(rig, channel_id=20) == []
        # New questions are refused at admission, and one admitted a moment before is too.
        with pytest.raises(UserError, match=RESTARTING):
            await rig.service.admit(Request(RequestKind.QUESTION, CHANNEL, Person(5)))
        ask = Ask(admitted_before, admitted_before.place, "person4", Question("person4: hi"))
        with pytest.raises(UserError, match=RESTARTING):
            await rig.service.ask(ask, MemorySink())
        assert rig.service.answers_running == 1

        # The answer being written goes on to its end.
        stream.send(", and it ended.")
        stream.end()
        await asyncio.wait_for(rig.service.answers_ended(), WAIT)
        await asyncio.wait_for(asyncio.shield(answering), WAIT)
        assert running.latest().content == "It began, and it ended."
        assert await history(rig) == [
            ("user", "person1: long story", TurnStatus.COMPLETE),
            ("assistant", "It began, and it ended.", TurnStatus.COMPLETE),
        ]
        assert len(rig.api.streams) == 1  # nothing else was paid for


async def test_an_answer_still_running_at_the_end_of_the_grace_is_cut_and_marked(
    rig: ChatRig,
) -> None:
    sink = MemorySink()
    asking = rig.ask("long story", sink)
    stream = await rig.api.stream(1)
    stream.send("It began")
    await sink.wait_for(lambda s: "It began" in s.latest().content)
    begin_shutdown(rig)
    assert rig.service.answers_running == 1 and not asking.done()

    await asyncio.wait_for(rig.service.shutdown(grace=WAIT), WAIT)  # the grace is over
    assert asking.done() and stream.closed.is_set()
    assert sink.latest().content == f"It began\n\n-# {RESTARTING}"
    assert await history(rig) == [
        ("user", "person1: long story", TurnStatus.COMPLETE),
        ("assistant", "It began", TurnStatus.INTERRUPTED),
    ]


async def test_a_person_may_have_three_questions_waiting_and_no_more(rig: ChatRig) -> None:
    sinks = [MemorySink() for _ in range(3)]
    rig.ask("first", sinks[0])
    stream = await rig.api.stream(1)
    stream.send("Working on it")
    rig.ask("second", sinks[1])
    rig.ask("third", sinks[2])
    for sink in sinks[1:]:
        await sink.wait_for(lambda s: s.latest().content == WAITING)
    busy = "You already have questions waiting for answers; wait for them or press Stop."
    place = Place(10, 1, ConversationKind.CHANNEL)
    with pytest.raises(UserError, match=busy):
        await rig.service.admit(Request(RequestKind.QUESTION, place, Person(1), prompt_chars=5))
    # Someone else is not held up by it.
    assert (await rig.service.admit(Request(RequestKind.QUESTION, place, Person(2)))).model


async def test_regenerate_is_refused_at_admission_when_the_person_is_busy(
    rig: ChatRig, store: GatedStore
) -> None:
    """Refused before anything is changed (the old answer keeps its button)."""
    done = MemorySink()
    answering = rig.ask("hi", done)
    first = await rig.api.stream(1)
    first.send("Hello.")
    first.end()
    await asyncio.wait_for(asyncio.shield(answering), WAIT)
    turn = done.latest().controls.regenerate_turn
    assert turn is not None
    rig.ask("a", MemorySink(), channel_id=20)
    await rig.api.stream(2)
    waiting = [MemorySink(), MemorySink()]
    for text, sink in zip("bc", waiting, strict=True):
        rig.ask(text, sink, channel_id=20)
        await sink.wait_for(lambda s: s.latest().content == WAITING)
    with pytest.raises(UserError, match="You already have questions waiting"):
        await rig.service.regeneration(turn, place=CHANNEL, person=Person(1), can_manage=False)


async def test_people_s_own_conversations_in_one_channel_do_not_wait_for_each_other(
    rig: ChatRig,
) -> None:
    await rig.config.change(CHANNEL, Setting.HISTORY, History.PERSONAL, Scope.CHANNEL, by=9)
    first, second = MemorySink(), MemorySink()
    rig.ask("mine", first, author_id=1)
    await rig.api.stream(1)
    rig.ask("mine too", second, author_id=2)
    await rig.api.stream(2)  # while the first is still being written
    assert all(shown.content != WAITING for shown in second.messages.get(0, []))


@pytest.fixture
async def thinking_rig(
    store: GatedStore, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[tuple[ChatRig, list[float]]]:
    """A rig whose clock of thinking time the test moves (`now[0]`)."""
    now = [0.0]
    async with chat_rig(
        store,
        UsageStore(sessions),
        admission_on(sessions),
        monotonic=lambda: now[0],
        thinking_tick=0.01,
    ) as rig:
        yield rig, now


async def test_a_thinking_model_shows_how_long_and_its_summary_until_the_answer(
    thinking_rig: tuple[ChatRig, list[float]],
) -> None:
    rig, now = thinking_rig
    sink = MemorySink()
    asking = rig.ask("why?", sink)
    stream = await rig.api.stream(1)
    now[0] = 5.0
    await sink.wait_for(lambda s: s.latest().content == "💭 Thinking… 5 s")
    assert sink.latest().controls.stop_key is not None  # it can be stopped meanwhile
    stream.send("\n")  # whitespace is no answer yet (JSON answers, for one, may start so)
    now[0] = 40.0
    await sink.wait_for(lambda s: s.latest().content == "💭 Thinking… 40 s")

    stream.send("**Weighing it**\n\nFirst the ", reasoning=True)
    stream.send("facts.", reasoning=True)
    summary = "-# **Weighing it**\n-# First the facts.\n💭 Thinking… 40 s"
    await sink.wait_for(lambda s: s.latest().content == summary)
    now[0] = 64.0
    await sink.wait_for(lambda s: s.latest().content.endswith("Thinking… 1 min 4 s"))

    stream.send("Because.")
    stream.end()
    await asyncio.wait_for(asyncio.shield(asking), WAIT)
    assert sink.latest().content == "Because."  # the answer replaces it all
    assert len(sink.messages) == 1
    question, answer = [content for _, content, _ in await history(rig)]
    assert (question, answer.strip()) == ("person1: why?", "Because.")


# Alternatives and JSON.


def paging_of(sink: MemorySink) -> Paging:
    paging = sink.latest().controls.paging
    assert paging is not None
    return paging


async def test_alternatives_page_and_only_the_kept_one_is_remembered(
    rig: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    sink = MemorySink()
    asking = rig.ask("Name a colour", sink, alternatives=3)
    stream = await rig.api.stream(1)
    assert stream.options["n"] == 3
    long_first = " ".join(["Red."] * 600)  # two messages
    stream.send("Blue.", choice=1)
    stream.send(long_first, choice=0)
    await sink.wait_for(lambda s: s.latest(0).content.startswith("Red."))
    assert "Blue" not in str(sink.messages)  # the others wait for the end
    stream.send("Green.", choice=2)
    stream.end(usage=Usage(prompt_tokens=20, completion_tokens=30, total_tokens=50))
    await asyncio.wait_for(asking, WAIT)

    assert len(sink.messages) == 2
    assert sink.latest().content.endswith("Red.\n\n-# 1/3")
    paging = paging_of(sink)
    assert sink.latest().controls.regenerate_turn is not None
    assert (await history(rig))[-1][1] == long_first
    # Usage counts all three answers, as the API reports them together.
    assert (await rig.usage.spent(1, 1, since=date.today())).tokens == 50

    # Someone else may not choose; the asker pages on, the answer in fewer messages.
    with pytest.raises(UserError):
        await rig.service.turn_page(paging.key, 0, "next", user_id=2, can_manage=False)
    await rig.service.turn_page(paging.key, 0, "next", user_id=1, can_manage=False)
    assert list(sink.messages) == [0]  # the second message went
    assert sink.latest().content == "Blue.\n\n-# 2/3"
    await rig.service.turn_page(paging.key, 1, "next", user_id=1, can_manage=False)
    assert sink.latest().content == "Green.\n\n-# 3/3"
    await rig.service.turn_page(paging.key, 2, "next", user_id=1, can_manage=False)
    assert len(sink.messages) == 2 and sink.latest(0).content.startswith("Red.")
    await rig.service.turn_page(paging.key, 0, "prev", user_id=1, can_manage=False)
    assert sink.latest().content == "Green.\n\n-# 3/3"

    # A moderator may keep one: it replaces the stored answer, and the paging ends.
    await rig.service.turn_page(paging.key, 2, "keep", user_id=2, can_manage=True)
    assert sink.latest().content == "Green."
    assert sink.latest().controls.paging is None
    assert sink.latest().controls.regenerate_turn is not None
    assert (await history(rig))[-1] == ("assistant", "Green.", TurnStatus.COMPLETE)
    with pytest.raises(UserError, match="no longer works"):
        await rig.service.turn_page(paging.key, 2, "prev", user_id=1, can_manage=False)


async def test_a_private_question_s_alternatives_page_but_nothing_is_stored(
    rig: ChatRig,
) -> None:
    sink = MemorySink()
    place = Place(10, 1, ConversationKind.CHANNEL)
    request = Request(RequestKind.QUESTION, place, Person(1), prompt_chars=2)
    admitted = await rig.service.admit(request, alternatives=2)
    ask = Ask(admitted, place, "person1", Question("person1: hi"), private=True, alternatives=2)
    asking = asyncio.create_task(rig.service.ask(ask, sink))
    stream = await rig.api.stream(1)
    stream.send("Hello.")
    stream.send("Hi.", choice=1)
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    assert sink.latest().controls == Controls(paging=paging_of(sink))  # no Regenerate
    await rig.service.turn_page(paging_of(sink).key, 0, "keep", user_id=1, can_manage=False)
    assert sink.latest() == Shown("Hello.")
    assert await history(rig) == []


async def test_alternatives_cut_short_or_alone_are_not_paged(rig: ChatRig) -> None:
    stopped, alone = MemorySink(), MemorySink()
    asking = rig.ask("one", stopped, alternatives=2)
    stream = await rig.api.stream(1)
    stream.send("Partly")
    stream.send("Also partly", choice=1)
    await stopped.wait_for(lambda s: s.latest().content.startswith("Partly"))
    rig.service.stop(stop_key(stopped), user_id=1, can_manage=False, by="person1")
    await asyncio.wait_for(asking, WAIT)
    assert stopped.latest().controls.paging is None

    asking = rig.ask("two", alone, alternatives=2)
    stream = await rig.api.stream(2)
    stream.send("Only one came.")
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    assert alone.latest().content == "Only one came."
    assert alone.latest().controls.paging is None


async def test_more_alternatives_than_requests_at_once_are_refused(rig: ChatRig) -> None:
    request = Request(RequestKind.QUESTION, CHANNEL, Person(1), prompt_chars=2)
    with pytest.raises(UserError, match="at most 4 alternatives"):
        await rig.service.admit(request, alternatives=5)


async def test_alternatives_take_their_slots_together_and_in_turn(
    store: GatedStore, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admission = admission_on(sessions)
    async with chat_rig(store, UsageStore(sessions), admission, max_concurrent_requests=3) as rig:
        first, second, third = MemorySink(), MemorySink(), MemorySink()
        asking = [rig.ask("two answers", first, alternatives=2, channel_id=10)]
        await rig.api.stream(1)
        # Three answers need every slot: they wait, and so does a single answer asked after.
        asking.append(rig.ask("three answers", second, author_id=2, alternatives=3, channel_id=11))
        await second.wait_for(lambda s: s.latest().content == QUEUED)
        asking.append(rig.ask("one answer", third, author_id=3, channel_id=12))
        await third.wait_for(lambda s: s.latest().content == QUEUED)
        assert len(rig.api.streams) == 1
        rig.api.streams[0].end()
        (await rig.api.stream(2)).end()
        (await rig.api.stream(3)).end()
        assert rig.api.streams[1].options["n"] == 3 and rig.api.streams[2].options["n"] == 1
        await asyncio.wait_for(asyncio.gather(*asking), WAIT)  # all finished, none cut short


async def test_a_cancelled_question_leaves_nothing_running(rig: ChatRig) -> None:
    """Whoever cancels an answer's task waits for its clean-up too: no task of it is left to
    hold a database connection after the owner has closed the database."""
    sink = MemorySink()
    asking = rig.ask("hello", sink)
    stream = await rig.api.stream(1)
    stream.send("It began")
    await sink.wait_for(lambda s: "It began" in s.latest().content)
    asking.cancel()
    await asyncio.gather(asking, return_exceptions=True)
    left = [t for t in asyncio.all_tasks() if "ChatService._in_turn" in repr(t.get_coro())]
    assert left == []


async def test_slots_are_taken_all_at_once_and_a_waiter_that_leaves_lets_others_in() -> None:
    slots = Slots(4)
    release = asyncio.Event()

    async def holding(count: int, taken: asyncio.Event) -> None:
        async with slots.take(count):
            taken.set()
            await release.wait()

    big_taken, small_taken = asyncio.Event(), asyncio.Event()
    async with slots.take(3):
        big = asyncio.create_task(holding(2, big_taken))
        small = asyncio.create_task(holding(1, small_taken))
        await asyncio.sleep(0)
        # One slot is free, but the small request does not pass the big one waiting.
        assert not big_taken.is_set() and not small_taken.is_set()
        big.cancel()
        await asyncio.wait_for(small_taken.wait(), WAIT)
    assert not slots.busy(3) and slots.busy(4)  # the small one holds its slot
    release.set()
    await asyncio.wait_for(small, WAIT)
    assert not slots.busy(4)


async def test_json_answers_show_as_a_code_block_and_are_remembered_as_json(
    rig: ChatRig,
) -> None:
    sink = MemorySink()
    asking = rig.ask("colours", sink, json_format=True)
    stream = await rig.api.stream(1)
    assert stream.options["json_format"] is True
    # The API wants the messages to ask for it; the system prompt is not enough for /responses.
    assert stream.messages[-2] == {"role": "system", "content": "Answer with one JSON object."}
    assert "JSON" not in stream.messages[0]["content"]
    stream.send('{"colours": ["red"')
    await sink.wait_for(lambda s: s.latest().content.startswith('```json\n{"colours"'))
    assert sink.latest().content.endswith("```" + CURSOR)  # closed while it streams too
    stream.send(', "blue"]}')
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    assert sink.latest().content == '```json\n{"colours": ["red", "blue"]}\n```'
    assert (await history(rig))[-1][1] == '{"colours": ["red", "blue"]}'


async def test_a_model_stopped_while_it_thinks_is_paid_for(
    thinking_rig: tuple[ChatRig, list[float]],
) -> None:
    rig, now = thinking_rig
    rig.api.open_slowly = True  # taken by the API, thinking in silence
    sink = MemorySink()
    asking = rig.ask("think hard", sink)
    await rig.api.stream(1)
    now[0] = 30.0
    await sink.wait_for(lambda s: s.latest().content == "💭 Thinking… 30 s")
    rig.service.stop(stop_key(sink), user_id=1, can_manage=False, by="person1")
    await asyncio.wait_for(asking, WAIT)
    assert sink.latest().content == "Stopped by person1."
    spent = await rig.usage.spent(1, 1, since=datetime.now(UTC).date())
    assert spent.tokens > 0  # its prompt at least: the API bills a request it took


async def test_alternatives_show_the_thinking_of_the_first_alone(
    thinking_rig: tuple[ChatRig, list[float]],
) -> None:
    rig, _ = thinking_rig
    sink = MemorySink()
    rig.ask("why?", sink, alternatives=2)
    stream = await rig.api.stream(1)
    stream.send("Checking the ", reasoning=True)
    stream.send("Looking at ", reasoning=True, choice=1)
    stream.send("facts.", reasoning=True)
    await sink.wait_for(lambda s: s.latest().content.startswith("-# Checking the facts.\n"))


async def three_colours(rig: ChatRig, sink: MemorySink, first: str = "Red.") -> None:
    asking = rig.ask("Name a colour", sink, alternatives=3)
    stream = await rig.api.stream(len(rig.api.streams) + 1)
    stream.send(first)
    stream.send("Blue.", choice=1)
    stream.send("Green.", choice=2)
    stream.end()
    await asyncio.wait_for(asking, WAIT)


async def test_an_empty_first_choice_gives_way_to_the_next_with_text(rig: ChatRig) -> None:
    two, one = MemorySink(), MemorySink()
    await three_colours(rig, two, first="")
    assert two.latest().content == "Blue.\n\n-# 1/2"
    assert (await history(rig))[-1][1] == "Blue."
    await rig.service.turn_page(paging_of(two).key, 0, "next", user_id=1, can_manage=False)
    assert two.latest().content == "Green.\n\n-# 2/2"

    asking = rig.ask("two", one, alternatives=2)
    stream = await rig.api.stream(2)
    stream.send("A fine answer.", choice=1)
    stream.end(reasons={1: "length"})
    await asyncio.wait_for(asking, WAIT)
    # What is said under it is why it ended, not why the empty one did.
    assert one.latest().content == (
        "A fine answer.\n\n-# The answer reached its length limit and was cut short."
    )
    assert one.latest().controls.paging is None
    assert (await history(rig))[-1][1] == "A fine answer."


class HeldSink(MemorySink):
    """Holds its writes while `held` is set; tells the order of writes and button removals."""

    def __init__(self) -> None:
        super().__init__()
        self.held = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.events: list[str] = []

    async def show(self, index: int, shown: Shown) -> None:
        if self.held:
            self.holding.set()
            await self.release.wait()
        self.events.append(f"shown {shown.controls.paging is not None}")
        await super().show(index, shown)

    async def clear_controls(self, message_id: int) -> None:
        self.events.append("cleared")
        await super().clear_controls(message_id)


async def test_a_press_that_waited_behind_keep_finds_the_paging_ended(rig: ChatRig) -> None:
    sink = MemorySink()
    await three_colours(rig, sink)
    key = paging_of(sink).key
    keep = asyncio.create_task(rig.service.turn_page(key, 2, "keep", user_id=1, can_manage=False))
    after = asyncio.create_task(rig.service.turn_page(key, 2, "next", user_id=1, can_manage=False))
    await asyncio.wait_for(keep, WAIT)
    with pytest.raises(UserError, match="no longer works"):
        await asyncio.wait_for(after, WAIT)
    assert sink.latest().content == "Green." and sink.latest().controls.paging is None
    assert (await history(rig))[-1][1] == "Green."


async def test_regenerate_ends_the_paging_after_the_page_being_shown(
    rig: ChatRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = HeldSink()
    await three_colours(rig, sink)
    turn, key = sink.latest().controls.regenerate_turn, paging_of(sink).key
    assert turn is not None
    admitted = asyncio.Event()
    admit = rig.service.admit

    async def admitting(request: Request, *, alternatives: int = 1) -> Admitted:
        try:
            return await admit(request, alternatives=alternatives)
        finally:
            admitted.set()

    monkeypatch.setattr(rig.service, "admit", admitting)
    sink.held = True
    paging = asyncio.create_task(rig.service.turn_page(key, 0, "next", user_id=1, can_manage=False))
    await asyncio.wait_for(sink.holding.wait(), WAIT)  # Blue is being shown
    regenerating = asyncio.create_task(
        rig.service.regeneration(turn, place=CHANNEL, person=Person(1), can_manage=False)
    )
    await asyncio.wait_for(admitted.wait(), WAIT)
    assert not regenerating.done()  # it waits for the page being shown
    sink.held = False
    sink.release.set()
    await asyncio.wait_for(asyncio.gather(paging, regenerating), WAIT)
    await sink.wait_for(lambda s: bool(s.cleared))
    # Its buttons go after the page shown with them, never before.
    assert sink.events[-2:] == ["shown True", "cleared"]
    with pytest.raises(UserError, match="no longer works"):
        await rig.service.turn_page(key, 1, "next", user_id=1, can_manage=False)


async def test_keep_waits_for_the_question_after_it_and_is_then_refused(rig: ChatRig) -> None:
    sink, second = MemorySink(), MemorySink()
    await three_colours(rig, sink)
    key = paging_of(sink).key
    asking = rig.ask("and another?", second)
    stream = await rig.api.stream(2)
    assert "Red." in [message["content"] for message in stream.messages]
    keep = asyncio.create_task(rig.service.turn_page(key, 1, "keep", user_id=1, can_manage=False))
    stream.send("Sure.")
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    with pytest.raises(UserError):
        await asyncio.wait_for(keep, WAIT)
    # The history the second answer was written from stays; the first answer's buttons go.
    assert [content for _, content, _ in await history(rig)][1:] == [
        "Red.",
        "person1: and another?",
        "Sure.",
    ]
    assert sink.latest().content == "Red.\n\n-# 1/3"
    await sink.wait_for(lambda s: s.cleared == s.message_ids())


async def test_keep_is_refused_once_a_newer_question_is_stored_and_ends_the_paging(
    rig: ChatRig,
) -> None:
    sink = MemorySink()
    await three_colours(rig, sink)
    key = paging_of(sink).key
    # Another process of the bot answered a newer question here.
    conversation = await rig.conversations.find(10)
    assert conversation is not None
    await rig.conversations.append_turn(
        conversation.id, NewTurn(role="user", content="person2: hello", token_estimate=3)
    )
    with pytest.raises(UserError, match="Only the newest answer here can be changed"):
        await rig.service.turn_page(key, 1, "keep", user_id=1, can_manage=False)
    assert (await history(rig))[1][1] == "Red."
    await sink.wait_for(lambda s: s.cleared == s.message_ids())
    with pytest.raises(UserError, match="no longer works"):
        await rig.service.turn_page(key, 0, "next", user_id=1, can_manage=False)


async def test_the_next_answer_removes_the_buttons_where_paging_left_them(rig: ChatRig) -> None:
    sink, second = MemorySink(), MemorySink()
    await three_colours(rig, sink, first=" ".join(["Red."] * 600))  # two messages
    first_ids = sink.message_ids()
    assert len(first_ids) == 2
    asking = rig.ask("and another?", second)
    stream = await rig.api.stream(2)  # its history is read: the answer had two messages
    await rig.service.turn_page(paging_of(sink).key, 0, "next", user_id=1, can_manage=False)
    assert sink.message_ids() == first_ids[:1]  # Blue needs one
    stream.send("Sure.")
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    await sink.wait_for(lambda s: bool(s.cleared))
    assert sink.cleared == first_ids[:1]


async def test_regenerating_a_json_answer_asks_for_json_again(rig: ChatRig) -> None:
    sink, again = MemorySink(), MemorySink()
    asking = rig.ask("a colour", sink, json_format=True)
    stream = await rig.api.stream(1)
    stream.send('{"colour": "red"}')
    stream.end()
    await asyncio.wait_for(asking, WAIT)
    controls = sink.latest().controls
    assert controls.regenerate_turn is not None and controls.regenerate_json
    ask = await rig.service.regeneration(
        controls.regenerate_turn,
        place=CHANNEL,
        person=Person(1),
        can_manage=False,
        json_format=controls.regenerate_json,
    )
    answering = asyncio.create_task(rig.service.ask(ask, again))
    stream = await rig.api.stream(2)
    assert stream.options["json_format"] is True
    stream.send('{"colour": "blue"}')
    stream.end()
    await asyncio.wait_for(answering, WAIT)
    assert again.latest().content == '```json\n{"colour": "blue"}\n```'
    assert again.latest().controls.regenerate_json

"""Budgets: which caps bind whom, periods, and holds that no concurrency can pass."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import Admission, Person, Request, RequestKind
from bot.ai import Usage
from bot.budgets import Cap, Dimension, caps_for, period_start, resets_at
from bot.db import migrate
from bot.db.budget_store import CapCheck, CapReached, Ledger
from bot.db.config_store import BudgetRule, ConfigStore
from bot.db.engine import create_engine, create_sessionmaker
from bot.db.models import BudgetScope, ConversationKind, Period
from bot.db.repository import ConversationStore
from bot.db.usage_store import EVERYONE, Spent, UsageStore
from bot.errors import UserError
from bot.places import Place
from tests.fakes.api import tiny_png
from tests.helpers import (
    WAIT,
    ChatRig,
    ImageRig,
    MemoryImageSink,
    MemorySink,
    admission_on,
    chat_rig,
    image_rig,
)

GUILD = 1
CHANNEL = Place(10, GUILD, ConversationKind.CHANNEL)
PERSON, SERVER = BudgetScope.PERSON, BudgetScope.SERVER
MEMBERS, VIPS = 700, 701


def rule(
    scope: BudgetScope,
    tokens: int | None = None,
    images: int | None = None,
    *,
    period: Period = Period.DAY,
    role_id: int = 0,
    user_id: int = 0,
) -> BudgetRule:
    return BudgetRule(scope, period, tokens, images, role_id, user_id)


def test_a_member_override_beats_roles_and_the_most_generous_role_wins() -> None:
    rules = [
        rule(SERVER, tokens=100_000, images=50),
        rule(PERSON, tokens=1_000, images=2),
        rule(PERSON, tokens=5_000, role_id=MEMBERS),
        rule(PERSON, tokens=20_000, images=10, role_id=VIPS, period=Period.WEEK),
        rule(PERSON, tokens=100, user_id=42),
    ]
    server = [
        Cap(EVERYONE, Dimension.TOKENS, 100_000, Period.DAY),
        Cap(EVERYONE, Dimension.IMAGES, 50, Period.DAY),
    ]
    assert caps_for(rules, 5, frozenset()) == [
        *server,
        Cap(5, Dimension.TOKENS, 1_000, Period.DAY),
        Cap(5, Dimension.IMAGES, 2, Period.DAY),
    ]
    # 5,000 a day beats 20,000 a week; the members' role has no image cap at all.
    assert caps_for(rules, 5, frozenset({MEMBERS, VIPS})) == [
        *server,
        Cap(5, Dimension.TOKENS, 5_000, Period.DAY),
    ]
    assert caps_for(rules, 5, frozenset({VIPS}))[2:] == [
        Cap(5, Dimension.TOKENS, 20_000, Period.WEEK),
        Cap(5, Dimension.IMAGES, 10, Period.WEEK),
    ]
    # The member's own budget wins over their roles, and caps only tokens.
    assert caps_for(rules, 42, frozenset({VIPS}))[2:] == [
        Cap(42, Dimension.TOKENS, 100, Period.DAY)
    ]
    assert caps_for([], 5, frozenset()) == []


def test_periods_follow_the_calendar_in_utc() -> None:
    now = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)  # a Thursday
    assert period_start(Period.DAY, now) == date(2026, 12, 31)
    assert period_start(Period.WEEK, now) == date(2026, 12, 28)
    assert period_start(Period.MONTH, now) == date(2026, 12, 1)
    assert resets_at(Period.DAY, now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at(Period.WEEK, now) == datetime(2027, 1, 4, tzinfo=UTC)
    assert resets_at(Period.MONTH, now) == datetime(2027, 1, 1, tzinfo=UTC)
    assert resets_at(Period.MONTH, datetime(2027, 2, 10, tzinfo=UTC)) == datetime(
        2027, 3, 1, tzinfo=UTC
    )


async def test_holds_at_once_never_pass_a_cap_together(database_url: str) -> None:
    """Ten holds from two engines (as from two processes) against a cap that fits three."""
    engines = [create_engine(database_url) for _ in range(2)]
    await migrate.upgrade(engines[0])
    try:
        sessions = [create_sessionmaker(engine) for engine in engines]
        await ConfigStore(sessions[0]).set_budget(GUILD, rule(SERVER, tokens=300), by=1)
        ledgers = [Ledger(s) for s in sessions]
        now = datetime.now(UTC)
        check = CapCheck(EVERYONE, "tokens", 300, period_start(Period.DAY, now))

        async def hold(person: int) -> int | None:
            try:
                held = await ledgers[person % 2].hold(
                    GUILD,
                    person,
                    [check],
                    least_tokens=50,
                    most_tokens=100,
                    now=now,
                    expires_at=now + timedelta(minutes=30),
                )
            except CapReached:
                return None
            return held.tokens

        held = await asyncio.gather(*(hold(person) for person in range(10)))
        assert sorted(t for t in held if t is not None) == [100, 100, 100]
        # Expired holds stop counting.
        later = now + timedelta(hours=1)
        assert await ledgers[0].used(GUILD, [check], later) == [0]
    finally:
        for engine in engines:
            await engine.dispose()


@pytest.fixture
def clock() -> list[datetime]:
    return [datetime.now(UTC)]


@pytest.fixture
def admission(sessions: async_sessionmaker[AsyncSession], clock: list[datetime]) -> Admission:
    return admission_on(sessions, lambda: clock[0])


@pytest.fixture
async def chat(
    sessions: async_sessionmaker[AsyncSession], admission: Admission
) -> AsyncIterator[ChatRig]:
    async with chat_rig(ConversationStore(sessions), UsageStore(sessions), admission) as rig:
        yield rig


async def answer(rig: ChatRig, tokens: int, *, author_id: int = 1) -> MemorySink:
    """A question answered with `tokens` in all, as the API reports them."""
    sink = MemorySink()
    number = len(rig.api.streams) + 1
    asking = rig.ask("Tell me something", sink, author_id=author_id)
    stream = await rig.api.stream(number)
    stream.send("An answer.")
    stream.end(usage=Usage(prompt_tokens=tokens - 50, completion_tokens=50, total_tokens=tokens))
    await asyncio.wait_for(asking, WAIT)
    return sink


async def held(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Holds still in the ledger."""
    now = datetime.now(UTC)
    check = CapCheck(EVERYONE, "tokens", 1, now.date())
    return (await Ledger(sessions).used(GUILD, [check], now))[0] - (
        await UsageStore(sessions).spent(GUILD, EVERYONE, since=now.date())
    ).tokens


async def test_a_person_cap_lets_answers_in_until_it_is_reached(
    chat: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await chat.config.set_budget(GUILD, rule(PERSON, tokens=500), by=9)
    first = await answer(chat, 300)
    assert first.latest().content == "An answer."
    # The second fits what is left: held, and its answer bounded by what is left.
    await answer(chat, 300)
    sent = chat.api.streams[1]
    prompt = sent.options["max_tokens"]
    assert 0 < prompt < 200  # 200 left, less the prompt's estimate
    # The third is refused before anything is sent; someone else is not.
    with pytest.raises(UserError) as refused:
        await chat.service.admit(Request(RequestKind.QUESTION, CHANNEL, Person(1), prompt_chars=5))
    assert str(refused.value).startswith(
        "You have used 600 of your 500 tokens today; the count starts "
    )
    assert len(chat.api.streams) == 2
    await answer(chat, 300, author_id=2)
    assert await held(sessions) == 0
    assert await chat.usage.spent(GUILD, 1, since=date.today()) == Spent(600, 0)


async def test_alternatives_hold_each_answer_s_worst_case_and_share_what_is_held(
    chat: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await chat.config.set_budget(GUILD, rule(PERSON, tokens=6_000), by=9)
    one, three = MemorySink(), MemorySink()
    asking = chat.ask("Tell me something", one, author_id=1, channel_id=10)
    single = await chat.api.stream(1)
    prompt = 6_000 - single.options["max_tokens"]  # all that is left, less the prompt
    single.end()
    await asyncio.wait_for(asking, WAIT)

    asking = chat.ask("Tell me something", three, author_id=2, channel_id=11, alternatives=3)
    several = await chat.api.stream(2)
    # Three prompts and three answers, within what is left: each answer gets a third.
    assert several.options["max_tokens"] == 6_000 // 3 - prompt
    assert await held(sessions) == 6_000
    several.send("One.")
    several.send("Two.", choice=1)
    several.end(usage=Usage(prompt_tokens=30, completion_tokens=20, total_tokens=50))
    await asyncio.wait_for(asking, WAIT)
    assert await held(sessions) == 0
    assert await chat.usage.spent(GUILD, 2, since=date.today()) == Spent(50, 0)

    # Less than three prompts' worth left: refused before anything is sent.
    await chat.config.set_budget(GUILD, rule(PERSON, tokens=50 + 2 * prompt), by=9)
    refused = MemorySink()
    asking = chat.ask("Tell me something", refused, author_id=2, channel_id=11, alternatives=3)
    await asyncio.wait_for(asking, WAIT)
    assert "this needs about" in refused.latest().content
    assert len(chat.api.streams) == 2


async def test_without_a_token_budget_nothing_is_held_or_bounded(
    chat: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await answer(chat, 300)
    # A cap on images only leaves questions alone.
    await chat.config.set_budget(GUILD, rule(SERVER, images=5), by=9)
    await answer(chat, 300)
    assert [s.options["max_tokens"] for s in chat.api.streams] == [None, None]


async def test_stop_records_the_estimate_and_lets_the_hold_go(
    chat: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    await chat.config.set_budget(GUILD, rule(SERVER, tokens=100_000), by=9)
    sink = MemorySink()
    asking = chat.ask("Tell me a long story", sink)
    stream = await chat.api.stream(1)
    stream.send("Once upon a time")
    await sink.wait_for(lambda s: s.latest().controls.stop_key is not None)
    assert await held(sessions) > 0
    key = sink.latest().controls.stop_key
    assert key is not None
    chat.service.stop(key, user_id=1, can_manage=False, by="person1")
    await asyncio.wait_for(asking, WAIT)
    assert await held(sessions) == 0
    spent = await chat.usage.spent(GUILD, 1, since=date.today())
    assert spent.tokens > 0  # estimated: the API reported nothing


async def test_passing_80_percent_of_a_cap_is_said_once_under_the_answer(chat: ChatRig) -> None:
    await chat.config.set_budget(GUILD, rule(PERSON, tokens=1_000), by=9)
    assert (await answer(chat, 500)).latest().content == "An answer."
    crossing = (await answer(chat, 350)).latest().content
    assert crossing.startswith("An answer.\n\n-# You have used 850 of your 1,000 tokens today; ")
    assert (await answer(chat, 100)).latest().content == "An answer."


@pytest.fixture
async def images(
    sessions: async_sessionmaker[AsyncSession], admission: Admission
) -> AsyncIterator[ImageRig]:
    async with image_rig(ConversationStore(sessions), UsageStore(sessions), admission) as rig:
        yield rig


async def test_a_server_image_cap_is_checked_before_any_request_and_resets(
    images: ImageRig, clock: list[datetime]
) -> None:
    await images.config.set_budget(GUILD, rule(SERVER, images=2), by=9)
    making = images.make("two cats", MemoryImageSink(), count=2)
    (await images.api.call(1)).answer(tiny_png(1), tiny_png(2))
    await asyncio.wait_for(making, WAIT)
    with pytest.raises(UserError) as refused:
        await images.service.admit(Request(RequestKind.IMAGE, CHANNEL, Person(2)), "a dog", count=1)
    assert str(refused.value).startswith("This server has used 2 of its 2 images today; the count ")
    assert len(images.api.calls) == 1
    clock[0] += timedelta(days=1)  # the next day
    assert (
        await images.service.admit(Request(RequestKind.IMAGE, CHANNEL, Person(2)), "a dog")
    ).count == 1


def test_a_question_needing_more_than_is_left_is_told_both() -> None:
    cap = Cap(5, Dimension.TOKENS, 500, Period.DAY)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert cap.describe(380, now, needed=200) == (
        "You have 120 tokens left of your 500 today, and this needs about 200; "
        "the count starts again <t:1796169600:R>."
    )
    server = Cap(EVERYONE, Dimension.IMAGES, 2, Period.MONTH)
    assert server.describe(0, now, asked=3) == (
        "This server has used 0 of its 2 images this month, so 3 more can't be made; "
        "the count starts again <t:1798761600:R>."
    )


async def test_a_request_the_api_accepted_counts_even_without_a_word(
    chat: ChatRig, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """A model may think, and be paid for, before its first word: a failure then still counts
    the prompt, and lets the hold go."""
    await chat.config.set_budget(GUILD, rule(SERVER, tokens=100_000), by=9)
    sink = MemorySink()
    asking = chat.ask("Think hard", sink)
    (await chat.api.stream(1)).fail(TimeoutError())
    await asyncio.wait_for(asking, WAIT)
    assert sink.latest().content.startswith("⚠️")
    assert (await chat.usage.spent(GUILD, 1, since=date.today())).tokens > 0
    assert await held(sessions) == 0


async def test_passing_80_percent_of_an_image_cap_is_said_under_the_images(
    images: ImageRig,
) -> None:
    await images.config.set_budget(GUILD, rule(PERSON, images=5), by=9)
    sinks = [MemoryImageSink(), MemoryImageSink()]
    for number, (sink, count) in enumerate(zip(sinks, (3, 1), strict=True), start=1):
        making = images.make("a cat", sink, count=count)
        (await images.api.call(number)).answer(*(tiny_png(n) for n in range(count)))
        await asyncio.wait_for(making, WAIT)
    assert sinks[0].caption is not None and "You have used" not in sinks[0].caption
    assert sinks[1].caption is not None
    assert "\n-# You have used 4 of your 5 images today; the count starts again <t:" in (
        sinks[1].caption
    )

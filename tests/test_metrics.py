"""What the bot counts and times, read from its registry where each event happens; and what
/healthz says of a bot's shards and database.

The counters are the process's own: each test compares them before and after.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bot import health as container_health
from bot import metrics
from bot.admission import RESTARTING, Person, Request, RequestKind
from bot.ai import ApiClient, ApiError, RetryPolicy, ServiceUnavailable, Timeouts, Usage
from bot.conversation.context import Question
from bot.conversation.service import QUEUED, WAITING, Ask, ChatService
from bot.db.engine import time_statements
from bot.db.models import ConversationKind, UsageKind
from bot.db.repository import ConversationStore
from bot.db.usage_store import UsageStore
from bot.delivery.pacing import WriteScheduler
from bot.delivery.reply import Replies, Shown
from bot.errors import UserError
from bot.images.service import ImageService
from bot.monitoring import Monitor, health
from bot.places import Place
from tests.fakes.api import Fail, FakeApi, Hang, Reply
from tests.helpers import (
    WAIT,
    ChatRig,
    MemoryImageSink,
    MemorySink,
    admission_on,
    chat_rig,
    image_rig,
)

pytestmark = pytest.mark.timeout(20)


def value(name: str, labels: Mapping[str, str] | None = None) -> float:
    return metrics.REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0


class Change:
    """How much samples grew between the start and `of`."""

    def __init__(self, *samples: tuple[str, Mapping[str, str]]) -> None:
        self._before = {
            (name, tuple(sorted(labels.items()))): value(name, labels) for name, labels in samples
        }

    def of(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        key = (name, tuple(sorted((labels or {}).items())))
        return value(name, labels) - self._before[key]


def answers(outcome: str) -> tuple[str, Mapping[str, str]]:
    return "bot_answers_total", {"outcome": outcome}


NO_LABELS: Mapping[str, str] = {}
TIMES = [
    ("bot_first_text_seconds_count", NO_LABELS),
    ("bot_answer_seconds_count", NO_LABELS),
]


@pytest.fixture
async def rig(sessions: async_sessionmaker[AsyncSession]) -> AsyncIterator[ChatRig]:
    async with chat_rig(
        ConversationStore(sessions), UsageStore(sessions), admission_on(sessions)
    ) as rig:
        yield rig


# --- the chat service ----------------------------------------------------------------------------


async def test_a_complete_answer_is_counted_and_timed(rig: ChatRig) -> None:
    change = Change(answers("complete"), *TIMES)
    sink = MemorySink()
    asking = rig.ask("hi", sink)
    stream = await rig.api.stream(1)
    stream.send("Hello.")
    stream.end(usage=Usage(5, 2, 7))
    await asyncio.wait_for(asyncio.shield(asking), WAIT)
    assert change.of(*answers("complete")) == 1
    assert change.of("bot_first_text_seconds_count") == 1
    assert change.of("bot_answer_seconds_count") == 1


async def test_a_stopped_answer_and_a_failed_one_are_counted_as_such(rig: ChatRig) -> None:
    change = Change(answers("stopped"), answers("failed"), *TIMES)
    stopped, failed = MemorySink(), MemorySink()
    asking = rig.ask("tell me", stopped)
    stream = await rig.api.stream(1)
    stream.send("Once")
    await stopped.wait_for(lambda s: "Once" in s.latest().content)
    key = stopped.latest().controls.stop_key
    assert key is not None
    rig.service.stop(key, user_id=1, can_manage=False, by="person1")
    await asyncio.wait_for(asyncio.shield(asking), WAIT)

    asking = rig.ask("again", failed)
    stream = await rig.api.stream(2)
    stream.fail(ServiceUnavailable("the upstream failed"))  # before a word
    await asyncio.wait_for(asyncio.shield(asking), WAIT)

    assert change.of(*answers("stopped")) == 1
    assert change.of(*answers("failed")) == 1
    assert change.of("bot_answer_seconds_count") == 2
    assert change.of("bot_first_text_seconds_count") == 1  # the failed one showed no words


async def test_a_refused_question_is_counted_before_any_call(rig: ChatRig) -> None:
    change = Change(answers("refused"))
    sinks = [MemorySink() for _ in range(3)]
    rig.ask("first", sinks[0])
    stream = await rig.api.stream(1)
    rig.ask("second", sinks[1])
    rig.ask("third", sinks[2])
    for sink in sinks[1:]:
        await sink.wait_for(lambda s: s.latest().controls.stop_key is not None)
    place = Place(10, 1, ConversationKind.CHANNEL)
    with pytest.raises(UserError):
        await rig.service.admit(Request(RequestKind.QUESTION, place, Person(1)))
    assert change.of(*answers("refused")) == 1
    assert len(rig.api.streams) == 1
    stream.end()


async def test_questions_the_restart_ends_before_any_call_are_refused_once_each(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    outcomes = [answers(outcome) for outcome in ("refused", "stopped", "interrupted")]
    change = Change(*outcomes)
    admission = admission_on(sessions)
    store, usage = ConversationStore(sessions), UsageStore(sessions)
    async with chat_rig(store, usage, admission, max_concurrent_requests=1) as rig:
        running, for_a_slot, for_its_turn = MemorySink(), MemorySink(), MemorySink()
        rig.ask("long story", running, author_id=1, channel_id=10)
        stream = await rig.api.stream(1)
        stream.send("It began")
        waiting = [
            rig.ask("wait for a slot", for_a_slot, author_id=2, channel_id=20),
            rig.ask("wait for the first", for_its_turn, author_id=3, channel_id=10),
        ]
        await for_a_slot.wait_for(lambda s: s.latest().content == QUEUED)
        await for_its_turn.wait_for(lambda s: s.latest().content == WAITING)
        place = Place(30, 1, ConversationKind.CHANNEL)
        admitted_before = await rig.service.admit(Request(RequestKind.QUESTION, place, Person(4)))

        rig.admission.restarting = True
        rig.service.begin_shutdown()
        await asyncio.wait_for(asyncio.shield(asyncio.gather(*waiting)), WAIT)
        with pytest.raises(UserError, match=RESTARTING):
            await rig.service.admit(Request(RequestKind.QUESTION, place, Person(5)))
        ask = Ask(admitted_before, place, "person4", Question("person4: hi"))
        with pytest.raises(UserError, match=RESTARTING):
            await rig.service.ask(ask, MemorySink())
        await asyncio.wait_for(rig.service.shutdown(grace=WAIT), WAIT)
    assert [change.of(*outcome) for outcome in outcomes] == [4, 0, 1]
    assert len(rig.api.streams) == 1


class SlowSink(MemorySink):
    """Each write waits at a gate the test opens for it."""

    def __init__(self) -> None:
        super().__init__()
        self.writing = asyncio.Event()
        self.gate = asyncio.Event()

    async def show(self, index: int, shown: Shown) -> None:
        self.writing.set()
        await self.gate.wait()
        self.gate.clear()
        await super().show(index, shown)


async def test_the_first_text_is_timed_when_words_show_not_a_status() -> None:
    scheduler = WriteScheduler()
    running = asyncio.create_task(scheduler.run())
    try:
        sink = SlowSink()
        reply = Replies(scheduler).open(sink, stop_key="key")
        reply.status(QUEUED)
        await asyncio.wait_for(sink.writing.wait(), WAIT)
        reply.update("Hello")  # while the status is being written
        sink.gate.set()
        await sink.wait_for(lambda s: s.latest().content == QUEUED)
        assert reply.time_to_text is None
        sink.gate.set()
        await sink.wait_for(lambda s: "Hello" in s.latest().content)
        assert reply.time_to_text is not None
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_queued_and_running_answers_are_read_from_the_service(rig: ChatRig) -> None:
    first, second = MemorySink(), MemorySink()
    rig.ask("first", first)
    stream = await rig.api.stream(1)
    rig.ask("second", second, author_id=2)  # same channel: waits for the first
    await second.wait_for(lambda s: s.latest().controls.stop_key is not None)
    assert rig.service.load() == (1, 1)
    stream.send("Done.")
    stream.end()
    second_stream = await rig.api.stream(2)
    await asyncio.wait_for(first.wait_for(lambda s: s.latest().controls.stop_key is None), WAIT)
    assert rig.service.load() == (0, 1)
    second_stream.end()


async def test_image_jobs_running_are_read_from_the_service(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with image_rig(
        ConversationStore(sessions), UsageStore(sessions), admission_on(sessions)
    ) as rig:
        assert rig.service.jobs_running_or_waiting == 0
        making = rig.make("a cat", MemoryImageSink())
        call = await rig.api.call(1)
        assert rig.service.jobs_running_or_waiting == 1
        call.fail(ServiceUnavailable("down"))
        await asyncio.wait_for(making, WAIT)
        assert rig.service.jobs_running_or_waiting == 0


# --- usage, the API client, the database ---------------------------------------------------------


async def test_recorded_usage_counts_tokens_by_model_and_kind_and_images_by_model(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    prompt = ("bot_tokens_total", {"model": "gpt-4o", "kind": "prompt"})
    completion = ("bot_tokens_total", {"model": "gpt-4o", "kind": "completion"})
    images = ("bot_images_total", {"model": "dall-e-3"})
    change = Change(prompt, completion, images)
    usage = UsageStore(sessions)
    await usage.record(
        user_id=1,
        guild_id=2,
        channel_id=3,
        kind=UsageKind.CHAT,
        model="gpt-4o",
        prompt_tokens=10,
        completion_tokens=4,
    )
    await usage.record(
        user_id=1, guild_id=2, channel_id=3, kind=UsageKind.IMAGE, model="dall-e-3", images=2
    )
    assert (change.of(*prompt), change.of(*completion), change.of(*images)) == (10, 4, 2)


@pytest.fixture
async def fake_api() -> AsyncIterator[FakeApi]:
    async with FakeApi.running() as fake:
        yield fake


def api_client(fake: FakeApi, session: aiohttp.ClientSession) -> ApiClient:
    return ApiClient(
        session,
        base_url=fake.url,
        token=fake.token,
        timeouts=Timeouts(connect=2, chat=5, stream_idle=0.3, images=5, other=5),
        retry=RetryPolicy(attempts=1),
    )


async def test_api_failures_are_counted_by_code_once_each(fake_api: FakeApi) -> None:
    used_up = ("bot_api_errors_total", {"code": "used_up"})
    bare = ("bot_api_errors_total", {"code": "http_502"})
    timeout = ("bot_api_errors_total", {"code": "ApiTimeout"})
    change = Change(used_up, bare, timeout)
    messages = [{"role": "user", "content": "hi"}]
    async with aiohttp.ClientSession() as session:
        client = api_client(fake_api, session)
        fake_api.script(Fail(403, code="used_up"), Fail(502, shape="html"), Hang(seconds=2))
        for _ in range(3):
            with pytest.raises(ApiError):
                async with client.stream_chat(messages, model="gpt-4o-mini") as stream:
                    async for _delta in stream:
                        pass
    assert (change.of(*used_up), change.of(*bare), change.of(*timeout)) == (1, 1, 1)


async def test_error_codes_the_bot_does_not_know_are_counted_by_status(
    fake_api: FakeApi,
) -> None:
    """The upstream may send any code: each must not become a series of its own."""
    odd = [f"odd code {n}" for n in range(3)]
    change = Change(("bot_api_errors_total", {"code": "http_400"}))
    async with aiohttp.ClientSession() as session:
        client = api_client(fake_api, session)
        fake_api.script(*(Fail(400, code=code) for code in odd))
        for _ in odd:
            with pytest.raises(ApiError):
                await client.chat([{"role": "user", "content": "hi"}], model="gpt-4o-mini")
    assert change.of("bot_api_errors_total", {"code": "http_400"}) == len(odd)
    codes = {
        sample.labels["code"]
        for family in metrics.REGISTRY.collect()
        if family.name == "bot_api_errors"
        for sample in family.samples
    }
    assert not codes & set(odd)


async def test_a_stream_s_first_token_is_timed(fake_api: FakeApi) -> None:
    change = Change(("bot_api_first_token_seconds_count", NO_LABELS))
    async with aiohttp.ClientSession() as session:
        client = api_client(fake_api, session)
        fake_api.script(Reply(text="Hello there."))
        async with client.stream_chat([{"role": "user", "content": "hi"}], model="m") as stream:
            assert [delta.text async for delta in stream]
    assert change.of("bot_api_first_token_seconds_count") == 1


async def test_database_statements_are_timed(engine: AsyncEngine) -> None:
    change = Change(("bot_database_call_seconds_count", NO_LABELS))
    time_statements(engine)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
        await connection.execute(text("SELECT 2"))
    assert change.of("bot_database_call_seconds_count") == 2


# --- /healthz ------------------------------------------------------------------------------------


@dataclass
class FakeShard:
    closed: bool = False
    latency: float = 0.05

    def is_closed(self) -> bool:
        return self.closed


@dataclass
class FakeBot:
    ready: bool = True
    shutting_down: bool = False
    shards: dict[int, FakeShard] = field(default_factory=lambda: {0: FakeShard(), 1: FakeShard()})
    chat: ChatService | None = None
    images: ImageService | None = None

    def is_ready(self) -> bool:
        return self.ready


async def answers_at_once() -> None:
    pass


async def hangs() -> None:
    await asyncio.Event().wait()


async def refuses() -> None:
    raise ConnectionRefusedError("could not connect to postgresql://bot:secret@db/bot")


async def test_healthy_with_every_shard_connected_and_the_database_answering() -> None:
    assert await health(FakeBot(), answers_at_once) == (
        True,
        {"status": "ok", "shards": {"0": "connected", "1": "connected"}, "database": "ok"},
    )


@pytest.mark.parametrize(
    ("bot", "ping", "reason"),
    [
        (FakeBot(ready=False), answers_at_once, "Not connected to Discord yet."),
        (FakeBot(shutting_down=True), answers_at_once, "The bot is shutting down."),
        (
            FakeBot(shards={0: FakeShard(), 1: FakeShard(closed=True)}),
            answers_at_once,
            "Shard 1 is not connected to Discord.",
        ),
        (FakeBot(), hangs, "The database did not answer within 1 s."),
        (FakeBot(), refuses, "The database cannot be reached."),
    ],
)
async def test_unhealthy_says_why(
    bot: FakeBot, ping: Callable[[], Awaitable[None]], reason: str
) -> None:
    healthy, body = await health(bot, ping)
    assert not healthy
    assert body["reason"] == reason
    assert "secret" not in str(body)


async def test_metrics_read_gauges_from_the_running_bot() -> None:
    bot = FakeBot(shards={0: FakeShard(latency=0.25), 1: FakeShard(latency=float("inf"))})
    registry = Monitor(bot, answers_at_once).registry
    assert registry.get_sample_value("bot_gateway_latency_seconds", {"shard": "0"}) == 0.25
    # No heartbeat answered yet: no figure rather than infinity.
    assert registry.get_sample_value("bot_gateway_latency_seconds", {"shard": "1"}) is None
    assert registry.get_sample_value("bot_answers_queued") == 0
    assert registry.get_sample_value("bot_image_jobs_running") == 0
    # The process's own metrics come along.
    assert registry.get_sample_value("process_resident_memory_bytes")


@pytest.mark.parametrize("host", ["127.0.0.1", "::"])
async def test_the_container_check_asks_healthz_where_it_listens_past_any_proxy(
    host: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A proxy for the bot's outbound calls must not carry the check.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    monitor = Monitor(FakeBot(), answers_at_once)
    await monitor.start(host, port)
    try:
        assert await asyncio.to_thread(container_health.main, port, host) == 0
    finally:
        await monitor.close()

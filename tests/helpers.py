"""Built once for every service test: in-memory delivery ports, a scripted API, and the chat
and image services wired to them and to a real database."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.admission import Admission, Person, Request, RequestKind, Rules
from bot.ai import Delta, GeneratedImage, ImageResult, Message, Usage
from bot.conversation.context import Question
from bot.conversation.service import Ask, ChatOptions, ChatService
from bot.db.budget_store import Ledger
from bot.db.config_store import ConfigStore
from bot.db.models import ConversationKind
from bot.db.repository import ConversationStore, ImageRef
from bot.db.usage_store import UsageStore
from bot.delivery.pacing import Window, WriteScheduler
from bot.delivery.reply import MessageGone, Replies, Shown
from bot.images.delivery import Delivery, Repeat, UploadFile
from bot.images.service import ImageOptions, ImageService
from bot.images.work import Attachment, ImageWork
from bot.memory import Memory
from bot.places import Place
from bot.server_config import Catalog, PlaceSettings, ServerConfig

DEFAULTS = PlaceSettings(
    model="gpt-4o-mini",
    image_model="gpt-image-1",
    system_prompt="Be brief.",
    temperature=None,
    max_answer_tokens=None,
)
CATALOG = Catalog(chat_models=["gpt-4o-mini", "gpt-4o"], image_models=["gpt-image-1", "dall-e-2"])
RULES = Rules(vision_models=["gpt-4o"], max_prompt_chars=4000, allow_direct_messages=False)


def admission_on(
    sessions: async_sessionmaker[AsyncSession],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Admission:
    """Admission as the bot builds it, with the test deployment's settings."""
    config = ServerConfig(ConfigStore(sessions), DEFAULTS, CATALOG)
    return Admission(config, RULES, Ledger(sessions), clock)


WAIT = 2.0  # seconds any awaited event may take before the test fails
_message_ids = itertools.count(1000)


class MemorySink:
    """A ReplySink that keeps what it was shown, message by message, and lets a test wait
    for what it expects."""

    def __init__(self, *, can_attach: bool = True) -> None:
        self.messages: dict[int, list[Shown]] = {}  # by position: every version shown
        self.ids: dict[int, int] = {}
        self.cleared: list[int] = []
        self.gone = False  # the person deleted the message: every later write fails
        # Called with each version as it is shown, before the write returns to the service.
        self.on_show: Callable[[Shown], None] = lambda shown: None
        self._can_attach = can_attach
        self._changed = asyncio.Condition()

    def windows(self) -> Sequence[Window]:
        return ()

    def deadline(self) -> datetime | None:
        return None

    def can_attach_files(self) -> bool:
        return self._can_attach

    def message_ids(self) -> list[int]:
        return [self.ids[index] for index in sorted(self.ids)]

    async def show(self, index: int, shown: Shown) -> None:
        if self.gone:
            raise MessageGone
        self.ids.setdefault(index, next(_message_ids))
        self.messages.setdefault(index, []).append(shown)
        self.on_show(shown)
        async with self._changed:
            self._changed.notify_all()

    async def clear_controls(self, message_id: int) -> None:
        self.cleared.append(message_id)
        async with self._changed:
            self._changed.notify_all()

    async def remove(self, index: int) -> None:
        self.ids.pop(index, None)
        self.messages.pop(index, None)
        async with self._changed:
            self._changed.notify_all()

    def latest(self, index: int = -1) -> Shown:
        """The newest version of message `index` (the last by default); empty before any."""
        if not self.messages:
            return Shown("")
        return self.messages[sorted(self.messages)[index]][-1]

    async def wait_for(self, condition: Callable[[MemorySink], bool]) -> None:
        async with asyncio.timeout(WAIT), self._changed:
            await self._changed.wait_for(lambda: condition(self))


class ScriptedStream:
    """One streamed answer, written by the test: `send` text, then `end` or `fail`."""

    def __init__(self, messages: Sequence[Message], options: Mapping[str, Any]) -> None:
        self.messages = messages
        self.options = options  # model, temperature, max_tokens, user, n, json_format
        self.finish_reason: str | None = None
        self.finish_reasons: dict[int, str] = {}
        self.accepted = True  # the API took it at once
        self.usage: Usage | None = None
        self._choices = {0}
        self.closed = asyncio.Event()  # the service let go of it (read to the end, or dropped)
        self._deltas: asyncio.Queue[Delta | BaseException | None] = asyncio.Queue()
        # Opening waits at this gate: as the real client's does, until the first word.
        self.open_gate = asyncio.Event()
        self.open_gate.set()

    def send(self, text: str, *, choice: int = 0, reasoning: bool = False) -> None:
        self._choices.add(choice)
        self._deltas.put_nowait(Delta(text, choice, reasoning))

    def end(
        self,
        finish_reason: str = "stop",
        usage: Usage | None = None,
        *,
        reasons: Mapping[int, str] | None = None,
    ) -> None:
        """Every answer ends, for `finish_reason` unless `reasons` (by choice) says otherwise."""
        self.finish_reasons = dict.fromkeys(self._choices, finish_reason) | dict(reasons or {})
        self.finish_reason, self.usage = self.finish_reasons[0], usage
        self._deltas.put_nowait(None)

    def fail(self, error: BaseException) -> None:
        self._deltas.put_nowait(error)

    async def __aenter__(self) -> Self:
        await self.open_gate.wait()
        return self

    def close(self) -> None:
        self.closed.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.closed.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        item = await self._deltas.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item


class ScriptedApi:
    """Stands in for the API client: each stream the service opens waits for the test."""

    def __init__(self) -> None:
        self.streams: list[ScriptedStream] = []
        self._opened = asyncio.Condition()
        # Streams open only once the test opens their gate (a model thinking in silence).
        self.open_slowly = False

    def stream_chat(self, messages: Sequence[Message], **options: Any) -> ScriptedStream:
        stream = ScriptedStream(messages, options)
        if self.open_slowly:
            stream.open_gate.clear()
        self.streams.append(stream)
        with contextlib.suppress(RuntimeError):  # notified without waiters: nothing to do
            asyncio.get_running_loop().create_task(self._notify())
        return stream

    async def _notify(self) -> None:
        async with self._opened:
            self._opened.notify_all()

    async def stream(self, number: int) -> ScriptedStream:
        """The `number`th stream opened (1 for the first), once it is."""
        async with asyncio.timeout(WAIT), self._opened:
            await self._opened.wait_for(lambda: len(self.streams) >= number)
        return self.streams[number - 1]


@dataclass
class ChatRig:
    service: ChatService
    api: ScriptedApi
    conversations: ConversationStore
    usage: UsageStore
    scheduler: WriteScheduler
    config: ServerConfig
    admission: Admission
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def ask(
        self,
        text: str,
        sink: MemorySink,
        *,
        author_id: int = 1,
        channel_id: int = 10,
        alternatives: int = 1,
        json_format: bool = False,
    ) -> asyncio.Task[None]:
        """Start answering `text` from person `author_id` in channel `channel_id`."""
        place = Place(channel_id, 1, ConversationKind.CHANNEL)
        request = Request(RequestKind.QUESTION, place, Person(author_id), prompt_chars=len(text))

        async def asking() -> None:
            admitted = await self.service.admit(request, alternatives=alternatives)
            question = Question(f"person{author_id}: {text}")
            ask = Ask(
                admitted,
                admitted.place,
                f"person{author_id}",
                question,
                alternatives=alternatives,
                json_format=json_format,
            )
            await self.service.ask(ask, sink)

        task = asyncio.create_task(asking())
        self.tasks.add(task)
        return task


@contextlib.asynccontextmanager
async def chat_rig(
    conversations: ConversationStore,
    usage: UsageStore,
    admission: Admission,
    *,
    memory: Memory | None = None,
    monotonic: Callable[[], float] = time.monotonic,
    **options: Any,
) -> AsyncIterator[ChatRig]:
    """The chat service with a scripted API (and `memory`, if given), its scheduler running;
    torn down after. `monotonic`: the clock a model's thinking time is told by."""
    scheduler = WriteScheduler()
    running = asyncio.create_task(scheduler.run())
    api = ScriptedApi()
    settings: dict[str, Any] = {"history_token_budget": 6000, "max_concurrent_requests": 4}
    settings.update(options)
    service = ChatService(
        api,
        admission,
        conversations,
        usage,
        Replies(scheduler),
        ChatOptions(**settings),
        memory=memory,
        monotonic=monotonic,
    )
    rig = ChatRig(service, api, conversations, usage, scheduler, admission.config, admission)
    try:
        yield rig
    finally:
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


class MemoryImageSink:
    """An ImageSink that keeps what it was shown; `ended` is set once the job showed its images
    or its sentence."""

    def __init__(self, messages: Mapping[int, Mapping[int, Attachment]] | None = None) -> None:
        self.messages = messages or {}  # earlier messages here: their files by id, by message id
        self.progress: str | None = None
        self.caption: str | None = None
        self.files: list[UploadFile] = []
        self.failure: str | None = None
        self.repeat: Repeat | None = None
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    async def start(self, text: str) -> None:
        self.progress = text
        self.started.set()

    async def attachments_of(self, message_id: int) -> Mapping[int, Attachment] | None:
        return self.messages.get(message_id)

    async def deliver(self, delivery: Delivery) -> list[ImageRef]:
        self.caption = delivery.caption
        self.files = await delivery.files(8 * 1024 * 1024)
        message_id = next(_message_ids)
        self.ended.set()
        return [
            ImageRef(10, message_id, number, file.filename, "image/png")
            for number, file in enumerate(self.files, start=1)
        ]

    async def fail(self, sentence: str) -> None:
        self.failure = sentence
        self.ended.set()

    async def offer_again(self, repeat: Repeat) -> None:
        self.repeat = repeat


@dataclass
class ImageCall:
    """One request for images, waiting for the test to `answer` or `fail` it."""

    prompt: str
    model: str
    n: int
    result: asyncio.Future[ImageResult]

    def answer(self, *images: bytes, revised_prompt: str | None = None) -> None:
        made = [
            GeneratedImage(base64.b64encode(data).decode(), None, revised_prompt) for data in images
        ]
        self.result.set_result(ImageResult(made, None))

    def fail(self, error: BaseException) -> None:
        self.result.set_exception(error)


class ScriptedImageApi:
    """Stands in for the API client's image calls: each one waits for the test."""

    def __init__(self) -> None:
        self.calls: list[ImageCall] = []
        self._called = asyncio.Condition()

    async def generate_images(
        self, prompt: str, *, model: str, n: int = 1, **_options: Any
    ) -> ImageResult:
        return await self._call(prompt, model, n)

    async def edit_images(
        self, prompt: str, images: Sequence[Any], *, model: str, n: int = 1, **_options: Any
    ) -> ImageResult:
        return await self._call(prompt, model, n)

    async def fetch_image_bytes(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        assert image.b64_json is not None
        return base64.b64decode(image.b64_json)

    async def _call(self, prompt: str, model: str, n: int) -> ImageResult:
        call = ImageCall(prompt, model, n, asyncio.get_running_loop().create_future())
        self.calls.append(call)
        async with self._called:
            self._called.notify_all()
        return await call.result

    async def call(self, number: int) -> ImageCall:
        """The `number`th request made (1 for the first), once it is."""
        async with asyncio.timeout(WAIT), self._called:
            await self._called.wait_for(lambda: len(self.calls) >= number)
        return self.calls[number - 1]


@dataclass
class ImageRig:
    service: ImageService
    api: ScriptedImageApi
    conversations: ConversationStore
    usage: UsageStore
    config: ServerConfig
    admission: Admission
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def make(
        self,
        prompt: str,
        sink: MemoryImageSink,
        *,
        author_id: int = 1,
        channel_id: int = 10,
        kind: RequestKind = RequestKind.IMAGE,
        count: int = 1,
    ) -> asyncio.Task[None]:
        """Start the job of person `author_id` in channel `channel_id`: admitted, then made."""
        place = Place(channel_id, 1, ConversationKind.CHANNEL)

        async def making() -> None:
            request = await self.service.admit(
                Request(kind, place, Person(author_id)), prompt, count=count
            )
            await self.service.make(request, sink, author_name=f"person{author_id}")

        task = asyncio.create_task(making())
        self.tasks.add(task)
        return task


@contextlib.asynccontextmanager
async def image_rig(
    conversations: ConversationStore, usage: UsageStore, admission: Admission
) -> AsyncIterator[ImageRig]:
    """The image service with a scripted API; its jobs cancelled after."""
    api = ScriptedImageApi()
    work = ImageWork(max_bytes=1024 * 1024, max_pixels=4096 * 4096, budget_pixels=4096 * 4096)
    service = ImageService(api, admission, conversations, usage, ImageOptions(), work)
    rig = ImageRig(service, api, conversations, usage, admission.config, admission)
    try:
        yield rig
    finally:
        for task in rig.tasks:
            task.cancel()
        await asyncio.gather(*rig.tasks, return_exceptions=True)

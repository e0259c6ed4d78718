"""Which endpoint answers a chat: chat completions, or the Responses API, chosen by model.

`ChatRouter.stream_chat` takes chat messages whichever way they go; for the Responses API they
become input items, and `n` alternatives become `n` requests read as one stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Self

from bot.ai.client import ApiClient, ChatStream, ResponseStream, is_reasoning_model
from bot.ai.errors import BadRequest
from bot.ai.types import Delta, Message, TextStream, Usage

log = logging.getLogger(__name__)

_LEAST_OUTPUT_TOKENS = 16
_SUMMARY = {"summary": "auto"}


class ChatRouter:
    """Streams chat answers through chat completions or, when `CHAT_API=responses` or for a
    model in `RESPONSES_MODELS`, through the Responses API."""

    def __init__(
        self, client: ApiClient, *, use_responses: bool, responses_models: Collection[str]
    ) -> None:
        self._client = client
        self._use_responses = use_responses
        self._responses_models = frozenset(responses_models)
        # Until the API refuses them: OpenAI does for organizations it has not verified.
        self.summaries = True

    def _uses_responses(self, model: str) -> bool:
        return self._use_responses or model in self._responses_models

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float | None,
        max_tokens: int | None,
        user: str | None,
        n: int = 1,
        json_format: bool = False,
    ) -> ChatStream | TextStream | MergedStream:
        if n < 1:
            raise ValueError("n must be at least 1")
        if not self._uses_responses(model):
            return self._client.stream_chat(
                messages,
                model=model,
                temperature=temperature,
                max_tokens=max_tokens,
                user=user,
                n=n,
                json_format=json_format,
            )
        instructions, items = responses_input(messages)
        options = _response_options(model, temperature, max_tokens, user, json_format)

        def open_one(summary: bool) -> ResponseStream:
            extra = {**options, "reasoning": _SUMMARY} if summary else options
            return self._client.stream_response(
                items, model=model, instructions=instructions, extra=extra
            )

        def one() -> TextStream:
            if not is_reasoning_model(model):
                return open_one(False)
            return _SummaryIfAllowed(self, open_one)

        # The Responses API has no `n`: alternatives are as many requests.
        return one() if n == 1 else MergedStream([one() for _ in range(n)])

    def refuse_summaries(self) -> None:
        if self.summaries:
            log.warning(
                "The API refuses reasoning summaries (OpenAI asks an organization to be "
                "verified first); reasoning models answer without them from now on"
            )
        self.summaries = False


def responses_input(messages: Sequence[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """Chat messages as the Responses API takes them: a leading system message becomes the
    `instructions`; the rest become input items, parts renamed (`text` -> `input_text`,
    `image_url` -> `input_image` with the URL as a string). Assistant turns stay plain text."""
    instructions = None
    rest = list(messages)
    if rest and rest[0].get("role") == "system" and isinstance(rest[0].get("content"), str):
        instructions = rest.pop(0)["content"]
    return instructions, [_input_item(message) for message in rest]


def _input_item(message: Message) -> dict[str, Any]:
    content = message.get("content")
    if isinstance(content, list):
        content = [_input_part(part) for part in content]
    return {"role": message.get("role"), "content": content}


def _input_part(part: Any) -> Any:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"type": "input_text", "text": part.get("text", "")}
    if kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail") if isinstance(image, dict) else None
        return {"type": "input_image", "image_url": url, "detail": detail or "auto"}
    return part


def _response_options(
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    user: str | None,
    json_format: bool,
) -> dict[str, Any]:
    options: dict[str, Any] = {
        # The bot keeps its own history: nothing need be stored upstream.
        "store": False,
    }
    if max_tokens is not None:
        # The Responses API refuses a limit under 16; a budget that leaves less lets the answer
        # run over by those few tokens rather than fail.
        options["max_output_tokens"] = max(max_tokens, _LEAST_OUTPUT_TOKENS)
    # Reasoning models refuse any temperature.
    if temperature is not None and not is_reasoning_model(model):
        options["temperature"] = temperature
    if user is not None:
        options["user"] = user
    if json_format:
        options["text"] = {"format": {"type": "json_object"}}
    return options


# Put on a merged stream's queue when it is closed.
_CLOSED = object()


class MergedStream:
    """Several Responses streams read as one, each Delta tagged with its stream's index as
    `choice`, as chat completions tell the `n` choices of one stream apart.

    All open side by side, each retried by the client's policy until its first words; one that
    cannot open fails them all before anything is shown. Once open, a failure of any one ends
    them all with that failure, as it would end every choice of one chat-completions stream:
    what was written stays, and the caller hears of the failure. Leaving the `async with` or
    `close()` drops every connection at once.
    """

    def __init__(self, streams: Sequence[TextStream]) -> None:
        self._streams = list(streams)
        # Deltas, a stream's failure, None when one ends, _CLOSED when all are dropped.
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._readers: list[asyncio.Task[None]] = []
        self._running = 0

    @property
    def accepted(self) -> bool:
        return any(stream.accepted for stream in self._streams)

    @property
    def finish_reasons(self) -> dict[int, str]:
        """Why each choice ended, by its index."""
        return {
            index: stream.finish_reason
            for index, stream in enumerate(self._streams)
            if stream.finish_reason is not None
        }

    @property
    def finish_reason(self) -> str | None:
        return self._streams[0].finish_reason

    @property
    def usage(self) -> Usage | None:
        """What all the requests used together."""
        usages = [stream.usage for stream in self._streams if stream.usage is not None]
        if not usages:
            return None
        return Usage(
            sum(u.prompt_tokens for u in usages),
            sum(u.completion_tokens for u in usages),
            sum(u.total_tokens for u in usages),
        )

    async def __aenter__(self) -> Self:
        opening = [asyncio.create_task(stream.__aenter__()) for stream in self._streams]
        try:
            await asyncio.wait(opening, return_when=asyncio.FIRST_EXCEPTION)
        except BaseException:
            await self._abandon(opening)
            raise
        failure = next(
            (t.exception() for t in opening if t.done() and not t.cancelled() and t.exception()),
            None,
        )
        if failure is not None:
            await self._abandon(opening)
            raise failure
        self._running = len(self._streams)
        self._readers = [
            asyncio.create_task(self._read(index, stream))
            for index, stream in enumerate(self._streams)
        ]
        return self

    async def _abandon(self, opening: Sequence[asyncio.Task[Any]]) -> None:
        self.close()
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
        # The readers' own cancellations come back as results; ours is raised.
        await asyncio.gather(*self._readers, return_exceptions=True)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        while self._running:
            item = await self._queue.get()
            if item is _CLOSED:
                break
            if item is None:  # a stream ended cleanly
                self._running -= 1
            elif isinstance(item, BaseException):
                self.close()
                raise item
            elif isinstance(item, Delta):
                return item
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop reading and drop every upstream connection now. Safe to call more than once."""
        self._running = 0
        for stream in self._streams:
            stream.close()
        for reader in self._readers:
            reader.cancel()
        self._queue.put_nowait(_CLOSED)  # ends a read waiting in another task

    async def _read(self, index: int, stream: TextStream) -> None:
        try:
            async for delta in stream:
                self._queue.put_nowait(replace(delta, choice=index))
        except Exception as exc:
            self._queue.put_nowait(exc)
        else:
            self._queue.put_nowait(None)


class _SummaryIfAllowed:
    """A reasoning model's answer, asked with a summary of its thinking to stream first; if the
    API refuses summaries, asked again without, and the router asks for none from then on."""

    def __init__(self, router: ChatRouter, open_one: Callable[[bool], ResponseStream]) -> None:
        self._router = router
        self._open_one = open_one
        self._stream = open_one(router.summaries)
        self._closed = False

    @property
    def accepted(self) -> bool:
        return self._stream.accepted

    @property
    def finish_reason(self) -> str | None:
        return self._stream.finish_reason

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        return self._stream.finish_reasons

    @property
    def usage(self) -> Usage | None:
        return self._stream.usage

    async def __aenter__(self) -> Self:
        try:
            await self._stream.__aenter__()
        except BadRequest as err:
            if self._closed or not _refuses_summaries(err):
                raise
            self._router.refuse_summaries()
            self._stream = self._open_one(False)
            await self._stream.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._stream.__aiter__()

    def close(self) -> None:
        self._closed = True
        self._stream.close()


def _refuses_summaries(err: BadRequest) -> bool:
    # OpenAI: 400 unsupported_value, "Your organization must be verified to generate reasoning
    # summaries", param reasoning.summary (the param is not kept: the message says it).
    return err.code == "unsupported_value" and "summar" in err.message.lower()

"""Client for Ace Data Cloud's OpenAI-compatible API, or any server speaking the same format.

The caller owns the one shared `aiohttp.ClientSession`; this client never creates or closes it.
Replies are parsed leniently: unknown keys are ignored and `object` is never checked.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import aiohttp

from bot import metrics
from bot.ai.errors import (
    ApiError,
    ApiTimeout,
    ImageTooLarge,
    ServiceUnavailable,
    error_from_response,
)
from bot.ai.retry import RetryPolicy, with_retry
from bot.ai.sse import DONE, SseDecoder
from bot.ai.types import (
    ChatResult,
    Delta,
    EmbeddingResult,
    GeneratedImage,
    ImageFile,
    ImageResult,
    Message,
    Timeouts,
    Usage,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_ERROR_BODY_LIMIT = 64 * 1024
# No reply the bot expects comes near this: four 20 MB images in base64 are about 107 MB.
_MAX_REPLY = 128 * 1024 * 1024
_DOWNLOAD_CHUNK = 64 * 1024

DEFAULT_TIMEOUTS = Timeouts()
DEFAULT_RETRY = RetryPolicy()

ErrorFactory = Callable[[Mapping[str, Any]], ApiError]


# --- lenient field readers ----------------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _usage(raw: Any) -> Usage | None:
    """Chat (`prompt_tokens`...) and Responses/images (`input_tokens`...) usage alike."""
    if not isinstance(raw, Mapping):
        return None
    prompt = _int(raw.get("prompt_tokens", raw.get("input_tokens")))
    completion = _int(raw.get("completion_tokens", raw.get("output_tokens")))
    return Usage(prompt, completion, _int(raw.get("total_tokens")) or prompt + completion)


def _content_text(content: Any) -> str:
    """Message content as text: a string, or a list of parts that carry `text`."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def _without_none(fields: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    payload = {key: value for key, value in fields.items() if value is not None}
    payload.update(extra or {})
    return payload


@contextlib.contextmanager
def _translate(what: str, timeout_message: str, *, detail: bool = True) -> Iterator[None]:
    """Turn aiohttp and socket failures into the matching ApiError. Without `detail` the
    failure's own text (which names the URL) is left out."""
    try:
        yield
    except TimeoutError as exc:  # before OSError: TimeoutError is one
        raise ApiTimeout(f"{what}: {timeout_message}") from exc
    except (aiohttp.ClientError, OSError) as exc:
        text = str(exc) if detail else ""
        raise ServiceUnavailable(
            f"{what}: {type(exc).__name__}" + (f": {text}" if text else "")
        ) from (exc if detail else None)


# --- reply parsers, shared by whole and streamed calls -------------------------------------------


class _Parser:
    """Accumulates what a reply says besides its text; `feed` returns the pieces of text one
    event carries."""

    def __init__(self, make_error: ErrorFactory) -> None:
        self._make_error = make_error
        self.finish_reasons: dict[int, str] = {}  # by choice
        self.usage: Usage | None = None
        self.model: str | None = None
        self.trace_id: str | None = None
        self.complete = False  # a terminal event arrived: stop reading

    @property
    def finish_reason(self) -> str | None:
        return self.finish_reasons.get(0)

    def feed(self, event: Mapping[str, Any]) -> list[Delta]:
        raise NotImplementedError

    def incomplete(self) -> str | None:
        """At EOF without [DONE]: why the reply is unfinished, or None if it is whole."""
        return None if self.finish_reason or self.complete else "the stream ended too early"


class _ChatParser(_Parser):
    def feed(self, event: Mapping[str, Any]) -> list[Delta]:
        self.trace_id = _str(event.get("trace_id")) or self.trace_id
        if event.get("error"):
            raise self._make_error(event)
        self.model = self.model or _str(event.get("model"))
        self.usage = _usage(event.get("usage")) or self.usage
        choices = event.get("choices")
        deltas: list[Delta] = []
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, Mapping):
                continue
            # With `n` above 1 the choices come interleaved, told apart by their index.
            index = _int(choice.get("index"))
            # `delta` in a stream, `message` in a whole reply (or a server that ignored stream).
            body = choice.get("delta") or choice.get("message")
            if isinstance(body, Mapping):
                text = _content_text(body.get("content") or body.get("refusal"))
                if text:
                    deltas.append(Delta(text, index))
            finish_reason = _str(choice.get("finish_reason"))
            if finish_reason:
                self.finish_reasons[index] = finish_reason
        return deltas


class _ResponseParser(_Parser):
    """The Responses API: dispatch on `type`; a whole Response object has no `type`."""

    def feed(self, event: Mapping[str, Any]) -> list[Delta]:
        self.trace_id = _str(event.get("trace_id")) or self.trace_id
        kind = event.get("type")
        if kind == "response.output_text.delta":
            return _deltas(_str(event.get("delta")))
        if kind == "response.reasoning_summary_text.delta":
            return _deltas(_str(event.get("delta")), reasoning=True)
        if kind == "response.reasoning_summary_part.added" and _int(event.get("summary_index")):
            # A summary comes in parts, each a paragraph or a few: kept apart as paragraphs.
            return _deltas("\n\n", reasoning=True)
        if kind == "error" or (kind is None and event.get("error") and "output" not in event):
            raise self._make_error(event)
        response = event.get("response") if kind is not None else event
        if not isinstance(response, Mapping):
            return []
        self.model = self.model or _str(response.get("model"))
        self.usage = _usage(response.get("usage")) or self.usage
        status = response.get("status")
        if kind == "response.failed" or status == "failed":
            error = response.get("error") or {"message": "the response failed"}
            raise self._make_error({"error": error, "trace_id": self.trace_id})
        if kind == "response.incomplete" or status == "incomplete":
            details = response.get("incomplete_details")
            reason = details.get("reason") if isinstance(details, Mapping) else None
            self.finish_reasons[0] = "content_filter" if reason == "content_filter" else "length"
            self.complete = True
        elif kind == "response.completed" or (kind is None and status == "completed"):
            self.finish_reasons[0] = "stop"
            self.complete = True
        return _deltas(_output_text(response)) if kind is None else []


def _deltas(text: str | None, *, reasoning: bool = False) -> list[Delta]:
    return [Delta(text, reasoning=reasoning)] if text else []


def _answer_text(deltas: Sequence[Delta]) -> str:
    """The first choice's text (what a whole, non-streamed reply answers)."""
    return "".join(d.text for d in deltas if d.choice == 0 and not d.reasoning)


def _output_text(response: Mapping[str, Any]) -> str:
    output = response.get("output")
    texts = [
        part["text"]
        for item in (output if isinstance(output, list) else [])
        if isinstance(item, Mapping) and isinstance(item.get("content"), list)
        for part in item["content"]
        if isinstance(part, Mapping)
        and part.get("type") == "output_text"
        and isinstance(part.get("text"), str)
    ]
    return "".join(texts) if texts else _str(response.get("output_text")) or ""


def _image_result(data: Mapping[str, Any]) -> ImageResult:
    items = data.get("data")
    images = [
        GeneratedImage(
            b64_json=_str(item.get("b64_json")),
            url=_str(item.get("url")),
            revised_prompt=_str(item.get("revised_prompt")),
        )
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, Mapping) and (item.get("b64_json") or item.get("url"))
    ]
    return ImageResult(images=images, usage=_usage(data.get("usage")))


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int, what: str) -> bytes:
    """The whole body, refused once it passes `limit` (a base64 image reply can be large)."""
    body = bytearray()
    async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
        body += chunk
        if len(body) > limit:
            # Not worth retrying: the same request would bring the same reply.
            raise ApiError(f"{what}: the reply is larger than {limit} bytes")
    return bytes(body)


def _task_id(data: Mapping[str, Any]) -> str:
    task_id = _str(data.get("task_id"))
    if task_id is None:
        raise ApiError("the API did not start an image task", trace_id=_str(data.get("trace_id")))
    return task_id


def _embedding_result(data: Mapping[str, Any]) -> EmbeddingResult:
    items = data.get("data")
    rows = sorted(
        (item for item in (items if isinstance(items, list) else []) if isinstance(item, Mapping)),
        key=lambda item: _int(item.get("index")),
    )
    vectors = [
        [float(x) for x in row["embedding"]]
        for row in rows
        if isinstance(row.get("embedding"), list)
    ]
    return EmbeddingResult(vectors=vectors, usage=_usage(data.get("usage")))


def _decode_b64(text: str, max_bytes: int) -> bytes:
    compact = "".join(text.split())
    if len(compact) * 3 // 4 - compact[-2:].count("=") > max_bytes:
        raise ImageTooLarge(f"image larger than {max_bytes} bytes")
    try:
        return base64.b64decode(compact)
    except (binascii.Error, ValueError) as exc:
        raise ApiError("the image in the reply is not valid base64") from exc


# --- the transport: what the client and its streams share ---------------------------------------


class _Transport:
    """How a request reaches the API and how its failure comes back: the address and the token,
    the connect and idle timeouts, the retry policy, and the ApiError (its secrets redacted)
    made from an error reply. The client owns one and hands it to each stream it opens."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str,
        path_prefix: str,
        timeouts: Timeouts,
        retry: RetryPolicy,
        rand: Callable[[], float],
    ) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        prefix = path_prefix.strip("/")
        self._prefix = f"/{prefix}" if prefix else ""
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._secrets = (token,)
        self._connect = timeouts.connect
        self._retry = retry
        self._rand = rand
        self.stream_idle = timeouts.stream_idle

    def _url(self, path: str) -> str:
        # The one place that knows the prefix: "/openai" for Ace Data Cloud, "/v1" elsewhere.
        return f"{self._base_url}{self._prefix}/{path.lstrip('/')}"

    def _timeout(self, total: float | None, idle: float | None = None) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=total, sock_connect=self._connect, sock_read=idle)

    async def post(
        self,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        form: aiohttp.FormData | None = None,
        total: float | None,
        idle: float | None = None,
    ) -> aiohttp.ClientResponse:
        """The API's reply to a POST with the token, whatever its status: the caller reads it.
        `total` bounds the whole call, `idle` each wait for bytes (None: no bound)."""
        return await self._session.post(
            self._url(path),
            json=json_body,
            data=form,
            headers=self._headers,
            timeout=self._timeout(total, idle),
            raise_for_status=False,
        )

    async def get_without_token(self, url: str, *, total: float) -> aiohttp.ClientResponse:
        """A GET of a URL that may belong to another host (a storage host's image): no token."""
        return await self._session.get(url, timeout=self._timeout(total), raise_for_status=False)

    async def run(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, retried per the policy; its final failure is logged, then raised."""
        try:
            return await with_retry(self._retry, call, what=what, rand=self._rand)
        except ApiError as err:
            self.log_failure(what, err)
            raise

    def log_failure(self, what: str, err: ApiError) -> None:
        """Every call's final failure comes here, once."""
        err.redact(self._secrets)
        log.warning("%s failed: %s: %s", what, type(err).__name__, err)
        metrics.count_api_error(err.code, err.status, type(err).__name__)

    async def error_from(self, resp: aiohttp.ClientResponse) -> ApiError:
        """The ApiError an error status means, read from a bounded part of its body."""
        body = bytearray()
        while len(body) < _ERROR_BODY_LIMIT:
            chunk = await resp.content.read(_ERROR_BODY_LIMIT - len(body))
            if not chunk:
                break
            body += chunk
        return error_from_response(resp.status, bytes(body), resp.headers, secrets=self._secrets)

    def payload_error(
        self, payload: Mapping[str, Any], resp: aiohttp.ClientResponse | None = None
    ) -> ApiError:
        """The ApiError an `error` in a reply's JSON means (`resp`: the reply it came in)."""
        status, headers = (resp.status, resp.headers) if resp is not None else (None, None)
        return error_from_response(status, payload, headers, secrets=self._secrets)


# --- the client ----------------------------------------------------------------------------------


class ApiClient:
    """Typed calls to the chat, responses, images and embeddings endpoints."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        token: str,
        path_prefix: str = "/openai",
        timeouts: Timeouts = DEFAULT_TIMEOUTS,
        retry: RetryPolicy = DEFAULT_RETRY,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._transport = _Transport(
            session,
            base_url=base_url,
            token=token,
            path_prefix=path_prefix,
            timeouts=timeouts,
            retry=retry,
            rand=rand,
        )
        self._timeouts = timeouts

    # --- chat completions ---

    async def chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        user: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        payload = _chat_payload(messages, model, temperature, max_tokens, user, extra)

        def parse(data: Mapping[str, Any]) -> ChatResult:
            parser = _ChatParser(self._transport.payload_error)
            text = _answer_text(parser.feed(data))
            return ChatResult(text, parser.finish_reason, parser.usage, parser.model)

        return await self._post("chat/completions", payload, self._timeouts.chat, parse)

    def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str,
        temperature: float | None = None,
        max_tokens: int | None = None,
        user: str | None = None,
        n: int = 1,
        json_format: bool = False,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatStream:
        """A streamed answer; with `n` > 1 its Deltas interleave the choices by `Delta.choice`."""
        payload = _chat_payload(
            messages, model, temperature, max_tokens, user, extra, n=n, json_format=json_format
        )
        payload["stream"] = True
        payload.setdefault("stream_options", {"include_usage": True})
        return ChatStream(
            self._transport, "chat/completions", payload, _ChatParser, self._first_wait(model)
        )

    # --- responses ---

    async def respond(
        self,
        input: str | Sequence[Message],
        *,
        model: str,
        instructions: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        payload = _response_payload(input, model, instructions, extra)

        def parse(data: Mapping[str, Any]) -> ChatResult:
            parser = _ResponseParser(self._transport.payload_error)
            text = _answer_text(parser.feed(data))
            return ChatResult(text, parser.finish_reason, parser.usage, parser.model)

        return await self._post("responses", payload, self._timeouts.chat, parse)

    def stream_response(
        self,
        input: str | Sequence[Message],
        *,
        model: str,
        instructions: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ResponseStream:
        payload = _response_payload(input, model, instructions, extra)
        payload["stream"] = True
        return ResponseStream(
            self._transport, "responses", payload, _ResponseParser, self._first_wait(model)
        )

    def _first_wait(self, model: str) -> float:
        """How long a stream may go without a word before its first: longer for a model that
        thinks first, and may stream nothing meanwhile."""
        idle = self._timeouts.stream_idle
        return max(idle, self._timeouts.thinking) if is_reasoning_model(model) else idle

    # --- images ---

    async def generate_images(
        self,
        prompt: str,
        *,
        model: str,
        n: int = 1,
        size: str | None = None,
        quality: str | None = None,
        response_format: str | None = None,
        extra: Mapping[str, Any] | None = None,
        background: bool = False,
        poll_every: float = 3.0,
    ) -> ImageResult:
        """Generate images; with `background`, as a task polled every `poll_every` seconds."""
        fields = {
            "model": model,
            "prompt": prompt,
            "n": n,
            "size": size,
            "quality": quality,
            "response_format": response_format,
        }
        payload = _without_none(fields, extra)
        if not background:
            return await self._post(
                "images/generations", payload, self._timeouts.images, _image_result
            )
        # Ace Data Cloud's task mode: the request returns at once with a task id, and the
        # result is polled for, so no connection has to stay open for minutes.
        payload["async"] = True
        task_id = await self._post("images/generations", payload, self._timeouts.other, _task_id)
        return await self._finished_task(task_id, poll_every)

    async def _finished_task(self, task_id: str, poll_every: float) -> ImageResult:
        deadline = asyncio.get_running_loop().time() + self._timeouts.images
        query = {"action": "retrieve", "id": task_id}
        while True:
            task = await self._post("tasks", query, self._timeouts.other, lambda data: data)
            if task.get("finished_at"):
                response = task.get("response")
                response = response if isinstance(response, Mapping) else {}
                if response.get("error") or response.get("success") is False:
                    raise self._transport.payload_error(response)
                return _image_result(response)
            if asyncio.get_running_loop().time() + poll_every > deadline:
                raise ApiTimeout(
                    f"image task {task_id} unfinished after {self._timeouts.images:g} s"
                )
            await asyncio.sleep(poll_every)

    async def edit_images(
        self,
        prompt: str,
        images: Sequence[ImageFile],
        *,
        model: str,
        mask: ImageFile | None = None,
        n: int = 1,
        size: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> ImageResult:
        if not images:
            raise ValueError("edit_images needs at least one image")
        fields = _without_none({"model": model, "prompt": prompt, "n": n, "size": size}, extra)

        def form() -> aiohttp.FormData:
            # Built afresh for each attempt: a FormData can be sent only once.
            data = aiohttp.FormData()
            for name, value in fields.items():
                data.add_field(name, value if isinstance(value, str) else json.dumps(value))
            field = "image" if len(images) == 1 else "image[]"
            for image in images:
                data.add_field(
                    field, image.data, filename=image.filename, content_type=image.content_type
                )
            if mask is not None:
                data.add_field(
                    "mask", mask.data, filename=mask.filename, content_type=mask.content_type
                )
            return data

        return await self._post("images/edits", form, self._timeouts.images, _image_result)

    async def fetch_image_bytes(self, image: GeneratedImage, *, max_bytes: int) -> bytes:
        """The image's bytes, from `b64_json` or downloaded from `url`, at most `max_bytes`."""
        try:
            if image.b64_json:
                return _decode_b64(image.b64_json, max_bytes)
            if image.url and image.url.startswith("data:"):
                return _decode_b64(image.url.partition(",")[2], max_bytes)
            if image.url:
                return await self._download(image.url, max_bytes)
            raise ApiError("the reply held no image")
        except ApiError as err:
            self._transport.log_failure("fetching an image", err)
            raise

    async def _download(self, url: str, max_bytes: int) -> bytes:
        # No Authorization header: the URL may belong to a storage host, not to the API.
        # Neither the URL is logged: it may carry a signature.
        seconds = self._timeouts.other
        what = "GET image"
        with _translate(what, f"no image within {seconds:g} s", detail=False):
            async with await self._transport.get_without_token(url, total=seconds) as resp:
                request_id = resp.headers.get("x-request-id")
                if resp.status >= 400:
                    raise ServiceUnavailable(
                        f"{what}: download failed", status=resp.status, request_id=request_id
                    )
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise ImageTooLarge(f"image of {resp.content_length} bytes > {max_bytes}")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(_DOWNLOAD_CHUNK):
                    data += chunk
                    if len(data) > max_bytes:
                        raise ImageTooLarge(f"image larger than {max_bytes} bytes")
                return bytes(data)

    # --- embeddings and token check ---

    async def embed(
        self,
        inputs: str | Sequence[str],
        *,
        model: str,
        dimensions: int | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> EmbeddingResult:
        fields = {
            "model": model,
            "input": inputs if isinstance(inputs, str) else list(inputs),
            "dimensions": dimensions,
        }
        payload = _without_none(fields, extra)
        return await self._post("embeddings", payload, self._timeouts.other, _embedding_result)

    async def check_token(self, *, model: str = "text-embedding-3-small") -> None:
        """Prove the token works with the cheapest authenticated call: a one-word embedding."""
        await self.embed("ping", model=model)

    # --- plumbing ---

    async def _post(
        self,
        path: str,
        body: Mapping[str, Any] | Callable[[], aiohttp.FormData],
        seconds: float,
        parse: Callable[[Mapping[str, Any]], T],
    ) -> T:
        what = f"POST {path}"
        transport = self._transport

        async def once() -> T:
            json_body, form = (None, body()) if callable(body) else (body, None)
            with _translate(what, f"no reply within {seconds:g} s"):
                async with await transport.post(
                    path, json_body=json_body, form=form, total=seconds
                ) as resp:
                    if resp.status >= 400:
                        raise await transport.error_from(resp)
                    raw = await _read_bounded(resp, _MAX_REPLY, what)
            try:
                data = json.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, Mapping):
                raise ApiError(
                    f"{what}: the reply is not a JSON object",
                    status=resp.status,
                    request_id=resp.headers.get("x-request-id"),
                )
            if data.get("error"):
                raise transport.payload_error(data, resp)
            return parse(data)

        return await transport.run(what, once)


def _chat_payload(
    messages: Sequence[Message],
    model: str,
    temperature: float | None,
    max_tokens: int | None,
    user: str | None,
    extra: Mapping[str, Any] | None,
    *,
    n: int = 1,
    json_format: bool = False,
) -> dict[str, Any]:
    fields = {
        "model": model,
        "messages": [dict(message) for message in messages],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "user": user,
        "n": n if n > 1 else None,
        "response_format": {"type": "json_object"} if json_format else None,
    }
    if is_reasoning_model(model):
        # They refuse `max_tokens` (its place is `max_completion_tokens`, which counts their
        # thinking too) and any temperature but their own.
        fields["max_completion_tokens"] = fields.pop("max_tokens")
        fields["temperature"] = None
    return _without_none(fields, extra)


_REASONING_FAMILIES = ("o1", "o3", "o4", "gpt-5")


def is_reasoning_model(model: str) -> bool:
    """o-series and gpt-5 models, which think before they answer."""
    name = model.lower().split(":", 1)[0]
    return any(name == family or name.startswith(f"{family}-") for family in _REASONING_FAMILIES)


def _response_payload(
    input: str | Sequence[Message],
    model: str,
    instructions: str | None,
    extra: Mapping[str, Any] | None,
) -> dict[str, Any]:
    fields = {
        "model": model,
        "input": input if isinstance(input, str) else [dict(item) for item in input],
        "instructions": instructions,
    }
    return _without_none(fields, extra)


# --- streams -------------------------------------------------------------------------------------


class _StreamClosed(Exception):
    """The stream was closed by another task while it was being opened."""


class _EventStream:
    """An SSE reply read as Deltas: `async with ... as stream: async for delta in stream`.

    Opening (request, status, and reading up to the first delta) is retried per the client's
    policy; once a delta is out, failures are raised, never retried. Leaving the `async with`
    early or cancelling the reading task drops the upstream connection at once.
    """

    def __init__(
        self,
        transport: _Transport,
        path: str,
        payload: dict[str, Any],
        parser_type: type[_Parser],
        first_wait: float,
    ) -> None:
        self._transport = transport
        self._idle = transport.stream_idle
        self._first_wait = first_wait
        self._path = path
        self._payload = payload
        self._parser_type = parser_type
        self._what = f"POST {path} (stream)"
        self._parser = parser_type(self._make_error)
        self._resp: aiohttp.ClientResponse | None = None
        self._posting: asyncio.Task[aiohttp.ClientResponse] | None = None
        self._decoder = SseDecoder()
        self._events: deque[str] = deque()  # decoded, not yet parsed
        self._pending: deque[Delta] = deque()  # parsed, not yet read (the first while opening)
        self._eof = False
        self._state = "new"  # new -> open -> done (read to the end) | closed (dropped)
        # Keep-alive comments, blank lines and empty deltas keep bytes flowing but are no
        # progress: the idle timeout runs from the last text, not from the last byte.
        self._quiet_deadline = 0.0
        self._answering = False  # a word of the answer came (not only of its thinking)
        self.request_id: str | None = None
        # A request the API took is paid for, whatever comes of it, retries included.
        self.accepted = False

    @property
    def finish_reason(self) -> str | None:
        return self._parser.finish_reason

    @property
    def finish_reasons(self) -> Mapping[int, str]:
        """Why each choice ended, by its index."""
        return self._parser.finish_reasons

    @property
    def usage(self) -> Usage | None:
        return self._parser.usage

    @property
    def model(self) -> str | None:
        return self._parser.model

    @property
    def trace_id(self) -> str | None:
        return self._parser.trace_id

    async def __aenter__(self) -> Self:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Delta:
        await self._open()
        if self._pending:
            return self._pending.popleft()
        if self._state != "open":
            raise StopAsyncIteration
        try:
            delta = await self._next_delta()
        except ApiError as err:
            if self._state == "closed":  # closed by another task meanwhile: not a failure
                raise StopAsyncIteration from None
            self.close()
            self._transport.log_failure(self._what, err)
            raise
        except BaseException:
            self.close()
            raise
        if delta is None:
            raise StopAsyncIteration
        return delta

    def close(self) -> None:
        """Stop reading and drop the upstream connection now. Safe to call more than once."""
        if self._state != "done":
            self._state = "closed"
        self._pending.clear()
        if self._posting is not None:
            self._posting.cancel()
        if self._resp is not None:
            self._resp.close()
            self._resp = None

    async def aclose(self) -> None:
        self.close()

    async def _open(self) -> None:
        if self._state != "new":
            return
        self._state = "open"
        started = time.monotonic()
        try:
            await self._transport.run(self._what, self._attempt)
            if self._pending:  # opening reads up to the first token
                metrics.API_FIRST_TOKEN.observe(time.monotonic() - started)
        except _StreamClosed:
            pass  # closed by another task while opening: an empty stream, not an error
        except BaseException:
            self.close()
            raise

    async def _attempt(self) -> None:
        try:
            await self._attempt_once()
        except ApiError:
            if self._state == "closed":
                raise _StreamClosed from None  # not a failure, and nothing to retry
            raise

    async def _attempt_once(self) -> None:
        if self._state == "closed":
            raise _StreamClosed
        self._reset()
        idle = self._first_wait
        self._quiet_deadline = asyncio.get_running_loop().time() + idle
        # The request runs as a task of its own so that close() can abort the wait for headers.
        self._posting = posting = asyncio.create_task(
            self._transport.post(self._path, json_body=self._payload, total=None, idle=idle)
        )
        try:
            with _translate(self._what, f"no reply within {idle:g} s"):
                resp = await posting
        except asyncio.CancelledError:
            if posting.done() and not posting.cancelled() and posting.exception() is None:
                posting.result().close()  # the reply came just as we were cancelled
            task = asyncio.current_task()
            if self._state == "closed" and not (task and task.cancelling()):
                raise _StreamClosed from None
            raise
        finally:
            self._posting = None
        self._resp = resp
        if self._state == "closed":  # closed just as the headers arrived
            self.close()
            raise _StreamClosed
        self.request_id = resp.headers.get("x-request-id")
        if resp.status >= 400:
            with _translate(self._what, f"no error body within {idle:g} s"):
                raise await self._transport.error_from(resp)
        self.accepted = True
        if resp.content_type == "application/json":
            # The server ignored `stream`: its whole reply parses like one big event.
            body = bytearray()
            while chunk := await self._read():
                body += chunk
            self._events.append(body.decode("utf-8", "replace"))
            self._eof = True
        first = await self._next_delta()
        if first is not None:
            self._pending.appendleft(first)

    def _reset(self) -> None:
        if self._resp is not None:
            self._resp.close()
            self._resp = None
        self._parser = self._parser_type(self._make_error)
        self._decoder = SseDecoder()
        self._events.clear()
        self._pending.clear()
        self._eof = False
        self._answering = False
        self.request_id = None

    async def _next_delta(self) -> Delta | None:
        """The next non-empty delta, or None at a clean end; raises ApiError otherwise."""
        while True:
            if self._pending:
                return self._pending.popleft()
            while self._events:
                data = self._events.popleft()
                if data == DONE:
                    self._finish()
                    return None
                try:
                    event = json.loads(data)
                except ValueError:
                    log.debug("%s: skipping an event that is not JSON", self._what)
                    continue
                if not isinstance(event, Mapping):
                    continue
                deltas = self._parser.feed(event)
                if self._parser.complete:
                    self._finish()
                if any(not delta.text.isspace() for delta in deltas):
                    # Until the answer's first word, a model that shares its thinking may
                    # pause as long as one that thinks in silence.
                    self._answering = self._answering or any(
                        not delta.reasoning and not delta.text.isspace() for delta in deltas
                    )
                    wait = self._idle if self._answering else self._first_wait
                    self._quiet_deadline = asyncio.get_running_loop().time() + wait
                if deltas:
                    self._pending.extend(deltas[1:])
                    return deltas[0]
                if self._parser.complete:
                    return None
            if self._eof:
                problem = self._parser.incomplete()
                if problem is not None:
                    raise ServiceUnavailable(
                        f"{self._what}: {problem}",
                        trace_id=self._parser.trace_id,
                        request_id=self.request_id,
                    )
                self._finish()
                return None
            chunk = await self._read()
            if chunk:
                self._events.extend(self._decoder.feed(chunk))
            else:
                self._eof = True
                self._events.extend(self._decoder.close())

    async def _read(self) -> bytes:
        if self._resp is None:  # closed meanwhile
            return b""
        with _translate(self._what, f"no new text for {self._idle:g} s"):
            # Checked here too: a read that finds bytes buffered never waits, so never times out.
            if asyncio.get_running_loop().time() >= self._quiet_deadline:
                raise TimeoutError
            async with asyncio.timeout_at(self._quiet_deadline):
                return await self._resp.content.readany()

    def _finish(self) -> None:
        self._state = "done"
        if self._resp is not None:
            self._resp.release()  # back to the pool when the body was read to its end
            self._resp = None

    def _make_error(self, payload: Mapping[str, Any]) -> ApiError:
        err = self._transport.payload_error(payload)
        err.request_id = err.request_id or self.request_id
        return err


class ChatStream(_EventStream):
    """Streamed chat completion; `usage` comes from the `include_usage` chunk."""


class ResponseStream(_EventStream):
    """Streamed Responses API reply; ends at `response.completed` or `response.incomplete`."""

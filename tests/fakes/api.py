"""A fake of Ace Data Cloud's OpenAI-compatible API that speaks the wire format, quirks included.

In tests::

    async with FakeApi.running() as api:
        api.script(Fail(429, "too_many_requests"), Reply(text="Hello", chunk_size=2))
        ...  # point the client at api.url with api.token
        assert len(api.requests) == 2

Each API request takes the next scripted behaviour (FIFO); with none left, `api.faults` may
fail it (a FaultMix, off by default), else `api.default` (a Reply) answers. Streams follow the
quirks seen in the wild: JSON with spaces, trailing spaces, `"recipient": "all"` and
`"role": "assistant"` on every chunk, an empty trailing delta, a finish_reason chunk, a
`choices: []` usage chunk, then `data: [DONE]`. `/responses` streams OpenAI's Responses events
(with `sequence_number`; a reasoning summary first when a reasoning model is asked for one) and
refuses, as OpenAI does, what that endpoint does not take.

As a separate process (for benchmarks)::

    python -m tests.fakes.api --port 8080 --text-length 800 --chunk-size 4 \\
        --chunks-per-second 30 --first-byte-delay 0.3

prints its URL on stdout and serves until killed; `GET /_fake/streams` returns each stream's
first and last content-chunk times on the `time.time()` clock. `--fault-rate 0.05` makes that
share of requests fail (see FaultMix); `GET /_fake/faults` counts them by kind.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import random
import re
import struct
import time
import uuid
import zlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import BodyPartReader, web

DEFAULT_TOKEN = "fake-token-0123456789"
DEFAULT_SUMMARY = "**Weighing the question**\n\nThinking it through before answering."
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation "
)


def make_text(length: int) -> str:
    """Deterministic filler text of exactly `length` characters."""
    return (_LOREM * (length // len(_LOREM) + 1))[:length]


def tiny_png(seed: int = 0) -> bytes:
    """A valid 1x1 PNG whose colour depends on `seed` (so several images differ)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixel = b"\x00" + bytes([(seed * 40) % 256, (seed * 80) % 256, (seed * 120) % 256])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(pixel))
        + chunk(b"IEND", b"")
    )


# --- behaviours ----------------------------------------------------------------------------------


@dataclass
class Reply:
    """A normal answer. `text=None` echoes the last user message (or the fake's default text)."""

    text: str | None = None
    chunk_size: int = 4  # characters per content chunk; 0 sends the text as one chunk
    chunk_interval: float = 0.0  # seconds between content chunks
    first_byte_delay: float = 0.0  # seconds before the response starts
    keepalive: bool = False  # a `: keep-alive` comment before every event
    long_line: bool = False  # the whole text in one event (3 MB of text if text is None)
    usage: Mapping[str, int] | None = None
    finish_reason: str | None = "stop"  # None: no finish chunk
    send_done: bool = True  # end with `data: [DONE]`
    legacy_object: bool = False  # a whole chat reply labelled "chat.completion.chunk"
    ignore_stream: bool = False  # answer a stream request with one whole JSON reply
    # With `n` > 1: the texts of choices 0, 1, ...; a choice left out says the first's text
    # followed by its number, " (2)", " (3)"...
    choices: tuple[str, ...] = ()
    # Responses API, reasoning models asked for `reasoning.summary`: the summary of their
    # thinking (None: DEFAULT_SUMMARY), streamed in chunk_size pieces this many seconds apart.
    summary: str | None = None
    summary_interval: float = 0.0
    think_seconds: float = 0.0  # Responses API: the wait after `in_progress`, before any output


@dataclass
class Fail:
    """An error reply. shape: object (Ace), openai, string, missing (no `error`), html."""

    status: int
    code: str | None = None
    message: str | None = None
    shape: str = "object"
    trace_id: str | None = None


@dataclass
class MidStreamError:
    """An `error` payload after `after_chunks` content chunks (a 500 for non-stream calls).

    For the Responses API `event` picks `error` or `response.failed`.
    """

    after_chunks: int = 1
    code: str = "api_error"
    message: str = "the upstream model failed"
    event: str = "error"


@dataclass
class DropConnection:
    """Abort the connection after `after_chunks` content chunks (None: before any reply byte)."""

    after_chunks: int | None = 0


@dataclass
class MalformedLine:
    """A `data:` line cut short (not JSON) after `after_chunks` content chunks; the stream then
    goes on. A non-stream request gets a reply body cut short instead."""

    after_chunks: int = 1


@dataclass
class Hang:
    """Wait `seconds` before replying, or after `after_chunks` content chunks; then go on."""

    seconds: float
    after_chunks: int | None = None


@dataclass
class Trickle:
    """After `after_chunks` content chunks, send bytes that carry no text every `every` seconds
    for `seconds`, then go on: `comment` (`: ping`), `whitespace` (blank lines), `empty`
    (deltas with empty content, as role-only chunks are) or `space` (deltas of one space)."""

    seconds: float
    after_chunks: int = 0
    every: float = 0.05
    kind: str = "comment"


@dataclass
class ImageReply:
    """An images answer: `response_format` overrides the request's; `data` the image bytes."""

    response_format: str | None = None
    data: bytes | None = None
    revised_prompt: str | None = None
    task_seconds: float = 0.0  # with `async`: how long the task takes to finish
    task_error: str | None = None  # with `async`: the task fails with this error code


Behaviour = (
    Reply | Fail | MidStreamError | DropConnection | MalformedLine | Hang | Trickle | ImageReply
)
Fault = MidStreamError | DropConnection | MalformedLine | Hang | Trickle

_KINDS: dict[str, type[Behaviour]] = {
    "reply": Reply,
    "fail": Fail,
    "mid_stream_error": MidStreamError,
    "drop_connection": DropConnection,
    "malformed_line": MalformedLine,
    "hang": Hang,
    "trickle": Trickle,
    "image_reply": ImageReply,
}


class FaultMix:
    """Unscripted requests fail at `rate`, evenly spread over a 500, a 429, a stream dropped
    mid-answer and a malformed stream line; seeded, so a run can be repeated."""

    KINDS = ("500", "429", "drop", "malformed")

    def __init__(self, rate: float, seed: int | None = None) -> None:
        self.rate = rate
        self.injected: Counter[str] = Counter()
        self._rng = random.Random(seed)

    def pick(self) -> Behaviour | None:
        if self.rate <= 0 or self._rng.random() >= self.rate:
            return None
        kind = self._rng.choice(self.KINDS)
        self.injected[kind] += 1
        # Mid-answer: after at least one content chunk, at most twenty.
        after = self._rng.randint(1, 20)
        if kind == "500":
            return Fail(500, "api_error")
        if kind == "429":
            return Fail(429, "too_many_requests")
        if kind == "drop":
            return DropConnection(after_chunks=after)
        return MalformedLine(after_chunks=after)


# --- records -------------------------------------------------------------------------------------


@dataclass
class RecordedPart:
    name: str | None
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class RecordedRequest:
    id: int
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    parts: list[RecordedPart]
    received_at: float  # time.monotonic()
    received_wall: float  # time.time()
    stream: bool = False
    chunk_times: list[float] = field(default_factory=list)  # monotonic, content chunks only
    first_chunk_wall: float | None = None
    last_chunk_wall: float | None = None
    completed: bool = False  # the whole reply was written
    dropped: bool = False  # the fake dropped the connection on purpose
    client_disconnected: bool = False  # the client went away before the reply was complete
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # the handler is done

    def parts_named(self, name: str) -> list[RecordedPart]:
        return [part for part in self.parts if part.name == name]

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": self.path,
            "stream": self.stream,
            "received_at": self.received_wall,
            "first_chunk_at": self.first_chunk_wall,
            "last_chunk_at": self.last_chunk_wall,
            "chunks": len(self.chunk_times),
            "completed": self.completed,
            "client_disconnected": self.client_disconnected,
            "last_message": self.last_message(),
        }

    def last_message(self) -> str | None:
        """The text of a chat request's last message (a benchmark tells its streams apart by
        the question they answer)."""
        body = self.json if isinstance(self.json, dict) else {}
        messages = body.get("messages") or body.get("input")
        if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
            return None
        content = messages[-1].get("content")
        if isinstance(content, list):  # parts: the text ones, joined
            content = " ".join(
                str(part.get("text", "")) for part in content if isinstance(part, dict)
            )
        return content if isinstance(content, str) else None


class _Dropped(Exception):
    """Raised inside a handler after the fake aborted the connection on purpose."""


# --- the server ----------------------------------------------------------------------------------

Handler = Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]]


class FakeApi:
    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        default: Reply | None = None,
        default_text: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.token = token
        self.default = default or Reply()
        self.default_text = default_text  # None: echo the last user message
        # Refuse reasoning summaries, as OpenAI does for organizations it has not verified.
        self.refuse_summaries = False
        self.requests: list[RecordedRequest] = []
        # Failures for the requests nothing was scripted for (embeddings aside).
        self.faults = FaultMix(0.0)
        self.url = ""
        self._host = host
        self._port = port
        self._script: deque[Behaviour] = deque()
        # Embeddings have a script of their own: the bot embeds in the background, and must
        # not take what a test queued for the next answer.
        self._embedding_script: deque[Behaviour] = deque()
        self._ids = itertools.count(1)
        self._files: dict[str, bytes] = {}
        self._tasks: dict[str, dict[str, Any]] = {}
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Condition()

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls,
        *,
        token: str = DEFAULT_TOKEN,
        default: Reply | None = None,
        default_text: str | None = None,
        port: int = 0,
    ) -> AsyncIterator[FakeApi]:
        api = cls(token=token, default=default, default_text=default_text, port=port)
        await api.start()
        try:
            yield api
        finally:
            await api.stop()

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next API requests, in order."""
        self._script.extend(behaviours)

    def script_embeddings(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next embeddings requests, in order."""
        self._embedding_script.extend(behaviours)

    async def wait_for_requests(self, count: int, within: float = 5.0) -> list[RecordedRequest]:
        """Wait until `count` API requests have arrived (raises TimeoutError otherwise)."""
        async with asyncio.timeout(within), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    def requests_to(self, suffix: str) -> list[RecordedRequest]:
        return [rec for rec in self.requests if rec.path.endswith(suffix)]

    async def start(self) -> None:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        api_routes: dict[str, Handler] = {
            "chat/completions": self._chat,
            "responses": self._responses,
            "embeddings": self._embeddings,
            "images/generations": self._images,
            "images/edits": self._images,
            "tasks": self._tasks_route,
        }
        for prefix in ("/openai", "/v1"):
            for path, handler in api_routes.items():
                app.router.add_post(f"{prefix}/{path}", self._guard(handler))
        app.router.add_get("/files/{name}", self._file)
        app.router.add_get("/_fake/streams", self._control_streams)
        app.router.add_get("/_fake/requests", self._control_requests)
        app.router.add_get("/_fake/faults", self._control_faults)
        app.router.add_post("/_fake/reset", self._control_reset)
        app.router.add_post("/_fake/script", self._control_script)
        app.router.add_post("/_fake/default", self._control_default)
        # handler_cancellation: a client that goes away cancels its handler, which records it.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- plumbing ---

    def _guard(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            rec = await self._record(request)
            try:
                if request.headers.get("Authorization") != f"Bearer {self.token}":
                    got = request.headers.get("Authorization", "").removeprefix("Bearer ")
                    # Echo what was sent, as some servers do: the client must redact it.
                    return self._error(401, "invalid_token", f"token {got!r} is not valid")
                response = await handler(request, rec)
                rec.completed = True
                return response
            except asyncio.CancelledError:
                self._mark_disconnected(rec)
                raise
            except ConnectionResetError:
                self._mark_disconnected(rec)
                raise asyncio.CancelledError from None
            except _Dropped:
                raise asyncio.CancelledError from None
            finally:
                rec.finished.set()

        return wrapped

    @staticmethod
    def _mark_disconnected(rec: RecordedRequest) -> None:
        if not rec.dropped:
            rec.client_disconnected = True
            rec.disconnected.set()

    async def _record(self, request: web.Request) -> RecordedRequest:
        body: Any = None
        parts: list[RecordedPart] = []
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if isinstance(part, BodyPartReader):
                    data = bytes(await part.read(decode=False))
                    ctype = part.headers.get("Content-Type")
                    parts.append(RecordedPart(part.name, part.filename, ctype, data))
        else:
            raw = await request.read()
            with contextlib.suppress(ValueError):
                body = json.loads(raw) if raw else None
        rec = RecordedRequest(
            id=next(self._ids),
            method=request.method,
            path=request.path,
            headers=dict(request.headers),
            json=body,
            parts=parts,
            received_at=time.monotonic(),
            received_wall=time.time(),
            stream=isinstance(body, dict) and bool(body.get("stream")),
        )
        self.requests.append(rec)
        async with self._arrived:
            self._arrived.notify_all()
        return rec

    def _next(self, script: deque[Behaviour] | None = None) -> Behaviour:
        if script is not None:
            return script.popleft() if script else self.default
        if self._script:
            return self._script.popleft()
        return self.faults.pick() or self.default

    def _reply_for(self, behaviour: Behaviour) -> tuple[Reply, Fault | None]:
        if isinstance(behaviour, Reply):
            return behaviour, None
        if isinstance(behaviour, MidStreamError | DropConnection | Hang | Trickle):
            return self.default, behaviour
        return self.default, None

    def _text(self, reply: Reply, body: Any) -> str:
        if reply.text is not None:
            return reply.text
        if reply.long_line:
            return make_text(3 * 1024 * 1024)
        if self.default_text is not None:
            return self.default_text
        if _asks_json(body):
            return json.dumps({"echo": _last_user_text(body)})
        return f"Echo: {_last_user_text(body)}"

    def _choice_texts(self, reply: Reply, body: Any) -> list[str]:
        """The text of each of the `n` choices asked for."""
        n = body.get("n", 1)
        first = reply.choices[0] if reply.choices else self._text(reply, body)
        texts = [first, *reply.choices[1:n]]
        return texts + [f"{first} ({index + 1})" for index in range(len(texts), n)]

    @staticmethod
    def _headers() -> dict[str, str]:
        return {"x-request-id": f"req-{uuid.uuid4().hex[:12]}"}

    def _error(
        self,
        status: int,
        code: str | None,
        message: str | None = None,
        shape: str = "object",
        trace_id: str | None = None,
    ) -> web.Response:
        message = message or f"fake failure {code or status}"
        trace_id = trace_id or f"trace-{uuid.uuid4().hex[:12]}"
        payload: dict[str, Any]
        if shape == "html":
            html = f"<html><body><h1>{status} Bad Gateway</h1></body></html>"
            return web.Response(status=status, text=html, content_type="text/html")
        if shape == "openai":
            error = {"message": message, "type": "invalid_request_error", "param": None}
            payload = {"error": {**error, "code": code}}
        elif shape == "string":
            payload = {"error": message, "code": code, "trace_id": trace_id}
        elif shape == "missing":
            payload = {"success": False, "trace_id": trace_id}
        else:
            payload = {"error": {"code": code, "message": message}, "trace_id": trace_id}
            payload["success"] = False
        return web.json_response(payload, status=status, headers=self._headers())

    async def _before(
        self, request: web.Request, rec: RecordedRequest, script: deque[Behaviour] | None = None
    ) -> _Plan:
        """Take the next behaviour (of `script`, by default the main one) and apply what
        happens before any reply byte."""
        behaviour = self._next(script)
        if isinstance(behaviour, Fail):
            raise _Respond(
                self._error(
                    behaviour.status,
                    behaviour.code,
                    behaviour.message,
                    behaviour.shape,
                    behaviour.trace_id,
                )
            )
        plan = _Plan(self.default)
        if isinstance(behaviour, Reply):
            plan.reply = behaviour
        elif isinstance(behaviour, ImageReply):
            plan.image = behaviour
        else:
            plan.fault = behaviour
        fault = plan.fault
        if isinstance(fault, Hang) and (fault.after_chunks is None or not rec.stream):
            await asyncio.sleep(fault.seconds)
            plan.fault = None
        if isinstance(fault, DropConnection) and (fault.after_chunks is None or not rec.stream):
            self._drop(request, rec)
        if isinstance(fault, MidStreamError) and not rec.stream:
            raise _Respond(self._error(500, fault.code, fault.message))
        if isinstance(fault, MalformedLine) and not rec.stream:
            raise _Respond(web.Response(text=_CUT_SHORT, content_type="application/json"))
        if plan.reply.first_byte_delay:
            await asyncio.sleep(plan.reply.first_byte_delay)
        return plan

    def _unsupported(self, body: Mapping[str, Any]) -> web.Response | None:
        """What OpenAI refuses of reasoning models (o-series, gpt-5): `max_tokens`, and any
        temperature but 1."""
        if not _reasoning_model(str(body.get("model") or "")):
            return None
        if "max_tokens" in body:
            message = (
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead."
            )
            return self._error(400, "unsupported_parameter", message, shape="openai")
        if body.get("temperature", 1) != 1:
            message = (
                "Unsupported value: 'temperature' does not support "
                f"{body['temperature']} with this model. Only the default (1) value is supported."
            )
            return self._error(400, "unsupported_value", message, shape="openai")
        return None

    def _invalid_options(self, body: Mapping[str, Any]) -> web.Response | None:
        """What OpenAI refuses of any chat request: `n` out of its range, and JSON answers
        asked for without the word "json" in the messages."""
        n = body.get("n", 1)
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 128:
            message = f"{n!r} is not a valid value for 'n': it must be from 1 to 128."
            return self._error(400, "invalid_value", message, shape="openai")
        if _asks_json(body) and "json" not in json.dumps(body.get("messages")).lower():
            message = (
                "'messages' must contain the word 'json' in some form, to use "
                "'response_format' of type 'json_object'."
            )
            return self._error(400, None, message, shape="openai")
        return None

    @staticmethod
    def _drop(request: web.Request, rec: RecordedRequest) -> None:
        rec.dropped = True
        if request.transport is not None:
            request.transport.abort()
        raise _Dropped

    # --- chat completions ---

    async def _chat(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        refused = self._unsupported(body) or self._invalid_options(body)
        if refused is not None:
            return refused
        try:
            plan = await self._before(request, rec)
        except _Respond as respond:
            return respond.response
        reply, fault = plan.reply, plan.fault
        texts = self._choice_texts(reply, body)
        model = str(body.get("model") or "fake-model")
        usage = dict(reply.usage) if reply.usage else _usage(body, "".join(texts))
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
        }
        if not rec.stream or reply.ignore_stream:
            choices = [
                {
                    "index": index,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                }
                for index, text in enumerate(texts)
            ]
            payload = {
                **base,
                "object": "chat.completion.chunk" if reply.legacy_object else "chat.completion",
                "choices": choices,
                "usage": usage,
                "recipient": "all",
            }
            return web.json_response(payload, headers=self._headers())

        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))

        def chunk(
            delta: dict[str, Any], finish: str | None = None, index: int = 0
        ) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            extra: dict[str, Any] = {"usage": None} if include_usage else {}
            return {**base, "choices": [choice], **extra, "recipient": "all"}

        writer = await _SseWriter.open(request, rec, reply, self._headers())
        await writer.event(chunk({"role": "assistant", "content": "", "refusal": None}))

        async def on_fault(fault: Fault) -> None:
            if isinstance(fault, MidStreamError):
                error = {"code": fault.code, "message": fault.message, "type": "api_error"}
                trace_id = f"trace-{uuid.uuid4().hex[:12]}"
                await writer.event({"error": error, "trace_id": trace_id})
                raise _EndBody

        def content(piece: str) -> dict[str, Any]:
            index = piece.choice if isinstance(piece, _Piece) else 0
            return chunk({"role": "assistant", "content": piece}, index=index)

        # The choices' chunks come interleaved, one choice per chunk, as OpenAI sends them.
        by_choice = [_pieces(text, reply) for text in texts]
        pieces: list[str] = [
            _Piece(choice[position], index)
            for position in range(max(map(len, by_choice)))
            for index, choice in enumerate(by_choice)
            if position < len(choice)
        ]
        if not await writer.content(pieces, content, fault, on_fault):
            return await writer.finish(done=False)
        for index in range(len(texts)):
            # The empty trailing delta, then the finish, for each choice.
            await writer.event(chunk({"role": "assistant"}, index=index))
            if reply.finish_reason is not None:
                await writer.event(chunk({}, reply.finish_reason, index))
        if include_usage:
            await writer.event({**base, "choices": [], "usage": usage, "recipient": "all"})
        return await writer.finish(done=reply.send_done)

    # --- responses ---

    async def _responses(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        refused = _refused_by_responses(body)
        reasoning = body.get("reasoning")
        summary_asked = isinstance(reasoning, dict) and bool(reasoning.get("summary"))
        if refused is None and summary_asked and self.refuse_summaries:
            message = (
                "Your organization must be verified to generate reasoning summaries. Please go "
                "to: https://platform.openai.com/settings/organization/general and click on "
                "Verify Organization."
            )
            refused = message, "reasoning.summary", "unsupported_value"
        if refused is not None:
            message, param, code = refused
            error = {"message": message, "type": "invalid_request_error", "param": param}
            error["code"] = code
            return web.json_response({"error": error}, status=400, headers=self._headers())
        try:
            plan = await self._before(request, rec)
        except _Respond as respond:
            return respond.response
        reply, fault = plan.reply, plan.fault
        text = self._text(reply, body)
        summary = ""
        if summary_asked:
            summary = reply.summary if reply.summary is not None else DEFAULT_SUMMARY
        made = _ResponseMaker(body, text, summary, reply)
        if not rec.stream:
            return web.json_response(made.response(final=True), headers=self._headers())

        seq = itertools.count()
        writer = await _SseWriter.open(request, rec, reply, self._headers())

        async def send(kind: str, **fields_: Any) -> None:
            await writer.event({"type": kind, "sequence_number": next(seq), **fields_})

        await send("response.created", response=made.response(final=False))
        await send("response.in_progress", response=made.response(final=False))
        if reply.think_seconds:
            await asyncio.sleep(reply.think_seconds)
        message_index = 0
        if summary:
            message_index = 1
            await self._stream_summary(send, made, reply)

        where = {"item_id": made.message_id, "output_index": message_index, "content_index": 0}
        await send(
            "response.output_item.added", output_index=message_index, item=made.message(done=False)
        )
        empty_part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        await send("response.content_part.added", **where, part=empty_part)

        async def on_fault(fault: Fault) -> None:
            if isinstance(fault, MidStreamError):
                if fault.event == "response.failed":
                    failed = made.response(final=False) | {"status": "failed"}
                    failed["error"] = {"code": fault.code, "message": fault.message}
                    await send("response.failed", response=failed)
                else:
                    await send("error", code=fault.code, message=fault.message, param=None)
                raise _EndBody

        def delta(piece: str) -> dict[str, Any]:
            event = {"type": "response.output_text.delta", "sequence_number": next(seq)}
            return event | where | {"delta": piece, "logprobs": []}

        if not await writer.content(_pieces(text, reply), delta, fault, on_fault):
            return await writer.finish(done=False)
        await send("response.output_text.done", **where, text=text, logprobs=[])
        done_item = made.message(done=True)
        await send("response.content_part.done", **where, part=done_item["content"][0])
        await send("response.output_item.done", output_index=message_index, item=done_item)
        if reply.finish_reason is not None:
            final = made.response(final=True)
            await send(f"response.{final['status']}", response=final)
        return await writer.finish(done=reply.send_done)

    async def _stream_summary(
        self, send: Callable[..., Awaitable[None]], made: _ResponseMaker, reply: Reply
    ) -> None:
        """A reasoning item whose summary streams before the answer, as reasoning models'
        does when `reasoning.summary` is asked for."""
        item = {"id": made.reasoning_id, "type": "reasoning", "summary": []}
        where = {"item_id": made.reasoning_id, "output_index": 0, "summary_index": 0}
        await send("response.output_item.added", output_index=0, item=item)
        await send("response.reasoning_summary_part.added", **where, part=made.summary_part(""))
        pieces = _pieces(made.summary, reply)
        for index, piece in enumerate(pieces):
            if index and reply.summary_interval:
                await asyncio.sleep(reply.summary_interval)
            await send("response.reasoning_summary_text.delta", **where, delta=piece)
        await send("response.reasoning_summary_text.done", **where, text=made.summary)
        await send("response.reasoning_summary_part.done", **where, part=made.summary_part())
        await send("response.output_item.done", output_index=0, item=made.reasoning())

    # --- embeddings, images, tasks, files ---

    async def _embeddings(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        try:
            await self._before(request, rec, self._embedding_script)
        except _Respond as respond:
            return respond.response
        body = rec.json if isinstance(rec.json, dict) else {}
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        model = str(body.get("model") or "")
        # As OpenAI refuses them: no text, too many inputs, an input or all of them over the limit.
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return self._error(400, None, "'$.input' is invalid.", shape="openai")
        if len(texts) > _EMBEDDING_INPUTS:
            message = f"'$.input' is too long: at most {_EMBEDDING_INPUTS} inputs per request"
            return self._error(400, None, message, shape="openai")
        if any(not t for t in texts):
            return self._error(400, None, "'$.input' is invalid: an input is empty", shape="openai")
        counts = [_tokens(t) for t in texts]
        if max(counts) > _EMBEDDING_INPUT_TOKENS:
            message = (
                f"This model's maximum context length is {_EMBEDDING_INPUT_TOKENS} tokens, "
                f"however you requested {max(counts)} tokens in the input"
            )
            return self._error(400, None, message, shape="openai")
        if sum(counts) > _EMBEDDING_REQUEST_TOKENS:
            most = _EMBEDDING_REQUEST_TOKENS
            message = f"Requested {sum(counts)} tokens, max {most} tokens per request"
            return self._error(400, None, message, shape="openai")
        largest = _EMBEDDING_SIZES.get(model, 1536)
        dims = body.get("dimensions")
        if dims is not None and (
            model not in _SHORTENED or not isinstance(dims, int) or not 1 <= dims <= largest
        ):
            message = f"dimensions {dims!r} is not supported by {model}"
            return self._error(400, None, message, shape="openai")
        data = [
            {"object": "embedding", "index": i, "embedding": _vector(t, dims or largest)}
            for i, t in enumerate(texts)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)},
        }
        return web.json_response(payload, headers=self._headers())

    async def _images(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        try:
            plan = await self._before(request, rec)
        except _Respond as respond:
            return respond.response
        image = plan.image or ImageReply()
        fields_ = _form_fields(rec)
        fmt = image.response_format or str(fields_.get("response_format") or "b64_json")
        prompt = str(fields_.get("prompt") or "")
        items = []
        for index in range(int(fields_.get("n") or 1)):
            data = image.data if image.data is not None else tiny_png(index)
            item: dict[str, Any] = {"revised_prompt": image.revised_prompt or f"{prompt} (rev)"}
            if fmt == "url":
                name = f"{uuid.uuid4().hex}.png"
                self._files[name] = data
                item["url"] = f"{self.url}/files/{name}"
            else:
                item["b64_json"] = _b64(data)
            items.append(item)
        trace_id = f"trace-{uuid.uuid4().hex[:12]}"
        payload = {
            "created": int(time.time()),
            "data": items,
            "usage": {"input_tokens": len(prompt.split()), "output_tokens": 100 * len(items)},
            "success": True,
            "task_id": str(uuid.uuid4()),
            "trace_id": trace_id,
        }
        if fields_.get("async") in (True, "true"):
            task_id = str(uuid.uuid4())
            if image.task_error is not None:
                payload = {
                    "success": False,
                    "error": {"code": image.task_error, "message": "the task failed"},
                    "trace_id": trace_id,
                }
            self._tasks[task_id] = {
                "id": task_id,
                "created_at": time.time(),
                "ready_at": time.time() + image.task_seconds,
                "response": payload,
            }
            return web.json_response({"task_id": task_id, "trace_id": trace_id})
        return web.json_response(payload, headers=self._headers())

    async def _tasks_route(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = rec.json if isinstance(rec.json, dict) else {}
        task = self._tasks.get(str(body.get("id")))
        if body.get("action") != "retrieve" or task is None:
            return self._error(404, "no_api", "no such task")
        if time.time() < task["ready_at"]:
            return web.json_response({"id": task["id"], "created_at": task["created_at"]})
        finished = {k: v for k, v in task.items() if k != "ready_at"}
        return web.json_response({**finished, "finished_at": task["ready_at"]})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        data = self._files.get(request.match_info["name"])
        if data is None:
            raise web.HTTPNotFound()
        return web.Response(body=data, content_type="image/png")

    # --- control endpoints for a benchmark in another process ---

    async def _control_streams(self, request: web.Request) -> web.StreamResponse:
        streams = [rec.summary() for rec in self.requests if rec.stream]
        return web.json_response({"streams": streams})

    async def _control_requests(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"requests": [rec.summary() for rec in self.requests]})

    async def _control_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"injected": dict(self.faults.injected)})

    async def _control_reset(self, request: web.Request) -> web.StreamResponse:
        self.faults.injected.clear()
        self.requests.clear()
        self._script.clear()
        self._embedding_script.clear()
        return web.json_response({"ok": True})

    async def _control_script(self, request: web.Request) -> web.StreamResponse:
        spec = dict(await request.json())
        self.script(_KINDS[spec.pop("kind")](**spec))
        return web.json_response({"ok": True, "queued": len(self._script)})

    async def _control_default(self, request: web.Request) -> web.StreamResponse:
        spec = await request.json()
        known = {f.name for f in fields(Reply)}
        self.default = Reply(**{k: v for k, v in spec.items() if k in known})
        return web.json_response(asdict(self.default))


@dataclass
class _Plan:
    reply: Reply
    fault: Fault | None = None
    image: ImageReply | None = None


class _Respond(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


class _EndBody(Exception):
    """End the body here, cleanly (after a mid-stream error payload)."""


class _SseWriter:
    """Writes SSE events with the quirks, and records when content chunks went out."""

    def __init__(self, request: web.Request, rec: RecordedRequest, reply: Reply) -> None:
        self._request = request
        self._rec = rec
        self._reply = reply
        self._resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})

    @classmethod
    async def open(
        cls, request: web.Request, rec: RecordedRequest, reply: Reply, headers: Mapping[str, str]
    ) -> _SseWriter:
        writer = cls(request, rec, reply)
        writer._resp.headers.update(headers)
        writer._resp.headers["Cache-Control"] = "no-cache"
        await writer._resp.prepare(request)
        return writer

    async def event(self, payload: Mapping[str, Any]) -> None:
        if self._reply.keepalive:
            await self._resp.write(b": keep-alive\n\n")
        # json.dumps writes spaces after ':' and ','; the trailing spaces are a seen quirk.
        await self._resp.write(f"data: {json.dumps(payload)}  \n\n".encode())

    async def content(
        self,
        pieces: list[str],
        make: Callable[[str], Mapping[str, Any]],
        fault: Fault | None,
        on_fault: Callable[[Fault], Awaitable[None]],
    ) -> bool:
        """Send the content chunks, paced, with the fault at its place. False: the body ended."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        # A fault asked for after more chunks than there are happens after the last one.
        fault_at = min(fault.after_chunks or 0, len(pieces)) if fault is not None else -1
        try:
            for index in range(len(pieces) + 1):
                if index == fault_at and fault is not None:
                    await self._fault(fault, on_fault, make)
                if index == len(pieces):
                    break
                if self._reply.chunk_interval and index:
                    await asyncio.sleep(start + index * self._reply.chunk_interval - loop.time())
                await self.event(make(pieces[index]))
                now = time.time()
                self._rec.chunk_times.append(time.monotonic())
                self._rec.first_chunk_wall = self._rec.first_chunk_wall or now
                self._rec.last_chunk_wall = now
        except _EndBody:
            return False
        return True

    async def _fault(
        self,
        fault: Fault,
        on_fault: Callable[[Fault], Awaitable[None]],
        make: Callable[[str], Mapping[str, Any]],
    ) -> None:
        if isinstance(fault, Hang):
            await asyncio.sleep(fault.seconds)
        elif isinstance(fault, Trickle):
            loop = asyncio.get_running_loop()
            until = loop.time() + fault.seconds
            while loop.time() < until:
                if fault.kind in ("empty", "space"):
                    await self.event(make("" if fault.kind == "empty" else " "))
                else:
                    await self._resp.write(b": ping\n\n" if fault.kind == "comment" else b"\n\n")
                await asyncio.sleep(fault.every)
        elif isinstance(fault, DropConnection):
            FakeApi._drop(self._request, self._rec)
        elif isinstance(fault, MalformedLine):
            await self._resp.write(f"data: {_CUT_SHORT}\n\n".encode())
        else:
            await on_fault(fault)

    async def finish(self, *, done: bool) -> web.StreamResponse:
        if done:
            await self._resp.write(b"data: [DONE]\n\n")
        await self._resp.write_eof()
        return self._resp


# A JSON object cut short, as a proxy that loses part of a line sends it.
_CUT_SHORT = '{"id": "chatcmpl-cut", "object": "chat.completion.chunk", "choices": [{"delta": {"con'


class _Piece(str):
    """A piece of a chat answer's text that knows which choice it belongs to."""

    choice: int

    def __new__(cls, text: str, choice: int) -> _Piece:
        piece = super().__new__(cls, text)
        piece.choice = choice
        return piece


def _asks_json(body: Any) -> bool:
    response_format = body.get("response_format") if isinstance(body, dict) else None
    return isinstance(response_format, dict) and response_format.get("type") == "json_object"


# --- the Responses API's objects and what it refuses ---------------------------------------------

# What /responses takes (OpenAI's reference); anything else is an unknown parameter.
_RESPONSES_PARAMS = frozenset(
    [
        "background",
        "conversation",
        "include",
        "input",
        "instructions",
        "max_output_tokens",
        "max_tool_calls",
        "metadata",
        "model",
        "parallel_tool_calls",
        "previous_response_id",
        "prompt",
        "prompt_cache_key",
        "reasoning",
        "safety_identifier",
        "service_tier",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "text",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "truncation",
        "user",
    ]
)
_USER_PARTS = ("input_text", "input_image", "input_file")
_ASSISTANT_PARTS = ("output_text", "refusal")
_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _reasoning_model(model: str) -> bool:
    name = model.split(":", 1)[0]
    return any(name == f or name.startswith(f"{f}-") for f in ("o1", "o3", "o4", "gpt-5"))


def _refused_by_responses(body: Mapping[str, Any]) -> tuple[str, str | None, str | None] | None:
    """Why OpenAI's /responses would refuse this body: (message, param, code), or None."""
    for name in body:
        if name not in _RESPONSES_PARAMS:
            return f"Unknown parameter: '{name}'.", name, "unknown_parameter"
    options = body.get("stream_options")
    for name in options if isinstance(options, dict) else {}:
        if name != "include_obfuscation":
            param = f"stream_options.{name}"
            return f"Unknown parameter: '{param}'.", param, "unknown_parameter"
    model = str(body.get("model") or "")
    if _reasoning_model(model) and body.get("temperature", 1) != 1:
        message = "Unsupported parameter: 'temperature' is not supported with this model."
        return message, "temperature", "unsupported_parameter"
    if not _reasoning_model(model) and body.get("reasoning") is not None:
        message = "Unsupported parameter: 'reasoning.summary' is not supported with this model."
        return message, "reasoning.summary", "unsupported_parameter"
    limit = body.get("max_output_tokens")
    if isinstance(limit, int) and limit < 16:
        message = (
            "Invalid 'max_output_tokens': integer below minimum value. "
            f"Expected a value >= 16, but got {limit} instead."
        )
        return message, "max_output_tokens", "integer_below_min_value"
    items = body.get("input")
    if isinstance(items, list):
        for i, item in enumerate(items):
            refused = _refused_item(item, f"input[{i}]")
            if refused is not None:
                return refused
    elif not isinstance(items, str):
        return "Missing required parameter: 'input'.", "input", "missing_required_parameter"
    text = body.get("text")
    wants_json = isinstance(text, dict) and (text.get("format") or {}).get("type") == "json_object"
    if wants_json and "json" not in json.dumps([items, body.get("instructions")]).lower():
        message = (
            "Response input messages must contain the word 'json' in some form to use "
            "'text.format' of type 'json_object'."
        )
        return message, "input", None
    return None


def _refused_item(item: Any, where: str) -> tuple[str, str | None, str | None] | None:
    if not isinstance(item, dict) or item.get("role") not in (
        "user",
        "assistant",
        "system",
        "developer",
    ):
        return f"Invalid value for '{where}'.", where, "invalid_value"
    content = item.get("content")
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"Invalid type for '{where}.content'.", f"{where}.content", "invalid_type"
    allowed = _ASSISTANT_PARTS if item["role"] == "assistant" else _USER_PARTS
    for j, part in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in allowed:
            names = " and ".join(f"'{name}'" for name in allowed)
            return f"Invalid value: '{kind}'. Supported values are: {names}.", at, "invalid_value"
        if kind == "input_image" and not isinstance(part.get("image_url"), str):
            message = f"Invalid type for '{at}.image_url': expected a string."
            return message, f"{at}.image_url", "invalid_type"
    return None


class _ResponseMaker:
    """The Response object and its output items, at each stage of one answer."""

    def __init__(self, body: Mapping[str, Any], text: str, summary: str, reply: Reply) -> None:
        self.body = body
        self.text = text
        self.summary = summary
        self.reply = reply
        self.response_id = f"resp_{uuid.uuid4().hex[:16]}"
        self.message_id = f"msg_{uuid.uuid4().hex[:16]}"
        self.reasoning_id = f"rs_{uuid.uuid4().hex[:16]}"
        self.created_at = int(time.time())
        self.incomplete = _INCOMPLETE.get(reply.finish_reason or "")

    def summary_part(self, text: str | None = None) -> dict[str, Any]:
        return {"type": "summary_text", "text": self.summary if text is None else text}

    def reasoning(self) -> dict[str, Any]:
        return {"id": self.reasoning_id, "type": "reasoning", "summary": [self.summary_part()]}

    def message(self, *, done: bool) -> dict[str, Any]:
        status = "incomplete" if self.incomplete else "completed"
        part = {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}
        return {
            "id": self.message_id,
            "type": "message",
            "status": status if done else "in_progress",
            "role": "assistant",
            "content": [part] if done else [],
        }

    def usage(self) -> dict[str, Any]:
        if self.reply.usage:
            prompt = self.reply.usage["prompt_tokens"]
            output = self.reply.usage["completion_tokens"]
            reasoning = 0
        else:
            counted = _usage(self.body, self.text)
            reasoning = max(1, len(self.summary) // 4) if self.summary else 0
            prompt, output = counted["prompt_tokens"], counted["completion_tokens"] + reasoning
        return {
            "input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + output,
        }

    def response(self, *, final: bool) -> dict[str, Any]:
        body = self.body
        status = "in_progress"
        output: list[dict[str, Any]] = []
        if final:
            status = "incomplete" if self.incomplete else "completed"
            output = [self.reasoning()] if self.summary else []
            output.append(self.message(done=True))
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": self.incomplete}
            if final and self.incomplete
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": str(body.get("model") or "fake-model"),
            "output": output,
            "parallel_tool_calls": True,
            "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": self.usage() if final else None,
            "user": body.get("user"),
            "metadata": {},
        }


def _pieces(text: str, reply: Reply) -> list[str]:
    if reply.long_line or reply.chunk_size <= 0:
        return [text] if text else []
    return [text[i : i + reply.chunk_size] for i in range(0, len(text), reply.chunk_size)]


def _last_user_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
        if isinstance(messages, str):
            return messages
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(part.get("text"))
                    for part in content
                    if isinstance(part, dict) and "text" in part
                )
    return ""


def _usage(body: Mapping[str, Any], text: str) -> dict[str, int]:
    prompt = max(1, len(json.dumps(body.get("messages", body.get("input", "")))) // 4)
    completion = max(1, len(text) // 4)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


_EMBEDDING_INPUTS = 2048
_EMBEDDING_INPUT_TOKENS = 8192
_EMBEDDING_REQUEST_TOKENS = 300_000  # all of a request's inputs together
_EMBEDDING_SIZES = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
_SHORTENED = {"text-embedding-3-small", "text-embedding-3-large"}  # they take `dimensions`


def _tokens(text: str) -> int:
    """About what a tokenizer counts: each word and sign, and long words in pieces."""
    return max(len(re.findall(r"\w+|[^\w\s]", text)), len(text.encode()) // 4)


def _vector(text: str, dims: int) -> list[float]:
    """A bag of hashed words, of unit length: texts sharing words are near, as real
    embeddings of texts about the same thing are."""
    words = re.findall(r"\w+", text.lower()) or list(text)
    vector = [0.0] * dims
    for word in words:
        digest = hashlib.sha256(word.encode()).digest()
        slot = int.from_bytes(digest[:4], "big") % dims
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [round(x / norm, 6) for x in vector]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _form_fields(rec: RecordedRequest) -> dict[str, Any]:
    if isinstance(rec.json, dict):
        return rec.json
    return {
        part.name: part.data.decode("utf-8", "replace")
        for part in rec.parts
        if part.name and part.filename is None
    }


# --- running it as a process ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.api", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--text", help="the answer (default: echo the last user message)")
    parser.add_argument("--text-length", type=int, help="answer with this many characters")
    parser.add_argument("--chunk-size", type=int, default=4)
    parser.add_argument("--chunks-per-second", type=float, default=0.0, help="0: no pacing")
    parser.add_argument("--first-byte-delay", type=float, default=0.0)
    parser.add_argument("--keepalive", action="store_true")
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of requests that fail: a 500, a 429, a dropped stream or a malformed line",
    )
    parser.add_argument("--fault-seed", type=int, help="repeat the same failures")
    args = parser.parse_args(argv)
    text = args.text if args.text is not None else None
    if args.text_length is not None:
        text = make_text(args.text_length)
    default = Reply(
        text=text,
        chunk_size=args.chunk_size,
        chunk_interval=1.0 / args.chunks_per_second if args.chunks_per_second > 0 else 0.0,
        first_byte_delay=args.first_byte_delay,
        keepalive=args.keepalive,
    )

    async def serve() -> None:
        api = FakeApi(token=args.token, default=default, host=args.host, port=args.port)
        api.faults = FaultMix(args.fault_rate, args.fault_seed)
        await api.start()
        try:
            print(api.url, flush=True)
            await asyncio.Event().wait()  # until killed
        finally:
            await api.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()

"""ApiClient against the fake API over real sockets: every quirk and every fault mode."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.ai import (
    NO_RETRY,
    ApiClient,
    ApiError,
    ApiTimeout,
    BadRequest,
    ChatResult,
    ContentRefused,
    CreditsExhausted,
    Delta,
    GeneratedImage,
    ImageFile,
    ImageTooLarge,
    InvalidToken,
    RateLimited,
    RequestTooLarge,
    RetryPolicy,
    ServiceUnavailable,
    Timeouts,
    Usage,
    error_from_response,
    with_retry,
)
from bot.ai.client import _ResponseParser
from bot.app import open_api
from bot.config import load_settings
from tests.fakes.api import (
    DropConnection,
    Fail,
    FakeApi,
    FaultMix,
    Hang,
    ImageReply,
    MalformedLine,
    MidStreamError,
    RecordedRequest,
    Reply,
    Trickle,
    make_text,
    tiny_png,
)

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello there"},
]
FAST_RETRY = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.005, total_time=5.0)
TIMEOUTS = Timeouts(connect=2, chat=5, stream_idle=2, images=5, other=5)
WAIT = 2.0  # seconds any awaited event may take before the test fails


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi.running() as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


def make_client(
    api: FakeApi,
    session: aiohttp.ClientSession,
    *,
    token: str | None = None,
    timeouts: Timeouts = TIMEOUTS,
    retry: RetryPolicy = FAST_RETRY,
    path_prefix: str = "/openai",
) -> ApiClient:
    return ApiClient(
        session,
        base_url=api.url,
        token=api.token if token is None else token,
        path_prefix=path_prefix,
        timeouts=timeouts,
        retry=retry,
        rand=lambda: 1.0,
    )


@pytest.fixture
def client(api: FakeApi, session: aiohttp.ClientSession) -> ApiClient:
    return make_client(api, session)


async def stream_text(client: ApiClient, **kwargs: Any) -> tuple[list[str], Any]:
    async with client.stream_chat(MESSAGES, model="gpt-4o-mini", **kwargs) as stream:
        deltas = [delta.text async for delta in stream]
    return deltas, stream


async def read_into(deltas: list[str], client: ApiClient) -> None:
    """Read a stream to its end, keeping the deltas that came before any failure."""
    async with client.stream_chat(MESSAGES, model="m") as stream:
        async for delta in stream:
            deltas.append(delta.text)


async def wait_disconnected(rec: RecordedRequest) -> None:
    await asyncio.wait_for(rec.disconnected.wait(), WAIT)
    assert rec.client_disconnected and not rec.completed


# --- chat ----------------------------------------------------------------------------------------


async def test_chat_whole_reply(api: FakeApi, client: ApiClient) -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    api.script(Reply(text="Hi! How can I help?", usage=usage, legacy_object=True))
    result = await client.chat(
        MESSAGES, model="gpt-4o-mini", temperature=0.5, max_tokens=50, user="u1", extra={"n": 1}
    )
    assert result == ChatResult("Hi! How can I help?", "stop", Usage(5, 6, 11), "gpt-4o-mini")
    (rec,) = api.requests
    assert rec.path == "/openai/chat/completions"
    assert rec.headers["Authorization"] == f"Bearer {api.token}"
    assert rec.json == {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.5,
        "max_tokens": 50,
        "user": "u1",
        "n": 1,
    }


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "o4-mini", "o3"])
async def test_reasoning_models_get_max_completion_tokens_and_their_own_temperature(
    api: FakeApi, client: ApiClient, model: str
) -> None:
    """They refuse `max_tokens` and any temperature but 1 (the fake as OpenAI does)."""
    async with client.stream_chat(
        MESSAGES, model=model, temperature=0.3, max_tokens=100, user="u1"
    ) as stream:
        assert [delta.text async for delta in stream]
    (rec,) = api.requests
    assert rec.json["max_completion_tokens"] == 100
    assert "max_tokens" not in rec.json and "temperature" not in rec.json


async def test_the_fake_refuses_max_tokens_for_reasoning_models(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    """Guards the test above: what the fake refuses, as OpenAI refuses it."""
    url = f"{api.url}/openai/chat/completions"
    headers = {"Authorization": f"Bearer {api.token}"}
    for extra, param in (({"max_tokens": 10}, "max_tokens"), ({"temperature": 0.3}, "temperature")):
        body = {"model": "gpt-5", "messages": MESSAGES, **extra}
        async with session.post(url, json=body, headers=headers) as response:
            assert response.status == 400
            assert param in (await response.json())["error"]["message"]


async def test_fake_stream_has_the_quirks(api: FakeApi, session: aiohttp.ClientSession) -> None:
    # Guards the other tests: the raw bytes carry every quirk the client must survive.
    api.script(Reply(text="abcdef", chunk_size=2, keepalive=True))
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {api.token}"}
    async with session.post(f"{api.url}/openai/chat/completions", json=body, headers=headers) as r:
        raw = await r.read()
    assert raw.count(b'"recipient": "all"') == 7  # role chunk, 3 content, empty, finish, usage
    assert raw.count(b'"role": "assistant"') == 5
    assert b'"delta": {"role": "assistant"}, ' in raw  # the empty trailing delta
    assert b'"finish_reason": "stop"' in raw
    assert b'"choices": [], "usage": {' in raw
    assert b"}  \n\n" in raw  # trailing spaces
    assert b": keep-alive\n\n" in raw
    assert raw.endswith(b"data: [DONE]\n\n")


async def test_stream_chat_with_every_quirk(api: FakeApi, client: ApiClient) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    usage = {"prompt_tokens": 9, "completion_tokens": 11, "total_tokens": 20}
    api.script(Reply(text=text, chunk_size=3, usage=usage))
    deltas, stream = await stream_text(client)
    assert "".join(deltas) == text
    assert deltas == [text[i : i + 3] for i in range(0, len(text), 3)]  # no empty deltas
    assert stream.finish_reason == "stop"
    assert stream.usage == Usage(9, 11, 20)
    assert stream.model == "gpt-4o-mini"
    assert stream.request_id is not None and stream.request_id.startswith("req-")
    body = api.requests[0].json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


async def test_stream_of_n_choices_comes_interleaved_and_apart(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(choices=("Red.", "Blue, surely.", "Green"), chunk_size=2))
    async with client.stream_chat(MESSAGES, model="gpt-4o-mini", n=3) as stream:
        deltas = [delta async for delta in stream]
    texts = ["".join(d.text for d in deltas if d.choice == index) for index in range(3)]
    assert texts == ["Red.", "Blue, surely.", "Green"]
    assert [d.choice for d in deltas[:3]] == [0, 1, 2]  # interleaved, not one after another
    assert stream.finish_reasons == {0: "stop", 1: "stop", 2: "stop"}
    assert api.requests[0].json["n"] == 3
    # The usage chunk counts every choice's answer.
    assert stream.usage is not None and stream.usage.completion_tokens == len("".join(texts)) // 4


async def test_one_choice_sends_no_n(api: FakeApi, client: ApiClient) -> None:
    async with client.stream_chat(MESSAGES, model="m", n=1) as stream:
        assert {delta.choice async for delta in stream} == {0}
    assert "n" not in api.requests[0].json


async def test_json_format_asks_for_a_json_object(api: FakeApi, client: ApiClient) -> None:
    messages = [{"role": "system", "content": "Answer in JSON."}, MESSAGES[1]]
    async with client.stream_chat(messages, model="m", json_format=True) as stream:
        text = "".join([delta.text async for delta in stream])
    assert json.loads(text) == {"echo": "hello there"}
    assert api.requests[0].json["response_format"] == {"type": "json_object"}
    await client.chat(MESSAGES, model="m")
    assert "response_format" not in api.requests[1].json


async def test_the_fake_refuses_json_without_the_word_json(api: FakeApi, client: ApiClient) -> None:
    """As OpenAI does: the messages must ask for JSON when the request does."""
    with pytest.raises(BadRequest) as info:
        async with client.stream_chat(MESSAGES, model="m", json_format=True) as stream:
            [delta async for delta in stream]
    assert "must contain the word 'json'" in str(info.value)
    assert len(api.requests) == 1  # not retried


async def test_stream_with_keepalive_comments(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(text="kept alive", chunk_size=1, keepalive=True))
    deltas, stream = await stream_text(client)
    assert "".join(deltas) == "kept alive"
    assert stream.finish_reason == "stop"


async def test_stream_finish_reason_length(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(text="cut sho", finish_reason="length"))
    deltas, stream = await stream_text(client)
    assert "".join(deltas) == "cut sho"
    assert stream.finish_reason == "length"


async def test_stream_with_a_3_mb_line(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(long_line=True))
    deltas, stream = await stream_text(client)
    assert len(deltas) == 1
    assert deltas[0] == make_text(3 * 1024 * 1024)
    assert stream.finish_reason == "stop"


async def test_stream_eof_after_finish_reason_without_done_is_fine(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(text="no done marker", send_done=False))
    deltas, stream = await stream_text(client)
    assert "".join(deltas) == "no done marker"
    assert stream.finish_reason == "stop"
    assert stream.usage is not None


async def test_stream_eof_without_finish_reason_is_an_error(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(text="abcdefgh", finish_reason=None, send_done=False))
    deltas: list[str] = []
    with pytest.raises(ServiceUnavailable):
        async with client.stream_chat(MESSAGES, model="m") as stream:
            async for delta in stream:
                deltas.append(delta.text)
    assert "".join(deltas) == "abcdefgh"
    assert len(api.requests) == 1


async def test_mid_stream_error_raises_the_typed_error(api: FakeApi, client: ApiClient) -> None:
    api.script(MidStreamError(after_chunks=2, code="api_error"))
    deltas: list[str] = []
    with pytest.raises(ServiceUnavailable) as info:
        async with client.stream_chat(MESSAGES, model="m") as stream:
            async for delta in stream:
                deltas.append(delta.text)
    assert deltas == ["Echo", ": he"]
    assert info.value.code == "api_error"
    assert info.value.trace_id is not None and info.value.trace_id.startswith("trace-")
    assert info.value.request_id is not None
    assert len(api.requests) == 1  # no retry once text was out


async def test_mid_stream_used_up_is_credits_exhausted(api: FakeApi, client: ApiClient) -> None:
    api.script(MidStreamError(after_chunks=1, code="used_up", message="balance is zero"))
    with pytest.raises(CreditsExhausted) as info:
        await stream_text(client)
    assert info.value.code == "used_up"
    assert "balance is zero" in str(info.value)


async def test_error_before_the_first_delta_is_retried(api: FakeApi, client: ApiClient) -> None:
    api.script(MidStreamError(after_chunks=0), DropConnection(after_chunks=None))
    deltas, _ = await stream_text(client)
    assert "".join(deltas) == "Echo: hello there"
    assert len(api.requests) == 3


async def test_dropped_connection_mid_stream(api: FakeApi, client: ApiClient) -> None:
    api.script(DropConnection(after_chunks=2))
    deltas: list[str] = []
    with pytest.raises(ServiceUnavailable):
        async with client.stream_chat(MESSAGES, model="m") as stream:
            async for delta in stream:
                deltas.append(delta.text)
    assert deltas == ["Echo", ": he"]
    assert len(api.requests) == 1  # never retried after the first delta
    assert api.requests[0].dropped


async def test_idle_gap_mid_stream_is_a_timeout(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.2))
    api.script(Hang(seconds=30, after_chunks=2))
    deltas: list[str] = []
    with pytest.raises(ApiTimeout):
        await asyncio.wait_for(read_into(deltas, client), WAIT)
    assert deltas == ["Echo", ": he"]
    assert len(api.requests) == 1
    await wait_disconnected(api.requests[0])  # the client hung up on the stalled stream


async def test_no_first_byte_is_a_timeout_not_retried(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.2))
    api.script(Hang(seconds=30))
    with pytest.raises(ApiTimeout) as info:
        await stream_text(client)
    assert info.value.status is None
    assert len(api.requests) == 1  # our own timeout spent the budget: no retry


async def test_a_reasoning_model_may_think_silently_past_the_idle_timeout(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.2, thinking=5))
    api.script(Hang(seconds=0.6), Hang(seconds=0.6))
    async with client.stream_chat(MESSAGES, model="o4-mini") as stream:
        assert "".join([delta.text async for delta in stream]) == "Echo: hello there"
    # Once it writes, and for any other model, silence is a failure as before.
    with pytest.raises(ApiTimeout):
        await stream_text(client)


async def test_whole_chat_timeout(api: FakeApi, session: aiohttp.ClientSession) -> None:
    client = make_client(api, session, timeouts=Timeouts(chat=0.2))
    api.script(Hang(seconds=30))
    with pytest.raises(ApiTimeout):
        await client.chat(MESSAGES, model="m")
    assert len(api.requests) == 1


# --- cancellation --------------------------------------------------------------------------------


async def test_leaving_the_stream_early_closes_upstream(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(text="x" * 400, chunk_size=4, chunk_interval=0.02))
    async with client.stream_chat(MESSAGES, model="m") as stream:
        async for _ in stream:
            break
    await wait_disconnected(api.requests[0])  # and so before the reply was complete
    assert len(api.requests[0].chunk_times) < 100


async def test_cancelling_the_reading_task_closes_upstream(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(text="y" * 400, chunk_size=4, chunk_interval=0.02))
    first = asyncio.Event()

    async def consume() -> None:
        async with client.stream_chat(MESSAGES, model="m") as stream:
            async for _ in stream:
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), WAIT)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_disconnected(api.requests[0])


async def test_closing_from_another_task_ends_iteration_quietly(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(text="z" * 400, chunk_size=4, chunk_interval=0.02))
    first = asyncio.Event()
    got: list[str] = []
    async with client.stream_chat(MESSAGES, model="m") as stream:

        async def consume() -> None:
            async for delta in stream:
                got.append(delta.text)
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), WAIT)
        await stream.aclose()  # e.g. a Stop button
        await asyncio.wait_for(task, WAIT)  # ends without raising
    await wait_disconnected(api.requests[0])
    assert 0 < len(got) < 100


@pytest.mark.parametrize("phase", ["before headers", "before the first delta"])
async def test_closing_while_opening_gives_an_empty_stream_and_no_retry(
    api: FakeApi, caplog: pytest.LogCaptureFixture, phase: str
) -> None:
    caplog.set_level(logging.INFO, logger="bot.ai")
    after_chunks = None if phase == "before headers" else 0
    api.script(Hang(seconds=30, after_chunks=after_chunks))
    headers_received = asyncio.Event()

    async def on_request_end(*_: Any) -> None:
        headers_received.set()

    tracing = aiohttp.TraceConfig()
    tracing.on_request_end.append(on_request_end)
    async with aiohttp.ClientSession(trace_configs=[tracing]) as session:
        stream = make_client(api, session).stream_chat(MESSAGES, model="m")

        async def consume() -> list[str]:
            async with stream:
                return [delta.text async for delta in stream]

        task = asyncio.create_task(consume())
        await api.wait_for_requests(1, within=WAIT)
        if after_chunks is not None:
            await asyncio.wait_for(headers_received.wait(), WAIT)
        assert headers_received.is_set() == (after_chunks is not None)
        await stream.aclose()  # e.g. a Stop button
        assert await asyncio.wait_for(task, WAIT) == []
    await wait_disconnected(api.requests[0])
    assert len(api.requests) == 1
    assert not caplog.records  # neither a retry nor a failure: the caller asked for it


# --- retries and errors --------------------------------------------------------------------------


async def test_429_then_success_is_retried(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(429, "too_many_requests"))
    result = await client.chat(MESSAGES, model="m")
    assert result.text == "Echo: hello there"
    assert len(api.requests) == 2


async def test_stream_429_then_success_is_retried(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(429, "too_many_requests"), Fail(504, "timeout"))
    deltas, _ = await stream_text(client)
    assert "".join(deltas) == "Echo: hello there"
    assert len(api.requests) == 3


@pytest.mark.parametrize(
    "fail",
    [Fail(500, "api_error"), Fail(502, shape="html"), Fail(503), Fail(504, "timeout")],
    ids=["500", "502-html", "503", "504"],
)
async def test_server_errors_are_retried(api: FakeApi, client: ApiClient, fail: Fail) -> None:
    api.script(fail)
    assert (await client.chat(MESSAGES, model="m")).text == "Echo: hello there"
    assert len(api.requests) == 2


async def test_429_forever_gives_up_after_the_attempts(
    api: FakeApi, client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.script(*[Fail(429, "too_many_requests", trace_id="t-429")] * 5)
    with caplog.at_level(logging.INFO, logger="bot.ai"), pytest.raises(RateLimited) as info:
        await client.chat(MESSAGES, model="m")
    assert len(api.requests) == 3
    assert info.value.status == 429 and info.value.code == "too_many_requests"
    retries = [r for r in caplog.records if r.levelno == logging.INFO and "retry" in r.message]
    assert len(retries) == 2 and all("t-429" in r.message for r in retries)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "t-429" in warnings[0].message


async def test_retries_stop_at_the_total_time(api: FakeApi, session: aiohttp.ClientSession) -> None:
    policy = RetryPolicy(attempts=10, base_delay=1.0, max_delay=1.0, total_time=0.5)
    client = make_client(api, session, retry=policy)
    api.script(*[Fail(503)] * 3)
    with pytest.raises(ServiceUnavailable):
        await client.chat(MESSAGES, model="m")
    assert len(api.requests) == 1  # the first delay alone would pass the total time


async def test_403_used_up_is_credits_exhausted(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(403, "used_up", message="credits used up", trace_id="trace-abc"))
    with pytest.raises(CreditsExhausted) as info:
        await client.chat(MESSAGES, model="m")
    err = info.value
    assert (err.status, err.code, err.trace_id) == (403, "used_up", "trace-abc")
    assert err.request_id is not None and err.request_id.startswith("req-")
    assert "403" in str(err) and "used_up" in str(err) and "trace-abc" in str(err)
    assert "top it up" in err.user_message
    assert len(api.requests) == 1


async def test_403_forbidden_is_content_refused(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(403, "forbidden"))
    with pytest.raises(ContentRefused):
        await client.generate_images("a prompt", model="dall-e-3")
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("fail", "error"),
    [
        (Fail(400, "bad_request"), BadRequest),
        (Fail(404, "no_api"), BadRequest),
        (Fail(400, "no_token"), InvalidToken),
        (Fail(401, "token_expired"), InvalidToken),
        (Fail(413, "request_too_large"), RequestTooLarge),
        (Fail(400, "invalid_api_key", shape="openai"), InvalidToken),
        (Fail(400, "bad_request", message="plain words", shape="string"), BadRequest),
        (Fail(400, shape="missing"), BadRequest),
    ],
    ids=lambda value: getattr(value, "__name__", None) or f"{value.status}-{value.shape}",
)
async def test_client_errors_are_typed_and_never_retried(
    api: FakeApi, client: ApiClient, fail: Fail, error: type[ApiError]
) -> None:
    api.script(fail)
    with pytest.raises(error) as info:
        await client.chat(MESSAGES, model="m")
    assert type(info.value) is error
    assert info.value.status == fail.status
    assert info.value.code == fail.code
    assert len(api.requests) == 1


async def test_413_says_the_request_is_too_large(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(413, "request_too_large", message="body exceeds limit"))
    with pytest.raises(RequestTooLarge) as info:
        await client.chat(MESSAGES, model="m")
    assert "too large" in str(info.value)
    assert "too large" in info.value.user_message
    assert isinstance(info.value, BadRequest)


async def test_wrong_token_is_invalid_token_and_never_leaks(
    api: FakeApi, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-wrong-secret-0123456789"
    client = make_client(api, session, token=secret)
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidToken) as info:
        await client.chat(MESSAGES, model="m")
    assert info.value.status == 401 and info.value.code == "invalid_token"
    assert len(api.requests) == 1
    assert api.requests[0].headers["Authorization"] == f"Bearer {secret}"
    # The fake echoes the token it got, as some servers do: the client must redact it.
    assert secret not in str(info.value) and secret not in repr(info.value)
    assert "***" in str(info.value)
    assert caplog.records and secret not in caplog.text


async def test_token_echoed_in_any_error_is_redacted(
    api: FakeApi, client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.script(
        Fail(500, "api_error", message=f"upstream saw {api.token}"),
        Fail(500, "api_error", message=f"upstream saw {api.token}"),
        Fail(500, "api_error", message=f"upstream saw {api.token}"),
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(ServiceUnavailable) as info:
        await client.chat(MESSAGES, model="m")
    assert api.token not in str(info.value)
    assert len(caplog.records) == 3 and api.token not in caplog.text


async def test_connection_refused_is_service_unavailable(session: aiohttp.ClientSession) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = ApiClient(session, base_url=f"http://127.0.0.1:{port}", token="t", retry=FAST_RETRY)
    with pytest.raises(ServiceUnavailable):
        await client.chat(MESSAGES, model="m")
    with pytest.raises(ServiceUnavailable):
        await stream_text(client)


# --- images --------------------------------------------------------------------------------------


async def test_generate_images_b64(api: FakeApi, client: ApiClient) -> None:
    result = await client.generate_images(
        "a red fox", model="gpt-image-1", n=2, size="1024x1024", quality="low"
    )
    assert [image.revised_prompt for image in result.images] == ["a red fox (rev)"] * 2
    assert all(image.b64_json and not image.url for image in result.images)
    got = [await client.fetch_image_bytes(image, max_bytes=10_000) for image in result.images]
    assert got == [tiny_png(0), tiny_png(1)]
    assert result.usage is not None and result.usage.prompt_tokens == 3
    assert api.requests[0].json == {
        "model": "gpt-image-1",
        "prompt": "a red fox",
        "n": 2,
        "size": "1024x1024",
        "quality": "low",
    }


async def test_generate_images_url(api: FakeApi, client: ApiClient) -> None:
    result = await client.generate_images("a fox", model="dall-e-3", response_format="url")
    (image,) = result.images
    assert image.url is not None and image.url.startswith(api.url + "/files/")
    assert image.b64_json is None
    assert await client.fetch_image_bytes(image, max_bytes=10_000) == tiny_png(0)


async def test_image_too_large(api: FakeApi, client: ApiClient) -> None:
    big = b"\x89PNG" + b"\0" * 5000
    api.script(ImageReply(data=big), ImageReply(response_format="url", data=big))
    (as_b64,) = (await client.generate_images("p", model="m")).images
    (as_url,) = (await client.generate_images("p", model="m")).images
    for image in (as_b64, as_url):
        assert await client.fetch_image_bytes(image, max_bytes=len(big)) == big
        with pytest.raises(ImageTooLarge):
            await client.fetch_image_bytes(image, max_bytes=len(big) - 1)


async def test_image_from_data_url(client: ApiClient) -> None:
    data = tiny_png(3)
    image = GeneratedImage(None, "data:image/png;base64," + base64.b64encode(data).decode(), None)
    assert await client.fetch_image_bytes(image, max_bytes=1000) == data


async def test_edit_one_image(api: FakeApi, client: ApiClient) -> None:
    photo = ImageFile(tiny_png(7) + b"one", "photo.png", "image/png")
    result = await client.edit_images("add a hat", [photo], model="gpt-image-1", size="auto")
    assert len(result.images) == 1
    (rec,) = api.requests
    assert rec.path == "/openai/images/edits"
    (part,) = rec.parts_named("image")
    assert (part.data, part.filename, part.content_type) == (photo.data, "photo.png", "image/png")
    assert not rec.parts_named("image[]") and not rec.parts_named("mask")
    fields = {p.name: p.data for p in rec.parts if p.filename is None}
    assert fields == {"model": b"gpt-image-1", "prompt": b"add a hat", "n": b"1", "size": b"auto"}


async def test_edit_several_images_with_mask(api: FakeApi, client: ApiClient) -> None:
    images = [
        ImageFile(tiny_png(i) + bytes([i]) * 100, f"in{i}.webp", "image/webp") for i in (1, 2)
    ]
    mask = ImageFile(tiny_png(9), "mask.png", "image/png")
    await client.edit_images("merge", images, model="gpt-image-1", mask=mask, n=2)
    (rec,) = api.requests
    parts = rec.parts_named("image[]")
    assert [(p.data, p.filename, p.content_type) for p in parts] == [
        (image.data, image.filename, "image/webp") for image in images
    ]
    assert not rec.parts_named("image")
    (mask_part,) = rec.parts_named("mask")
    assert (mask_part.data, mask_part.filename) == (mask.data, "mask.png")


async def test_edit_is_retried_with_a_fresh_form(api: FakeApi, client: ApiClient) -> None:
    api.script(Fail(503))
    photo = ImageFile(b"bytes", "a.png", "image/png")
    assert len((await client.edit_images("p", [photo], model="m")).images) == 1
    assert [rec.parts_named("image")[0].data for rec in api.requests] == [b"bytes", b"bytes"]


# --- responses -----------------------------------------------------------------------------------


async def test_respond_whole(api: FakeApi, client: ApiClient) -> None:
    result = await client.respond("what is up", model="gpt-4.1", instructions="Be kind.")
    assert result.text == "Echo: what is up"
    assert result.finish_reason == "stop"
    assert result.model == "gpt-4.1"
    assert result.usage is not None and result.usage.completion_tokens == 4
    assert api.requests[0].path == "/openai/responses"
    assert api.requests[0].json == {
        "model": "gpt-4.1",
        "input": "what is up",
        "instructions": "Be kind.",
    }


@pytest.mark.parametrize("send_done", [True, False])
async def test_stream_response(api: FakeApi, client: ApiClient, send_done: bool) -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    api.script(Reply(text="streamed answer", chunk_size=5, usage=usage, send_done=send_done))
    messages = [{"role": "user", "content": [{"type": "input_text", "text": "q"}]}]
    async with client.stream_response(messages, model="gpt-4.1") as stream:
        deltas = [delta.text async for delta in stream]
    assert deltas == ["strea", "med a", "nswer"]
    assert stream.finish_reason == "stop"
    assert stream.usage == Usage(3, 4, 7)
    assert stream.model == "gpt-4.1"
    assert api.requests[0].json["stream"] is True


@pytest.mark.parametrize("reason", ["length", "content_filter"])
async def test_stream_response_incomplete_ends_as_chat_does(
    api: FakeApi, client: ApiClient, reason: str
) -> None:
    # The fake says `incomplete` with max_output_tokens or content_filter: chat's words.
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    api.script(Reply(text="partial", finish_reason=reason, usage=usage))
    async with client.stream_response("q", model="m") as stream:
        assert "".join([delta.text async for delta in stream]) == "partial"
    assert stream.finish_reason == reason
    assert stream.finish_reasons == {0: reason}
    assert stream.usage == Usage(3, 2, 5)


async def test_a_reasoning_summary_streams_first_and_keeps_the_stream_alive(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    # The summary takes longer than the idle timeout, but each piece of it is progress.
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.3))
    api.script(Reply(text="42", summary="Adding it all up.", chunk_size=2, summary_interval=0.1))
    options = {"reasoning": {"summary": "auto"}}
    async with client.stream_response("q", model="o4-mini", extra=options) as stream:
        deltas = [delta async for delta in stream]
    summary = [d.text for d in deltas if d.reasoning]
    assert "".join(summary) == "Adding it all up." and len(summary) == 9
    assert [d.text for d in deltas if not d.reasoning] == ["42"]
    assert deltas[-1] == Delta("42")  # the answer comes after its summary
    assert stream.finish_reason == "stop"


async def test_thinking_without_a_summary_is_bounded_by_the_thinking_timeout(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    timeouts = Timeouts(stream_idle=0.2, thinking=0.4)
    client = make_client(api, session, timeouts=timeouts, retry=NO_RETRY)
    api.script(Reply(text="late", think_seconds=1.0))
    with pytest.raises(ApiTimeout):
        async with client.stream_response("q", model="o4-mini") as stream:
            async for _ in stream:
                pass


CHAT_PARTS = [{"type": "text", "text": "q"}]
IMAGE_AS_OBJECT = [{"type": "input_image", "image_url": {"url": "data:image/png;base64,AA=="}}]


@pytest.mark.parametrize(
    ("input_", "extra", "code"),
    [
        ("q", {"messages": [{"role": "user", "content": "q"}]}, "unknown_parameter"),
        ("q", {"n": 2}, "unknown_parameter"),
        ("q", {"max_tokens": 100}, "unknown_parameter"),
        ("q", {"stream_options": {"include_usage": True}}, "unknown_parameter"),
        ("q", {"max_output_tokens": 8}, "integer_below_min_value"),
        ("q", {"reasoning": {"summary": "auto"}}, "unsupported_parameter"),  # not a reasoner
        ([{"role": "user", "content": CHAT_PARTS}], {}, "invalid_value"),
        ([{"role": "user", "content": IMAGE_AS_OBJECT}], {}, "invalid_type"),
        (
            [{"role": "assistant", "content": [{"type": "input_text", "text": "a"}]}],
            {},
            "invalid_value",
        ),
        ("q", {"text": {"format": {"type": "json_object"}}}, "invalid_request_error"),
    ],
    ids=[
        "messages",
        "n",
        "max_tokens",
        "include_usage",
        "few-tokens",
        "reasoning",
        "text-part",
        "image-object",
        "assistant-input_text",
        "json-unnamed",
    ],
)
async def test_the_fake_refuses_what_responses_does_not_take(
    api: FakeApi, client: ApiClient, input_: Any, extra: dict[str, Any], code: str
) -> None:
    with pytest.raises(BadRequest) as refused:
        async with client.stream_response(input_, model="gpt-4.1", extra=extra) as stream:
            async for _ in stream:
                pass
    assert refused.value.code == code
    assert len(api.requests) == 1  # a 400 is not retried


async def test_an_error_event_before_any_text_is_retried(api: FakeApi, client: ApiClient) -> None:
    api.script(MidStreamError(after_chunks=0, code="rate_limit_exceeded"), Reply(text="ok"))
    async with client.stream_response("q", model="m") as stream:
        assert [delta.text async for delta in stream] == ["ok"]
    assert len(api.requests) == 2


@pytest.mark.parametrize("event", ["error", "response.failed"])
async def test_stream_response_failure(api: FakeApi, client: ApiClient, event: str) -> None:
    api.script(MidStreamError(after_chunks=2, code="used_up", event=event))
    deltas: list[str] = []
    with pytest.raises(CreditsExhausted):
        async with client.stream_response("q", model="m") as stream:
            async for delta in stream:
                deltas.append(delta.text)
    assert deltas == ["Echo", ": q"]
    assert len(api.requests) == 1


async def test_stream_response_ending_without_completion(api: FakeApi, client: ApiClient) -> None:
    api.script(Reply(text="abc", finish_reason=None, send_done=False))
    with pytest.raises(ServiceUnavailable):
        async with client.stream_response("q", model="m") as stream:
            async for _ in stream:
                pass


# --- embeddings, token check, prefix --------------------------------------------------------------


async def test_embed(api: FakeApi, client: ApiClient) -> None:
    result = await client.embed(["one", "two"], model="text-embedding-3-small", dimensions=4)
    assert len(result.vectors) == 2 and all(len(v) == 4 for v in result.vectors)
    assert result.vectors[0] != result.vectors[1]
    assert result.usage is not None and result.usage.prompt_tokens == 2
    single = await client.embed("one", model="text-embedding-3-small", dimensions=4)
    assert single.vectors == result.vectors[:1]
    assert api.requests[0].json == {
        "model": "text-embedding-3-small",
        "input": ["one", "two"],
        "dimensions": 4,
    }


async def test_fake_embeddings_are_near_for_similar_texts_and_refuse_what_openai_refuses(
    client: ApiClient,
) -> None:
    texts = ["the vault code is purple", "what is the vault code", "lunch was soup"]
    result = await client.embed(texts, model="text-embedding-3-small", dimensions=64)
    code, question, lunch = result.vectors
    assert sum(x * x for x in code) == pytest.approx(1, abs=1e-4)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(code, question) > 0.4 > cosine(lunch, question)
    assert len((await client.embed("hi", model="text-embedding-3-small")).vectors[0]) == 1536
    for inputs, dimensions in (
        (["word"] * 2049, None),
        (["word " * 9000], None),
        (["word " * 6000] * 41, None),  # each within its limit, 307,500 tokens in all
        ([""], None),
        (["hi"], 4000),
    ):
        with pytest.raises(ApiError):
            await client.embed(inputs, model="text-embedding-3-small", dimensions=dimensions)


async def test_check_token(api: FakeApi, session: aiohttp.ClientSession) -> None:
    await make_client(api, session).check_token()
    with pytest.raises(InvalidToken):
        await make_client(api, session, token="nope-nope").check_token()
    assert [rec.path for rec in api.requests] == ["/openai/embeddings"] * 2


async def test_v1_prefix(api: FakeApi, session: aiohttp.ClientSession) -> None:
    client = make_client(api, session, path_prefix="/v1/")
    assert (await client.chat(MESSAGES, model="m")).text == "Echo: hello there"
    deltas, _ = await stream_text(client)
    assert "".join(deltas) == "Echo: hello there"
    assert [rec.path for rec in api.requests] == ["/v1/chat/completions"] * 2


async def test_server_that_ignores_stream_still_works(api: FakeApi, client: ApiClient) -> None:
    # A whole JSON reply to a stream request (some local servers) is read as one delta.
    api.script(Reply(text="whole", ignore_stream=True))
    deltas, stream = await stream_text(client)
    assert deltas == ["whole"]
    assert stream.finish_reason == "stop"
    assert stream.usage is not None


# --- as the bot and `python -m bot check` build it -----------------------------------------------


async def test_the_client_the_bot_and_check_open_follows_the_settings(api: FakeApi) -> None:
    settings = load_settings(
        _env_file=None,
        discord_token="unused",
        acedatacloud_api_token=api.token,
        acedatacloud_api_base_url=api.url,
        api_path_prefix="/v1",
        chat_timeout=0.2,
        stream_idle_timeout=0.2,
        image_timeout=0.2,
    )
    session, client = open_api(settings)
    async with session:
        await client.check_token()  # what `check` asks of the API
        api.script(Hang(seconds=10), Hang(seconds=10), Hang(seconds=10))
        with pytest.raises(ApiTimeout, match=r"no reply within 0\.2 s"):
            await client.chat(MESSAGES, model="m")
        with pytest.raises(ApiTimeout, match=r"no reply within 0\.2 s"):
            await stream_text(client)
        with pytest.raises(ApiTimeout, match=r"no reply within 0\.2 s"):
            await client.generate_images("slow", model="gpt-image-1")
    paths = ["embeddings", "chat/completions", "chat/completions", "images/generations"]
    assert [rec.path for rec in api.requests] == [f"/v1/{path}" for path in paths]


# --- error mapping and retry units ---------------------------------------------------------------


def test_error_from_response_shapes() -> None:
    headers = {"X-Request-Id": "rid-1"}
    err = error_from_response(
        403, b'{"error": {"code": "used_up", "message": "m"}, "trace_id": "t1"}', headers
    )
    assert isinstance(err, CreditsExhausted)
    assert (err.code, err.message, err.trace_id, err.request_id) == ("used_up", "m", "t1", "rid-1")
    assert str(err) == "HTTP 403 used_up: m (trace_id=t1, request_id=rid-1)"

    openai_shape = {"error": {"message": "slow down", "type": "requests", "code": None}}
    assert isinstance(error_from_response(429, openai_shape), RateLimited)
    quota = {"error": {"message": "no money", "type": "insufficient_quota", "code": None}}
    assert isinstance(error_from_response(429, quota), CreditsExhausted)

    as_string = error_from_response(500, '{"error": "boom", "trace_id": "t2"}')
    assert isinstance(as_string, ServiceUnavailable)
    assert (as_string.message, as_string.trace_id) == ("boom", "t2")

    missing = error_from_response(404, b'{"success": false}')
    assert isinstance(missing, BadRequest) and missing.message == "HTTP 404 without details"

    html = error_from_response(502, b"<html>\n<h1>Bad   Gateway</h1></html>")
    assert (
        isinstance(html, ServiceUnavailable)
        and html.message == "<html> <h1>Bad Gateway</h1></html>"
    )

    mid_stream = error_from_response(None, {"error": {"code": "weird", "message": "x"}})
    assert isinstance(mid_stream, ServiceUnavailable) and mid_stream.status is None

    assert isinstance(error_from_response(504, b""), ApiTimeout)
    assert error_from_response(504, b"").can_retry
    assert not ApiTimeout("client side").can_retry


def test_backoff_is_full_jitter_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.5, max_delay=8.0)
    assert policy.backoff(0, lambda: 1.0) == 0.5
    assert policy.backoff(2, lambda: 0.5) == 1.0
    assert policy.backoff(10, lambda: 1.0) == 8.0
    assert policy.backoff(3, lambda: 0.0) == 0.0


async def test_with_retry_only_retries_retryable_errors() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ServiceUnavailable("down")
        return "ok"

    policy = RetryPolicy(attempts=3, base_delay=0.001)
    assert await with_retry(policy, flaky, rand=lambda: 1.0) == "ok"
    assert len(calls) == 3

    async def refused() -> str:
        calls.append(1)
        raise ContentRefused("no")

    calls.clear()
    with pytest.raises(ContentRefused):
        await with_retry(policy, refused)
    assert len(calls) == 1


async def test_image_task_that_never_finishes_times_out(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(images=0.3, other=5))
    api.script(ImageReply(task_seconds=60))
    with pytest.raises(ApiTimeout, match=r"unfinished after 0\.3 s"):
        await client.generate_images("slow", model="gpt-image-1", background=True, poll_every=0.05)
    assert 2 <= len(api.requests_to("/tasks")) <= 8  # polled, and gave up in time


async def test_a_reply_too_large_to_hold_is_refused(
    api: FakeApi, client: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bot.ai.client as client_module

    monkeypatch.setattr(client_module, "_MAX_REPLY", 10_000)
    api.script(ImageReply(data=bytes(20_000)))
    with pytest.raises(ApiError, match="larger than 10000 bytes"):
        await client.generate_images("big", model="gpt-image-1")
    assert len(api.requests_to("/images/generations")) == 1  # not retried


@pytest.mark.parametrize("kind", ["comment", "whitespace", "empty", "space"])
async def test_bytes_without_text_do_not_keep_a_stream_alive(
    api: FakeApi, session: aiohttp.ClientSession, kind: str
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.3))
    api.script(Trickle(seconds=30, after_chunks=2, every=0.02, kind=kind))
    deltas: list[str] = []
    with pytest.raises(ApiTimeout, match="no new text"):
        await asyncio.wait_for(read_into(deltas, client), WAIT)
    assert "".join(deltas).rstrip(" ") == "Echo: he"  # spaces are shown, but are no text
    await wait_disconnected(api.requests[0])


async def test_keepalives_before_the_first_text_count_as_silence(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.3))
    api.script(Trickle(seconds=30, every=0.02))
    with pytest.raises(ApiTimeout):
        await stream_text(client)
    assert len(api.requests) == 1  # a silent upstream is not asked again


async def test_text_resets_the_idle_clock(api: FakeApi, session: aiohttp.ClientSession) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.3))
    # Ten chunks 0.1 s apart take a second in all, but none is 0.3 s after the one before.
    api.script(Reply(text="abcdefghij", chunk_size=1, chunk_interval=0.1, keepalive=True))
    deltas, _ = await stream_text(client)
    assert "".join(deltas) == "abcdefghij"


def test_a_reasoning_summary_keeps_its_parts_apart() -> None:
    parser = _ResponseParser(lambda payload: ApiError("failed"))
    events: list[dict[str, Any]] = [
        {"type": "response.reasoning_summary_part.added", "summary_index": 0},
        {"type": "response.reasoning_summary_text.delta", "summary_index": 0, "delta": "**A**"},
        {"type": "response.reasoning_summary_part.added", "summary_index": 1},
        {"type": "response.reasoning_summary_text.delta", "summary_index": 1, "delta": "**B**"},
        {"type": "response.output_text.delta", "delta": "Answer."},
    ]
    deltas = [delta for event in events for delta in parser.feed(dict(event))]
    assert "".join(d.text for d in deltas if d.reasoning) == "**A**\n\n**B**"
    assert [d.text for d in deltas if not d.reasoning] == ["Answer."]


async def test_a_pause_in_a_reasoning_summary_may_last_as_long_as_silent_thinking(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    client = make_client(api, session, timeouts=Timeouts(stream_idle=0.2, thinking=5))
    api.script(Reply(text="42", summary="abcd", chunk_size=2, summary_interval=0.5))
    extra = {"reasoning": {"summary": "auto"}}
    async with client.stream_response("q", model="o4-mini", extra=extra) as stream:
        deltas = [delta async for delta in stream]
    assert "".join(d.text for d in deltas if d.reasoning) == "abcd"
    assert [d.text for d in deltas if not d.reasoning] == ["42"]


async def test_a_stream_line_cut_short_is_skipped(api: FakeApi, client: ApiClient) -> None:
    api.default = Reply(text="abcdefgh", chunk_size=2)
    api.script(MalformedLine(after_chunks=2))
    deltas, stream = await stream_text(client)
    assert "".join(deltas) == "abcdefgh"
    assert stream.finish_reason == "stop"


async def test_the_fault_mix_fails_its_share_of_requests(
    api: FakeApi, session: aiohttp.ClientSession
) -> None:
    """Guards the soak benchmark's faults: each kind, as often as counted, seeded."""
    url = f"{api.url}/openai/chat/completions"
    headers = {"Authorization": f"Bearer {api.token}"}
    body = {"model": "m", "messages": MESSAGES, "stream": True}

    async def outcomes(seed: int) -> list[str]:
        api.faults = FaultMix(0.5, seed)
        seen = []
        for _ in range(40):
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    raw = await response.read()
            except aiohttp.ClientPayloadError:
                seen.append("drop")
                continue
            if response.status != 200:
                seen.append(str(response.status))
            elif b'data: {"id": "chatcmpl-cut"' in raw:
                seen.append("malformed")
            else:
                seen.append("ok")
        return seen

    seen = await outcomes(seed=5)
    assert set(seen) == {"ok", "500", "429", "drop", "malformed"}
    assert api.faults.injected == {kind: seen.count(kind) for kind in FaultMix.KINDS}
    assert await outcomes(seed=5) == seen
    api.faults = FaultMix(1.0)
    api.script(Reply(text="scripted"))  # a scripted behaviour comes before the mix
    async with session.post(url, json={**body, "stream": False}, headers=headers) as response:
        assert (await response.json())["choices"][0]["message"]["content"] == "scripted"

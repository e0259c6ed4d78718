"""ChatRouter against the fake API: which endpoint answers, what it is sent, and alternatives
through the Responses API read as one stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.ai import ApiClient, BadRequest, Delta, ResponseStream, RetryPolicy, ServiceUnavailable
from bot.ai.routing import ChatRouter
from tests.fakes.api import Fail, FakeApi, MidStreamError, Reply

IMAGE = "data:image/png;base64,iVBORw0KGgo="
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "alice: hi"},
    {"role": "assistant", "content": "Hello."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "alice: what is this?"},
            {"type": "image_url", "image_url": {"url": IMAGE}},
        ],
    },
]
WAIT = 5.0


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi.running() as fake:
        yield fake


@pytest.fixture
async def client(api: FakeApi) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as session:
        retry = RetryPolicy(attempts=2, base_delay=0.001, max_delay=0.001)
        yield ApiClient(session, base_url=api.url, token=api.token, retry=retry)


def router(
    client: ApiClient, *, responses: bool = True, models: tuple[str, ...] = ()
) -> ChatRouter:
    return ChatRouter(client, use_responses=responses, responses_models=models)


def ask(chat: ChatRouter, model: str = "gpt-4.1", messages: Any = MESSAGES, **options: Any) -> Any:
    defaults: dict[str, Any] = {"temperature": 0.5, "max_tokens": 300, "user": "7"}
    return chat.stream_chat(messages, model=model, **(defaults | options))


async def read(stream: Any) -> list[Delta]:
    async with stream:
        return [delta async for delta in stream]


async def test_chat_completions_by_default_with_n_and_json(api: FakeApi, client: ApiClient) -> None:
    # OpenAI takes JSON answers only of messages that say "JSON".
    messages = [{"role": "system", "content": "Answer in JSON."}, *MESSAGES[1:]]
    await read(ask(router(client, responses=False), messages=messages, json_format=True))
    body = api.requests[0].json
    assert api.requests[0].path == "/openai/chat/completions"
    assert body["messages"] == messages
    assert body["response_format"] == {"type": "json_object"}
    assert "n" not in body
    stream = ask(router(client, responses=False), n=2)
    await read(stream)
    assert api.requests[1].json["n"] == 2


async def test_responses_get_input_items_and_instructions(api: FakeApi, client: ApiClient) -> None:
    deltas = await read(ask(router(client)))
    assert "".join(d.text for d in deltas) == "Echo: alice: what is this?"
    (request,) = api.requests
    assert request.path == "/openai/responses"
    assert request.json == {
        "model": "gpt-4.1",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "alice: hi"},
            {"role": "assistant", "content": "Hello."},
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "alice: what is this?"},
                    {"type": "input_image", "image_url": IMAGE, "detail": "auto"},
                ],
            },
        ],
        "store": False,
        "max_output_tokens": 300,
        "temperature": 0.5,
        "user": "7",
        "stream": True,
    }


async def test_reasoning_models_get_a_summary_instead_of_a_temperature(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(text="Done.", summary="Thinking.", chunk_size=0))
    deltas = await read(ask(router(client), model="o4-mini", max_tokens=5))
    assert deltas == [Delta("Thinking.", reasoning=True), Delta("Done.")]
    body = api.requests[0].json
    assert body["reasoning"] == {"summary": "auto"}
    assert "temperature" not in body
    assert body["max_output_tokens"] == 16  # the least the Responses API takes


async def test_json_answers_ask_for_a_json_text_format(api: FakeApi, client: ApiClient) -> None:
    messages = [{"role": "user", "content": "answer in json"}]
    stream = router(client).stream_chat(
        messages, model="gpt-4.1", temperature=None, max_tokens=None, user=None, json_format=True
    )
    await read(stream)
    assert api.requests[0].json["text"] == {"format": {"type": "json_object"}}


async def test_responses_models_go_through_responses_whatever_chat_api_says(
    api: FakeApi, client: ApiClient
) -> None:
    chat = router(client, responses=False, models=("o4-mini",))
    await read(ask(chat, model="o4-mini"))
    await read(ask(chat, model="gpt-4.1"))
    assert [r.path for r in api.requests] == ["/openai/responses", "/openai/chat/completions"]


async def test_one_answer_is_one_plain_response_stream(client: ApiClient) -> None:
    assert isinstance(ask(router(client)), ResponseStream)


async def test_alternatives_are_parallel_requests_read_as_one_stream(
    api: FakeApi, client: ApiClient
) -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    api.script(
        Reply(text="one one", chunk_size=2, chunk_interval=0.01, usage=usage),
        Reply(text="two two", chunk_size=2, chunk_interval=0.01, usage=usage),
        Reply(text="three", chunk_size=2, finish_reason="length", usage=usage),
    )
    stream = ask(router(client), n=3)
    deltas = await read(stream)
    texts = {choice: "".join(d.text for d in deltas if d.choice == choice) for choice in range(3)}
    # Each request answers one choice; which gets which script is the order they arrived in.
    assert sorted(texts.values()) == ["one one", "three", "two two"]
    assert len({d.choice for d in deltas[:3]}) > 1  # interleaved, not one after another
    assert sorted(stream.finish_reasons.values()) == ["length", "stop", "stop"]
    assert stream.usage.total_tokens == 39
    assert len(api.requests) == 3
    assert all("n" not in r.json for r in api.requests)


async def test_alternatives_that_cannot_all_start_fail_before_any_text(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Fail(400, "bad_request"), Reply(first_byte_delay=2), Reply(first_byte_delay=2))
    with pytest.raises(BadRequest):
        await read(ask(router(client), n=3))
    slow = await api.wait_for_requests(3)
    for request in slow[1:]:
        await asyncio.wait_for(request.disconnected.wait(), WAIT)


async def test_a_failure_of_one_alternative_midway_ends_them_all(
    api: FakeApi, client: ApiClient
) -> None:
    long = Reply(text="word " * 100, chunk_size=5, chunk_interval=0.02)
    api.script(MidStreamError(after_chunks=2), long, long)
    seen: list[Delta] = []
    with pytest.raises(ServiceUnavailable):
        async with ask(router(client), n=3) as stream:
            async for delta in stream:
                seen.append(delta)
    assert seen  # text came before the failure, and stays the caller's
    for request in api.requests[1:]:
        await asyncio.wait_for(request.disconnected.wait(), WAIT)


async def test_leaving_alternatives_early_drops_every_request(
    api: FakeApi, client: ApiClient
) -> None:
    long = Reply(text="word " * 100, chunk_size=5, chunk_interval=0.02)
    api.script(long, long)
    async with ask(router(client), n=2) as stream:
        async for _ in stream:
            break
    for request in api.requests:
        await asyncio.wait_for(request.disconnected.wait(), WAIT)
        assert not request.completed


async def test_stopping_alternatives_while_they_open_drops_every_request(
    api: FakeApi, client: ApiClient
) -> None:
    api.script(Reply(first_byte_delay=30), Reply(first_byte_delay=30))
    reading = asyncio.create_task(read(ask(router(client), n=2)))
    for request in await api.wait_for_requests(2):
        assert not request.disconnected.is_set()
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    for request in api.requests:
        await asyncio.wait_for(request.disconnected.wait(), WAIT)


async def test_without_summaries_reasoning_models_are_asked_again_without(
    api: FakeApi, client: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    api.refuse_summaries = True
    chat = router(client)
    deltas = await read(ask(chat, model="o4-mini"))
    assert "".join(d.text for d in deltas) == "Echo: alice: what is this?"
    assert [r.json.get("reasoning") for r in api.requests] == [{"summary": "auto"}, None]
    assert "refuses reasoning summaries" in caplog.text
    # From then on none is asked for, by each of several alternatives too.
    await read(ask(chat, model="o4-mini", n=2))
    assert [r.json.get("reasoning") for r in api.requests[2:]] == [None, None]


async def test_alternatives_closed_from_another_task_end_the_reading(
    api: FakeApi, client: ApiClient
) -> None:
    long = Reply(text="word " * 200, chunk_size=5, chunk_interval=0.05)
    api.script(long, long)
    stream = ask(router(client), n=2)
    first = asyncio.Event()

    async def consume() -> None:
        async with stream:
            async for _ in stream:
                first.set()

    reading = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), WAIT)
    stream.close()  # e.g. Stop, from the button's task
    await asyncio.wait_for(reading, WAIT)
    for request in api.requests:  # and both connections are dropped
        await asyncio.wait_for(request.disconnected.wait(), WAIT)

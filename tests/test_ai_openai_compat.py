"""The official `openai` package reads the fake: proof that the fake speaks the real format."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import openai
import pytest

from bot.ai import ApiClient, Usage
from tests.fakes.api import FakeApi, Reply

TEXT = "Streams arrive in pieces, quirks and all."
USAGE = {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}


@pytest.fixture
async def api() -> AsyncIterator[FakeApi]:
    async with FakeApi.running() as fake:
        yield fake


@pytest.fixture
async def sdk(api: FakeApi) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key=api.token, max_retries=0)
    yield client
    await client.close()


async def test_sdk_and_our_client_stream_the_same_text(
    api: FakeApi, sdk: openai.AsyncOpenAI
) -> None:
    api.script(
        Reply(text=TEXT, chunk_size=3, keepalive=True, usage=USAGE),
        Reply(text=TEXT, chunk_size=3, keepalive=True, usage=USAGE),
    )
    stream = await sdk.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces: list[str] = []
    finish_reason = usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish_reason = choice.finish_reason or finish_reason
    assert "".join(pieces) == TEXT
    assert finish_reason == "stop"
    assert usage is not None and usage.total_tokens == 21

    async with aiohttp.ClientSession() as session:
        ours = ApiClient(session, base_url=api.url, token=api.token, path_prefix="/v1")
        async with ours.stream_chat([{"role": "user", "content": "hi"}], model="m") as ours_stream:
            assert "".join([delta.text async for delta in ours_stream]) == TEXT
        assert ours_stream.usage == Usage(12, 9, 21)
    assert [rec.path for rec in api.requests] == ["/v1/chat/completions"] * 2


@pytest.mark.parametrize("legacy_object", [False, True])
async def test_sdk_parses_a_whole_completion(
    api: FakeApi, sdk: openai.AsyncOpenAI, legacy_object: bool
) -> None:
    api.script(Reply(text=TEXT, usage=USAGE, legacy_object=legacy_object))
    completion = await sdk.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert completion.choices[0].message.content == TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens == 12
    assert completion.model == "gpt-4o-mini"


async def test_sdk_streams_a_response(api: FakeApi, sdk: openai.AsyncOpenAI) -> None:
    api.script(Reply(text=TEXT, chunk_size=5, send_done=False))
    deltas: list[str] = []
    async with sdk.responses.stream(model="gpt-4.1", input="hi") as stream:
        async for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(deltas) == TEXT
    assert final.output_text == TEXT
    assert final.usage is not None and final.usage.output_tokens > 0


async def test_sdk_streams_a_reasoning_summary(api: FakeApi, sdk: openai.AsyncOpenAI) -> None:
    api.script(Reply(text=TEXT, summary="Thinking it over.", chunk_size=4))
    summary: list[str] = []
    async with sdk.responses.stream(
        model="o4-mini", input="hi", reasoning={"summary": "auto"}
    ) as stream:
        async for event in stream:
            if event.type == "response.reasoning_summary_text.delta":
                summary.append(event.delta)
        final = await stream.get_final_response()
    assert "".join(summary) == "Thinking it over."
    reasoning, message = final.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Thinking it over."
    assert message.type == "message"
    assert final.output_text == TEXT
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize(
    ("finish_reason", "reason"),
    [("length", "max_output_tokens"), ("content_filter", "content_filter")],
)
async def test_sdk_reads_an_incomplete_response(
    api: FakeApi, sdk: openai.AsyncOpenAI, finish_reason: str, reason: str
) -> None:
    api.script(Reply(text=TEXT, finish_reason=finish_reason), Reply(finish_reason=finish_reason))
    async with sdk.responses.stream(model="gpt-4.1", input="hi") as stream:
        kinds = [event.type async for event in stream]
    assert kinds[-1] == "response.incomplete"
    whole = await sdk.responses.create(model="gpt-4.1", input="hi")
    assert whole.status == "incomplete"
    assert whole.incomplete_details is not None and whole.incomplete_details.reason == reason


async def test_sdk_hears_the_fake_refuse_what_responses_does_not_take(
    sdk: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.responses.create(model="gpt-4.1", input="hi", extra_body={"n": 2})
    assert refused.value.code == "unknown_parameter" and refused.value.param == "n"
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.responses.create(model="o4-mini", input="hi", temperature=0.2)
    assert refused.value.code == "unsupported_parameter"


async def test_sdk_sees_the_fakes_errors(api: FakeApi) -> None:
    bad = openai.AsyncOpenAI(base_url=api.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    await bad.close()

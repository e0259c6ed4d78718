"""Chat end to end: the real bot, the fake Discord and the fake API, over real sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.api import Reply
from tests.harness import Harness, custom_ids, running_harness, sqlite_url


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot()
        yield harness


async def test_a_mention_is_answered_by_a_streamed_reply(harness: Harness) -> None:
    harness.api.script(
        Reply(text="Paris is the capital of France.", chunk_size=3, chunk_interval=0.02)
    )
    question = await harness.mention("What is the capital of France?")
    answer = await harness.answer_to(question)

    assert answer.versions[-1].content == "Paris is the capital of France."
    assert len(answer.versions) >= 2, "the answer should appear before it is complete"
    assert any(cid.startswith("answer:regenerate:") for cid in custom_ids(answer))
    assert harness.discord.rate_limited_count == 0
    request = harness.api.requests_to("/chat/completions")[-1]
    assert request.json["messages"][-1] == {
        "role": "user",
        "content": "alice: What is the capital of France?",
    }
    assert request.json["stream"] is True

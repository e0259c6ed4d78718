"""Chat end to end: the real bot, the fake Discord and the fake API, over real sockets."""

from __future__ import annotations

import asyncio
import base64
import io
import sqlite3
import struct
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image

from tests.fakes.api import (
    DropConnection,
    Fail,
    Hang,
    MidStreamError,
    Reply,
    Trickle,
    tiny_png,
)
from tests.fakes.discord import FakeUser, InteractionRecord, MessageRecord, Perm, UploadFile
from tests.harness import Harness, chat_messages, custom_ids, running_harness, sqlite_url

CURSOR = "▌"


@pytest.fixture
async def harness(tmp_path: Path, chat_api: str) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot()
        yield harness


async def finished_interaction(
    harness: Harness, interaction: InteractionRecord, within: float = 10
) -> MessageRecord:
    """Wait until the interaction's response is finished (no Stop button), and return it."""

    def done() -> bool:
        original = interaction.original
        if original is None or not original.versions:
            return False
        content = original.versions[-1].content
        still_writing = CURSOR in content or any(
            cid.startswith("answer:stop:") for cid in custom_ids(original)
        )
        return bool(content) and not content.startswith("⏳") and not still_writing

    await harness.discord.wait_for(done, timeout=within)
    assert interaction.original is not None
    return interaction.original


# Streaming.


async def test_a_mention_is_answered_by_a_streamed_reply(harness: Harness) -> None:
    text = "Paris is the capital of France. " * 6
    harness.api.script(Reply(text=text, chunk_size=4, chunk_interval=0.02))
    question = await harness.mention("What is the capital of France?")
    (request,) = await harness.api.wait_for_requests(1, within=10)
    await asyncio.wait_for(request.finished.wait(), 10)
    # The final text follows the end of the stream at once, not at the routine pace.
    answer = await harness.answer_to(question, within=0.5)

    assert answer.versions[-1].content == text.strip()
    streaming = [v for v in answer.versions if CURSOR in v.content]
    assert streaming, "the answer should be visible while it is written"
    assert any(cid.startswith("answer:regenerate:") for cid in custom_ids(answer))
    assert harness.discord.rate_limited_count == 0
    # Pacing: one channel allows 5 writes in 5 s; the answer took about a second.
    assert len(answer.versions) <= 5

    # The first words show while the stream has barely begun (48 chunks in all).
    assert len(request.chunk_times) == 48
    assert answer.versions[0].mono < request.chunk_times[15]
    assert chat_messages(request.json)[-1] == {
        "role": "user",
        "content": "alice: What is the capital of France?",
    }
    assert answer.allowed_mentions is not None
    assert answer.allowed_mentions.get("parse") == []


async def test_a_reasoning_model_shows_its_thinking_until_the_answer(tmp_path: Path) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api="responses") as harness:
        await harness.start_bot(chat_model="o4-mini")
        summary = "**Weighing the question**\n\nParis has been the capital since 987."
        harness.api.script(Reply(text="Paris.", summary=summary, summary_interval=0.1))
        question = await harness.mention("What is the capital of France?")
        answer = await harness.answer_to(question, within=15)
        await harness.discord.wait_for(lambda: answer.versions[-1].content == "Paris.", timeout=5)

    (request,) = harness.api.requests
    assert request.json["reasoning"] == {"summary": "auto"}
    thinking = [v.content for v in answer.versions if "💭 Thinking…" in v.content]
    # The summary shows in small text above the time, which moves on while it thinks.
    assert any("-# **Weighing the question**\n-# Paris has been" in text for text in thinking)
    elapsed = {text.rsplit("Thinking… ", 1)[1] for text in thinking}
    assert len(elapsed) >= 2, thinking
    assert not any(CURSOR in text for text in thinking)  # never an empty answer's cursor


async def test_a_long_answer_continues_in_new_messages_with_code_blocks_intact(
    harness: Harness,
) -> None:
    code = "\n".join(f"    print({n})  # line {n}" for n in range(200))
    text = "Here is the program:\n\n```python\n" + code + "\n```\n\nThat is all." + " Done." * 50
    harness.api.script(Reply(text=text, chunk_size=200))
    question = await harness.mention("Write a long program")

    await harness.discord.wait_for(
        lambda: any(
            "answer:regenerate:" in str(m.versions[-1].components) for m in harness.bot_messages()
        ),
        timeout=15,
    )
    pieces = [m.versions[-1].content for m in harness.bot_messages()]
    assert len(pieces) >= 3
    assert all(len(piece) <= 2000 for piece in pieces)
    assert all(piece.count("```") % 2 == 0 for piece in pieces)
    assert all(piece.startswith("```python") for piece in pieces[1:-1])
    joined = "".join(pieces)
    for n in (0, 100, 199):
        assert f"print({n})  # line {n}" in joined
    assert pieces[-1].endswith("Done.")
    # Only the last message carries the Regenerate button; the first replies to the question.
    assert [bool(custom_ids(m)) for m in harness.bot_messages()] == [False] * (len(pieces) - 1) + [
        True
    ]
    assert harness.bot_messages()[0].reference == {
        "message_id": str(question.id),
        "channel_id": str(question.channel_id),
        "guild_id": str(harness.guild.id),
    } or (harness.bot_messages()[0].reference or {}).get("message_id") == str(question.id)
    assert harness.discord.rate_limited_count == 0


async def test_an_answer_past_max_answer_messages_comes_whole_as_a_file(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(max_answer_messages=2)
        paragraphs = [f"Paragraph {n}: " + "all work and no play. " * 40 for n in range(8)]
        text = "\n\n".join(paragraphs) + "\n\nThe end ✓ — ünïcode."
        harness.api.script(Reply(text=text, chunk_size=400))
        await harness.answer_to(await harness.mention("write a lot"), within=15)
        await harness.discord.wait_for(
            lambda: any(
                "answer:regenerate:" in str(m.latest.components) for m in harness.bot_messages()
            ),
            timeout=15,
        )
        first, last = harness.bot_messages()  # never more than two messages
        assert first.latest.content.startswith("Paragraph 0:")
        assert last.latest.content.endswith(
            "-# The answer fills more than 2 messages: all of it is in the attached answer.md."
        )
        assert len(last.latest.content) <= 2000
        (file,) = last.attachment_files
        assert last.latest.attachment_names == ["answer.md"]
        assert file.data == text.encode()  # byte for byte
        assert harness.discord.rate_limited_count == 0


async def test_a_capped_answer_where_files_are_not_allowed_says_it_was_cut_short(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(max_answer_messages=1)
        harness.discord.set_overwrite(
            harness.general, harness.guild.everyone, deny=Perm.ATTACH_FILES
        )
        harness.api.script(Reply(text="lorem ipsum " * 400, chunk_size=600))
        answer = await harness.answer_to(await harness.mention("write a lot"), within=15)
        await harness.discord.wait_for(lambda: "-#" in answer.latest.content, timeout=10)
        assert answer.latest.content.endswith(
            "-# The answer fills more than 1 message: it was cut short here, as I may not "
            "attach files in this channel."
        )
        assert answer.latest.attachments == []
        assert harness.bot_messages() == [answer]


async def test_a_capped_slash_command_answer_attaches_the_file_to_its_last_message(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(max_answer_messages=1)
        text = "\n\n".join(f"Part {n}. " + "lorem ipsum " * 120 for n in range(4))
        harness.api.script(Reply(text=text, chunk_size=500))
        interaction = await harness.discord.invoke_command(
            "ask", {"prompt": "long please"}, channel=harness.general
        )
        original = await finished_interaction(harness, interaction)
        assert interaction.messages == [original]  # no followup past the cap
        assert original.latest.content.startswith("Part 0.")
        assert "all of it is in the attached answer.md" in original.latest.content
        (file,) = original.attachment_files
        assert file.data == text.encode()


async def test_an_answer_the_database_refuses_is_finished_and_the_person_told(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    database = harness.database_url.split(":///", 1)[1]
    with sqlite3.connect(database) as connection:
        connection.execute(
            "CREATE TRIGGER refuse_poison BEFORE UPDATE OF content ON turns "
            "WHEN NEW.content LIKE '%poison%' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    harness.api.script(Reply(text="A poison apple, said the queen."))
    answer = await harness.answer_to(await harness.mention("what did she offer?"))
    # The answer shows as soon as it is complete; the notice follows when the save fails.
    await harness.discord.wait_for(lambda: "-#" in answer.latest.content, timeout=5)
    text, notice = answer.latest.content.split("\n\n-# ")
    assert text == "A poison apple, said the queen."
    assert notice == "This answer could not be saved, so later questions will not see it."
    with sqlite3.connect(database) as connection:
        statuses = connection.execute("SELECT role, status, content FROM turns").fetchall()
    assert statuses[-1] == ("assistant", "failed", "[The answer could not be saved.]")
    assert "poison" not in caplog.text  # the refused text is not in the log either
    await harness.answer_to(await harness.mention("and then?"))
    assert harness.sent_history()[-2] == "[The answer could not be saved.]"


# Slash commands.


async def test_ask_streams_into_the_interaction_response(harness: Harness) -> None:
    harness.api.script(Reply(text="Forty-two.", chunk_size=2, chunk_interval=0.02))
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "What is the answer?", "model": "gpt-4o"}, channel=harness.general
    )
    original = await finished_interaction(harness, interaction)
    assert interaction.deferred and interaction.ack_latency is not None
    assert interaction.ack_latency < 1.0
    assert original.versions[-1].content == "Forty-two."
    request = harness.chat_requests()[-1]
    assert request.json["model"] == "gpt-4o"


async def test_private_ask_is_ephemeral_and_leaves_history_alone(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "secret question", "private": True}, channel=harness.general
    )
    original = await finished_interaction(harness, interaction)
    assert original.visible_to == harness.alice.id
    question = await harness.mention("public question")
    await harness.answer_to(question)
    assert "secret question" not in str(harness.sent_messages())


async def test_model_autocomplete_offers_the_configured_models(harness: Harness) -> None:
    record = await harness.discord.invoke_autocomplete(
        "ask", {"prompt": "hi", "model": "mini"}, focused="model"
    )
    await harness.discord.wait_for(lambda: record.autocomplete_choices is not None, timeout=5)
    names = [choice["value"] for choice in record.autocomplete_choices or []]
    assert names and all("mini" in name for name in names)
    assert "gpt-4o-mini" in names


async def test_an_unknown_model_gets_a_sentence_and_no_request(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "hi", "model": "gpt-imaginary"}
    )
    assert "gpt-imaginary" in await harness.told(interaction)
    assert harness.chat_requests() == []


async def test_ask_sends_an_attached_image_to_the_model(harness: Harness) -> None:
    png = tiny_png(3)
    interaction = await harness.discord.invoke_command(
        "ask",
        {"prompt": "What colour is this?"},
        attachments={"image": UploadFile("dot.png", png, "image/png")},
    )
    await finished_interaction(harness, interaction)
    content = harness.sent_messages()[-1]["content"]
    assert isinstance(content, list)
    image_part = next(part for part in content if part["type"] == "image_url")
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == png


def header_only_png(width: int, height: int) -> bytes:
    """A PNG header announcing any size, with no pixels behind it."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


BAD_IMAGES = [
    (UploadFile("cat.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj", "image/png"), "not an image"),
    (UploadFile("huge.png", header_only_png(10_000, 8_000), "image/png"), "the limit is 70 MP"),
]


@pytest.mark.parametrize(("upload", "expected"), BAD_IMAGES, ids=["pdf", "80-megapixels"])
async def test_ask_checks_the_image_by_its_content_before_any_request(
    harness: Harness, upload: UploadFile, expected: str
) -> None:
    interaction = await harness.discord.invoke_command(
        "ask", {"prompt": "What is this?"}, attachments={"image": upload}
    )

    def said() -> str:
        shown = [m for m in interaction.messages if not m.deleted and m.versions]
        return shown[-1].versions[-1].content if shown else ""

    await harness.discord.wait_for(lambda: said().startswith("⚠️"), timeout=10)
    assert expected in said()
    assert said().startswith("⚠️")
    assert harness.chat_requests() == []
    # Everyone saw the bot thinking; only the person sees why it stopped.
    assert interaction.original is not None and interaction.original.deleted
    assert [m.ephemeral for m in interaction.messages if not m.deleted] == [True]


@pytest.mark.parametrize("declared", ["image/png", "application/pdf", None])
async def test_a_mention_with_a_file_that_is_no_image_gets_a_sentence(
    harness: Harness, declared: str | None
) -> None:
    question = await harness.mention(
        "what does this say?",
        attachments=[UploadFile("notes.png", b"plain text, not a picture", declared)],
    )

    def replied() -> str:
        replies = [
            m
            for m in harness.bot_messages()
            if (m.reference or {}).get("message_id") == str(question.id)
        ]
        return replies[-1].versions[-1].content if replies else ""

    await harness.discord.wait_for(lambda: "not an image" in replied(), timeout=10)
    assert harness.chat_requests() == []


async def test_ask_sends_a_large_image_at_the_size_vision_models_use(harness: Harness) -> None:
    picture = Image.new("RGB", (3000, 1500), (200, 30, 30))
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    interaction = await harness.discord.invoke_command(
        "ask",
        {"prompt": "What colour is this?"},
        attachments={"image": UploadFile("wide.png", buffer.getvalue(), "image/png")},
    )
    await finished_interaction(harness, interaction)
    content = harness.sent_messages()[-1]["content"]
    url = next(part for part in content if part["type"] == "image_url")["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.size == (2048, 1024)


# Conversations.


async def test_history_is_per_channel_and_survives_a_restart(harness: Harness) -> None:
    harness.api.script(Reply(text="Nice to meet you, Alice."))
    await harness.answer_to(await harness.mention("My name is Alice."))

    await harness.answer_to(await harness.mention("What is my name?"))
    second = harness.sent_history()
    assert harness.bot is not None
    assert second[0] == harness.bot.settings.system_prompt  # or the Responses `instructions`
    assert second[1:] == [
        "alice: My name is Alice.",
        "Nice to meet you, Alice.",
        "alice: What is my name?",
    ]

    await harness.answer_to(await harness.mention("Who am I?", channel=harness.random))
    assert "alice: My name is Alice." not in harness.sent_history()

    await harness.stop_bot()
    await harness.start_bot()
    await harness.answer_to(await harness.mention("Still there?"))
    assert "alice: My name is Alice." in harness.sent_history()


async def test_reset_forgets_the_conversation(harness: Harness) -> None:
    await harness.answer_to(await harness.mention("Remember the number 7."))
    refused = await harness.discord.invoke_command("reset", channel=harness.general)
    assert "takes the Manage Messages permission" in await harness.told(refused)

    interaction = await harness.discord.invoke_command(
        "reset", channel=harness.general, user=harness.moderator
    )
    await harness.discord.wait_for(
        lambda: "Forgot" in (interaction.original.content if interaction.original else ""),
        timeout=5,
    )
    await harness.answer_to(await harness.mention("Which number?"))
    assert harness.sent_history()[1:] == ["alice: Which number?"]


async def test_a_chat_thread_is_reset_by_its_opener_or_a_moderator(harness: Harness) -> None:
    keeper = harness.discord.add_user("keeper")
    harness.discord.add_member(harness.guild, keeper, permissions=Perm.MANAGE_THREADS)
    await harness.discord.invoke_command("chat", {"prompt": "Let us plan a trip"})
    await harness.discord.wait_for(
        lambda: any(c.is_thread for c in harness.discord.channels.values()), timeout=5
    )
    thread = next(c for c in harness.discord.channels.values() if c.is_thread)
    await harness.discord.wait_for(
        lambda: any(
            "answer:regenerate:" in str(m.components) for m in harness.bot_messages(thread)
        ),
        timeout=10,
    )

    async def reset_by(user: FakeUser) -> str:
        interaction = await harness.discord.invoke_command("reset", channel=thread, user=user)

        def said() -> MessageRecord | None:
            shown = [*interaction.followups, interaction.original]
            return next((m for m in shown if m and not m.deleted and m.content), None)

        message = await harness.discord.wait_for(said, timeout=5)
        assert message is not None
        assert message.ephemeral == message.content.startswith("⚠️")
        return message.content

    refusal = await reset_by(harness.bob)
    assert refusal.startswith("⚠️ Only the person who opened this thread with /chat")
    assert await reset_by(keeper) == "🧹 Forgot this conversation (2 messages)."
    await harness.answer_to(await harness.discord.post_message(thread, harness.bob, "Hi"))
    # The first turn is bob's now, and still the thread is alice's to reset.
    assert (await reset_by(harness.bob)).startswith("⚠️ Only the person who opened")
    assert await reset_by(harness.alice) == "🧹 Forgot this conversation (2 messages)."
    assert await reset_by(harness.moderator) == "There was nothing to forget here."


@pytest.mark.parametrize(
    ("denied", "named"),
    [
        (Perm.CREATE_PUBLIC_THREADS, "Create Public Threads"),
        (Perm.SEND_MESSAGES_IN_THREADS, "Send Messages in Threads"),
        (Perm.READ_MESSAGE_HISTORY, "Read Message History"),
    ],
)
async def test_chat_without_thread_permissions_is_refused_before_paying(
    harness: Harness, denied: int, named: str
) -> None:
    harness.discord.set_overwrite(harness.general, harness.guild.everyone, deny=denied)
    interaction = await harness.discord.invoke_command(
        "chat", {"prompt": "Let us plan a trip"}, channel=harness.general
    )
    await harness.discord.wait_for(lambda: interaction.original is not None, timeout=5)
    assert interaction.original is not None and interaction.ephemeral
    assert interaction.original.content == (
        f"⚠️ I need the {named} permission in this channel for /chat."
    )
    assert harness.api.requests == []
    assert not any(c.is_thread for c in harness.discord.channels.values())


async def test_chat_opens_a_thread_that_is_answered_without_mentions(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command(
        "chat", {"prompt": "Let us plan a trip"}, channel=harness.general
    )
    await harness.discord.wait_for(
        lambda: any(c.is_thread for c in harness.discord.channels.values()), timeout=5
    )
    thread = next(c for c in harness.discord.channels.values() if c.is_thread)
    assert thread.name == "Let us plan a trip"
    assert interaction.acknowledged

    def first_answer() -> MessageRecord | None:
        return next(
            (m for m in harness.bot_messages(thread) if "answer:regenerate:" in str(m.components)),
            None,
        )

    first = await harness.discord.wait_for(first_answer, timeout=10)
    assert first is not None
    question = await harness.discord.post_message(thread, harness.bob, "Somewhere warm, please")
    second = await harness.answer_to(question)
    assert harness.sent_history()[1:] == [
        "alice: Let us plan a trip",
        first.versions[-1].content,
        "bob: Somewhere warm, please",
    ]

    # After a restart the thread still answers without a mention.
    await harness.stop_bot()
    await harness.start_bot()
    await harness.answer_to(
        await harness.discord.post_message(thread, harness.alice, "And after that?")
    )
    assert harness.sent_history()[3:] == [
        "bob: Somewhere warm, please",
        second.versions[-1].content,
        "alice: And after that?",
    ]
    # The channel the thread was opened from has its own, empty history.
    await harness.answer_to(await harness.mention("Anything here?"))
    assert harness.sent_history()[1:] == ["alice: Anything here?"]


async def test_replies_continue_and_bring_another_persons_message(harness: Harness) -> None:
    harness.api.script(Reply(text="The answer is 4."))
    answer = await harness.answer_to(await harness.mention("What is 2+2?"))
    reply = await harness.discord.post_message(
        harness.general, harness.bob, "And times 3?", reference=answer, mention_author=False
    )
    await harness.answer_to(reply)
    assert harness.sent_history()[-1] == "bob: And times 3?"
    assert "The answer is 4." in harness.sent_history()

    said = await harness.discord.post_message(harness.general, harness.bob, "Cats are liquid.")
    asking = await harness.discord.post_message(
        harness.general,
        harness.alice,
        "is that true?",
        mentions=[harness.discord.bot_user],
        reference=said,
        mention_author=False,
    )
    await harness.answer_to(asking)
    assert harness.sent_history()[-1] == (
        "(In reply to bob: Cats are liquid.)\nalice: is that true?"
    )


async def test_other_bots_and_plain_messages_are_ignored(harness: Harness) -> None:
    await harness.mention("hello from a bot", author=harness.other_bot)
    await harness.discord.post_message(harness.general, harness.alice, "just chatting")
    probe = await harness.mention("are you there?")
    await harness.answer_to(probe)
    assert len(harness.chat_requests()) == 1
    assert len(harness.bot_messages()) == 1


# Failures.

FAILURES = [
    (Fail(403, "used_up"), "out of credits"),
    (Fail(403, "forbidden"), "content policy"),
    (Fail(400, "bad_request"), "rejected the request"),
    (Fail(401, "invalid_token"), "token"),
]


@pytest.mark.parametrize(("failure", "sentence"), FAILURES, ids=lambda v: str(v)[:20])
async def test_api_failures_become_one_sentence(
    harness: Harness, failure: Fail, sentence: str
) -> None:
    harness.api.script(failure)
    answer = await harness.answer_to(await harness.mention("hello?"))
    assert sentence in answer.versions[-1].content
    assert answer.versions[-1].content.startswith("⚠️")
    assert harness.api.token not in answer.versions[-1].content
    # The next question works, and the failed one left nothing in the history.
    await harness.answer_to(await harness.mention("hello again"))
    assert harness.sent_history()[1:] == ["alice: hello again"]


async def test_rate_limited_then_success_is_retried(harness: Harness) -> None:
    harness.api.script(Fail(429, "too_many_requests"), Reply(text="Got there."))
    answer = await harness.answer_to(await harness.mention("hello?"))
    assert answer.versions[-1].content == "Got there."
    assert len(harness.chat_requests()) == 2


@pytest.mark.parametrize(
    "fault",
    [
        MidStreamError(after_chunks=3),
        MidStreamError(after_chunks=3, event="response.failed"),
        DropConnection(after_chunks=3),
    ],
    ids=["error-mid-stream", "failed-mid-stream", "dropped-connection"],
)
async def test_a_failure_mid_answer_keeps_the_partial_text_with_a_notice(
    harness: Harness, fault: MidStreamError | DropConnection
) -> None:
    harness.api.script(fault)  # three chunks of the echoed question, then the fault
    answer = await harness.answer_to(await harness.mention("tell me a long story"))
    content = answer.versions[-1].content
    partial, notice = content.split("\n\n-# ")
    assert partial == "Echo: alice:"  # three chunks of four characters
    assert notice == "The AI service is unavailable right now; please try again later."
    # No retry after words were shown.
    assert len(harness.chat_requests()) == 1
    await harness.answer_to(await harness.mention("next"))


@pytest.mark.parametrize(
    ("finish_reason", "notice"),
    [
        ("length", "The answer reached its length limit and was cut short."),
        ("content_filter", "The rest of the answer was withheld by the content filter."),
    ],
    ids=["length", "content_filter"],
)
async def test_an_answer_cut_short_upstream_says_why(
    harness: Harness, finish_reason: str, notice: str
) -> None:
    harness.api.script(Reply(text="Half an ans", finish_reason=finish_reason))
    answer = await harness.answer_to(await harness.mention("go on"))
    assert answer.latest.content == f"Half an ans\n\n-# {notice}"


async def test_usage_is_recorded_as_the_api_reports_it(harness: Harness) -> None:
    usage = {"prompt_tokens": 321, "completion_tokens": 54, "total_tokens": 375}
    harness.api.script(Reply(text="Counted.", usage=usage))
    await harness.answer_to(await harness.mention("count me"))
    database = harness.database_url.split(":///", 1)[1]

    def recorded() -> list[tuple[int, int]]:
        with sqlite3.connect(database) as connection:
            query = "SELECT prompt_tokens, completion_tokens FROM usage_records"
            return connection.execute(query).fetchall()

    await harness.discord.wait_for(lambda: recorded() != [], timeout=5)
    assert recorded() == [(321, 54)]


async def test_a_model_in_responses_models_goes_through_responses(tmp_path: Path) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        bot = await harness.start_bot(responses_models=["o4-mini"])
        harness.api.script(
            Reply(text="Four.", summary="Adding two and two.", summary_interval=0.01)
        )
        interaction = await harness.discord.invoke_command(
            "ask", {"prompt": "2+2?", "model": "o4-mini"}
        )
        original = await finished_interaction(harness, interaction)
        assert original.latest.content == "Four."  # the summary is no part of the answer
        await harness.answer_to(await harness.mention("and 3+3?"))  # the default model

        first, second = harness.chat_requests()
        assert (first.path, second.path) == ("/openai/responses", "/openai/chat/completions")
        assert first.json["instructions"] == bot.settings.system_prompt
        assert first.json["input"] == [{"role": "user", "content": "alice: 2+2?"}]
        assert first.json["reasoning"] == {"summary": "auto"}
        assert "temperature" not in first.json
        assert harness.sent_history()[1:] == ["alice: 2+2?", "Four.", "alice: and 3+3?"]


async def test_a_timeout_is_a_sentence(tmp_path: Path, chat_api: str) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(stream_idle_timeout=0.3)
        harness.api.script(Hang(2), Hang(2), Hang(2))
        answer = await harness.answer_to(await harness.mention("slow?"), within=15)
        assert "took too long" in answer.versions[-1].content


@pytest.mark.parametrize("kind", ["comment", "whitespace", "empty"])
async def test_an_upstream_sending_only_keepalives_ends_the_answer(
    tmp_path: Path, chat_api: str, kind: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(stream_idle_timeout=0.5)
        harness.api.script(Trickle(seconds=60, after_chunks=3, every=0.05, kind=kind))
        answer = await harness.answer_to(await harness.mention("tell me a story"))
        partial, notice = answer.versions[-1].content.split("\n\n-# ")
        assert partial == "Echo: alice:"
        assert "took too long" in notice
        request = harness.chat_requests()[0]
        await asyncio.wait_for(request.disconnected.wait(), 5)  # the upstream was let go
        # The channel and the person's queue are free again.
        next_answer = await harness.answer_to(await harness.mention("and now?"))
        assert next_answer.versions[-1].content == "Echo: alice: and now?"


async def test_an_answer_that_runs_past_answer_timeout_ends_with_its_text(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(answer_timeout=1.5)
        harness.api.script(Reply(text="word " * 400, chunk_size=5, chunk_interval=0.05))
        answer = await harness.answer_to(await harness.mention("go on forever"), within=10)
        partial, notice = answer.versions[-1].content.split("\n\n-# ")
        assert partial.startswith("word word")
        assert notice == "The answer took longer than 1.5 seconds and was cut short."
        request = harness.chat_requests()[0]
        await asyncio.wait_for(request.disconnected.wait(), 5)
        # What was shown is what the history keeps.
        await harness.answer_to(await harness.mention("next"))
        assert partial.strip() in harness.sent_history()[-2]


async def test_commands_are_registered_only_when_they_change(harness: Harness) -> None:
    def registrations() -> int:
        return len(harness.discord.requests_for("commands", method="PUT"))

    assert registrations() == 1
    await harness.stop_bot()
    await harness.start_bot()
    assert registrations() == 1
    await harness.stop_bot()
    await harness.start_bot(dev_guild_id=harness.guild.id)  # another scope: registered there
    assert registrations() == 2
    in_guild = {c["name"] for c in harness.discord.registered_commands(harness.guild)}
    assert in_guild == {c["name"] for c in harness.discord.registered_commands()}


async def test_a_prompt_over_the_limit_gets_a_sentence_and_no_request(harness: Harness) -> None:
    interaction = await harness.discord.invoke_command("ask", {"prompt": "x" * 4500})
    assert await harness.told(interaction) == (
        "⚠️ Your message is 4500 characters long; the limit is 4000."
    )
    question = await harness.mention("y" * 4100)
    await harness.discord.wait_for(lambda: harness.bot_messages(), timeout=5)
    (refusal,) = harness.bot_messages()
    assert refusal.content == "⚠️ Your message is 4100 characters long; the limit is 4000."
    assert (refusal.reference or {}).get("message_id") == str(question.id)
    assert harness.chat_requests() == []


async def test_without_the_message_content_intent_mentions_still_work(
    tmp_path: Path, chat_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(message_content_intent=False)
        assert "The message content intent is off" in caplog.text
        answer = await harness.answer_to(await harness.mention("still hear me?"))
        # A reply without a mention arrives empty without the intent: it is left alone.
        await harness.discord.post_message(
            harness.general, harness.bob, "and this?", reference=answer, mention_author=False
        )
        await harness.answer_to(await harness.mention("and a mention again"))
        assert [chat_messages(r.json)[-1]["content"] for r in harness.chat_requests()] == [
            "alice: still hear me?",
            "alice: and a mention again",
        ]

"""Stop and Regenerate, concurrency, restarts and Discord's own hiccups, end to end."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.db.repository import ConversationStore, NewTurn
from cogs.sinks import DiscordLimits
from tests.fakes.api import Reply, tiny_png
from tests.fakes.discord import FakeDiscordConfig, MessageRecord, Perm, UploadFile
from tests.harness import Harness, chat_messages, custom_ids, running_harness, sqlite_url

SLOW = Reply(text="word " * 60, chunk_size=5, chunk_interval=0.05)  # about three seconds


@pytest.fixture
async def harness(tmp_path: Path, chat_api: str) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot()
        yield harness


async def streaming_answer(harness: Harness, question: MessageRecord) -> MessageRecord:
    """Wait until the bot's answer to `question` shows text and a Stop button."""

    def found() -> MessageRecord | None:
        for message in harness.bot_messages(harness.discord.channels[question.channel_id]):
            if (message.reference or {}).get("message_id") == str(question.id) and any(
                cid.startswith("answer:stop:") for cid in custom_ids(message)
            ):
                return message
        return None

    await harness.discord.wait_for(lambda: found() is not None, timeout=10)
    answer = found()
    assert answer is not None
    return answer


def button(message: MessageRecord, prefix: str) -> str:
    return next(cid for cid in custom_ids(message) if cid.startswith(prefix))


async def test_stop_ends_the_answer_and_its_upstream_request(harness: Harness) -> None:
    harness.api.script(SLOW)
    question = await harness.mention("Tell me a long story")
    answer = await streaming_answer(harness, question)
    request = harness.chat_requests()[-1]

    # Someone else may not stop it; a moderator may.
    refused = await harness.discord.click_button(
        answer, button(answer, "answer:stop:"), harness.bob
    )
    await harness.discord.wait_for(lambda: refused.acknowledged, timeout=5)
    assert refused.original is not None and refused.original.visible_to == harness.bob.id
    assert "Only the person who asked" in refused.original.versions[-1].content

    await harness.discord.click_button(answer, button(answer, "answer:stop:"), harness.moderator)
    finished = await harness.answer_to(question)
    assert finished.versions[-1].content.endswith("-# Stopped by moderator.")
    await asyncio.wait_for(request.disconnected.wait(), 5)
    assert not request.completed


async def test_regenerate_replaces_the_answer_in_the_history_also_after_a_restart(
    harness: Harness,
) -> None:
    harness.api.script(Reply(text="First try."))
    first = await harness.answer_to(await harness.mention("Name a colour"))
    await harness.stop_bot()
    await harness.start_bot()

    harness.api.script(Reply(text="Second try."))
    refused = await harness.discord.click_button(
        first, button(first, "answer:regenerate:"), harness.bob
    )
    await harness.discord.wait_for(lambda: refused.followups, timeout=5)
    assert "Only the person who asked" in refused.followups[0].versions[-1].content
    assert refused.followups[0].visible_to == harness.bob.id
    assert len(harness.chat_requests()) == 1

    await harness.discord.click_button(first, button(first, "answer:regenerate:"), harness.alice)
    await harness.discord.wait_for(
        lambda: any(
            m.versions[-1].content == "Second try." and custom_ids(m)
            for m in harness.bot_messages()
        ),
        timeout=10,
    )
    assert custom_ids(harness.discord.message(first.id)) == []  # the old answer's button is gone
    regenerated = harness.sent_history()
    assert regenerated[1:] == ["alice: Name a colour"]

    await harness.answer_to(await harness.mention("Why that one?"))
    history = harness.sent_history()
    assert history[1:] == ["alice: Name a colour", "Second try.", "alice: Why that one?"]


async def test_regenerate_pressed_as_soon_as_it_shows_works(tmp_path: Path, chat_api: str) -> None:
    # The button shows before Discord's reply to that write reaches the bot, so the press
    # arrives while the answer is still being stored.
    config = FakeDiscordConfig(bot_reply_delay=0.3)
    async with running_harness(sqlite_url(tmp_path), config=config, chat_api=chat_api) as harness:
        await harness.start_bot()
        harness.api.script(Reply(text="First try."), Reply(text="Second try."))
        first = await harness.answer_to(await harness.mention("Name a colour"))
        press = await harness.discord.click_button(
            first, button(first, "answer:regenerate:"), harness.alice
        )
        await harness.discord.wait_for(
            lambda: any(m.versions[-1].content == "Second try." for m in harness.bot_messages()),
            timeout=10,
        )
        assert press.followups == []  # no refusal


async def test_deleting_the_answer_stops_its_upstream_request(harness: Harness) -> None:
    harness.api.script(SLOW)
    question = await harness.mention("Tell me a long story")
    answer = await streaming_answer(harness, question)
    request = harness.chat_requests()[-1]
    deleted = await harness.discord.delete_message(harness.general, answer.id, by=harness.moderator)
    await asyncio.wait_for(request.disconnected.wait(), 5)
    assert not request.completed
    # The next question of this conversation waits for the deleted answer to be settled.
    later = await harness.answer_to(await harness.mention("Still there?"))
    assert later.content == "Echo: alice: Still there?"
    # Nothing more was written for the deleted answer: no message took its place, and no
    # write to it got through after it was deleted.
    assert harness.bot_messages() == [later]
    assert deleted.deleted_mono is not None
    after = [r for r in harness.discord.requests if r.mono > deleted.deleted_mono]
    assert [r.status for r in after if str(answer.id) in r.path] in ([], [404])


async def test_questions_in_one_conversation_are_answered_in_order(harness: Harness) -> None:
    harness.api.script(Reply(text="One.", chunk_interval=0.05), Reply(text="Two."))
    first = await harness.mention("first question")
    second = await harness.mention("second question", author=harness.bob)
    await harness.answer_to(first)
    await harness.answer_to(second)
    messages = harness.sent_history()
    assert messages[1:] == ["alice: first question", "One.", "bob: second question"]


async def test_a_full_house_shows_a_queued_state(tmp_path: Path, chat_api: str) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        await harness.start_bot(max_concurrent_requests=1)
        harness.api.script(SLOW, Reply(text="Your turn."))
        first = await harness.mention("first")
        await streaming_answer(harness, first)
        second = await harness.mention("second", author=harness.bob, channel=harness.random)
        await harness.discord.wait_for(
            lambda: any(
                m.versions[-1].content.startswith("⏳ Queued")
                for m in harness.bot_messages(harness.random)
            ),
            timeout=5,
        )
        answer = await harness.answer_to(second, within=15)
        assert answer.versions[-1].content == "Your turn."


async def test_discord_429s_and_a_gateway_reconnect_do_not_lose_the_answer(
    tmp_path: Path, chat_api: str
) -> None:
    # Discord here allows fewer writes than the bot plans for, so it meets real 429s.
    config = FakeDiscordConfig(channel_message_limit=1, channel_message_window=2.0)
    async with running_harness(sqlite_url(tmp_path), config=config, chat_api=chat_api) as harness:
        await harness.start_bot()
        text = "word " * 60
        harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05))
        question = await harness.mention("Tell me a long story")
        await streaming_answer(harness, question)
        await harness.discord.drop_gateway()
        answer = await harness.answer_to(question, within=20)
        assert answer.versions[-1].content == text.strip()
        assert harness.discord.rate_limited_count > 0
        assert harness.discord.resume_count >= 1
        # Events after the reconnect still arrive.
        await harness.answer_to(await harness.mention("And now?"), within=10)


async def test_shutdown_ends_answers_with_a_notice(
    harness: Harness,
) -> None:
    harness.api.script(SLOW)
    question = await harness.mention("Tell me a long story")
    await streaming_answer(harness, question)
    await harness.stop_bot()
    answer = await harness.answer_to(question)
    assert answer.versions[-1].content.endswith("-# The bot is restarting; ask again in a minute.")


async def test_direct_messages_are_answered_only_when_allowed(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        dm = harness.discord.dm_channel(harness.alice)
        await harness.start_bot()
        await harness.discord.post_message(dm, harness.alice, "hello in private")
        # Events arrive in order: once a later question is answered, the message is settled.
        probe = await harness.mention("probe")
        await harness.answer_to(probe)
        assert harness.bot_messages(dm) == []
        assert harness.sent_history(0)[1:] == ["alice: probe"]
        assert len(harness.chat_requests()) == 1

        await harness.stop_bot()
        await harness.start_bot(allow_direct_messages=True)
        question = await harness.discord.post_message(dm, harness.alice, "hello again")
        answer = await harness.answer_to(question)
        assert answer.versions[-1].content == "Echo: alice: hello again"
        assert harness.sent_history()[1:] == ["alice: hello again"]


async def test_slash_commands_are_offered_in_direct_messages_only_when_allowed(
    tmp_path: Path, chat_api: str
) -> None:
    async with running_harness(sqlite_url(tmp_path), chat_api=chat_api) as harness:
        dm = harness.discord.dm_channel(harness.alice)
        await harness.start_bot()
        registered = harness.discord.registered_commands()
        assert {c["name"] for c in registered} >= {"ask", "chat", "image", "edit", "reset"}
        assert all(c["contexts"] == [0] and c["integration_types"] == [0] for c in registered)
        with pytest.raises(ValueError, match="not offered in direct messages"):
            await harness.discord.invoke_command("ask", {"prompt": "hi"}, channel=dm)

        await harness.stop_bot()
        await harness.start_bot(allow_direct_messages=True)
        assert all(c["contexts"] == [0, 1] for c in harness.discord.registered_commands())
        interaction = await harness.discord.invoke_command("ask", {"prompt": "hi"}, channel=dm)
        await harness.discord.wait_for(
            lambda: (
                interaction.original is not None
                and interaction.original.latest.content == "Echo: alice: hi"
            ),
            timeout=10,
        )
        assert interaction.original is not None and interaction.original.channel_id == dm.id


async def test_stop_while_waiting_ends_it_at_once_and_stores_nothing(harness: Harness) -> None:
    harness.api.script(SLOW, Reply(text="never asked"))
    first = await harness.mention("first question")
    await streaming_answer(harness, first)
    second = await harness.mention("second question", author=harness.bob)
    await harness.discord.wait_for(
        lambda: any(
            m.versions[-1].content.startswith("⏳ Waiting") for m in harness.bot_messages()
        ),
        timeout=5,
    )
    waiting = next(m for m in harness.bot_messages() if m.versions[-1].content.startswith("⏳"))
    await harness.discord.click_button(waiting, button(waiting, "answer:stop:"), harness.bob)
    stopped = await harness.answer_to(second)
    assert stopped.versions[-1].content == "Stopped by bob."
    answered = await harness.answer_to(first)
    assert stopped.versions[-1].mono < answered.versions[-1].mono  # it did not wait its turn
    assert len(harness.chat_requests()) == 1
    await harness.answer_to(await harness.mention("third question"))
    history = harness.sent_history()
    assert "bob: second question" not in history


async def test_stop_as_its_turn_comes_stores_nothing(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Hold the second question just after it is stored, before its answer is: that is where
    # a Stop once left a question behind without an answer.
    stored, release = asyncio.Event(), asyncio.Event()
    append_turn = ConversationStore.append_turn

    async def held_append_turn(
        store: ConversationStore, conversation_id: int, turn: NewTurn
    ) -> int:
        turn_id = await append_turn(store, conversation_id, turn)
        if turn.content == "bob: second question":
            stored.set()
            await release.wait()
        return turn_id

    monkeypatch.setattr(ConversationStore, "append_turn", held_append_turn)
    harness.api.script(Reply(text="One.", chunk_interval=0.3), Reply(text="never asked"))
    first = await harness.mention("first question")
    await streaming_answer(harness, first)
    second = await harness.mention("second question", author=harness.bob)
    await harness.answer_to(first)
    await asyncio.wait_for(stored.wait(), 10)
    waiting = next(m for m in harness.bot_messages() if m.versions[-1].content.startswith("⏳"))
    press = await harness.discord.click_button(
        waiting, button(waiting, "answer:stop:"), harness.bob
    )
    await harness.discord.wait_for(lambda: press.acknowledged, timeout=5)
    release.set()

    stopped = await harness.answer_to(second)
    assert stopped.versions[-1].content == "Stopped by bob."
    await harness.answer_to(await harness.mention("third question"))
    history = harness.sent_history()
    assert history[1:] == ["alice: first question", "One.", "alice: third question"]


async def test_an_empty_answer_gets_a_sentence(harness: Harness) -> None:
    harness.api.script(Reply(text=""))
    answer = await harness.answer_to(await harness.mention("say nothing"))
    assert answer.versions[-1].content == "⚠️ The model returned an empty answer; please try again."


async def test_a_channel_where_the_bot_cannot_write_is_explained_in_the_log(
    tmp_path: Path, chat_api: str, caplog: pytest.LogCaptureFixture
) -> None:
    reading_only = Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY
    config = FakeDiscordConfig(bot_permissions=reading_only, everyone_permissions=reading_only)
    async with running_harness(sqlite_url(tmp_path), config=config, chat_api=chat_api) as harness:
        await harness.start_bot()
        await harness.mention("hello?")
        await harness.discord.wait_for(
            lambda: "missing the permission(s) Send Messages" in caplog.text, timeout=5
        )
        assert f"Asked in #general ({harness.general.id})" in caplog.text
        assert "hello?" not in caplog.text  # the question is no business of the log
        assert harness.chat_requests() == []
        assert harness.bot_messages() == []


async def test_answers_that_outlive_the_interaction_token(tmp_path: Path, chat_api: str) -> None:
    """A public answer goes on as channel messages; a private one ends with a notice."""
    config = FakeDiscordConfig(interaction_token_lifetime=2.0)
    limits = DiscordLimits(token_lifetime=2.0, token_margin=0.8)
    async with running_harness(
        sqlite_url(tmp_path), config=config, limits=limits, chat_api=chat_api
    ) as harness:
        await harness.start_bot()
        text = "word " * 60
        harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05))
        public = await harness.discord.invoke_command("ask", {"prompt": "long, public"})
        await harness.discord.wait_for(
            lambda: (
                public.original is not None and public.original.versions[-1].content == text.strip()
            ),
            timeout=10,
        )
        assert public.errors == []  # nothing was sent with the dead token

        harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05))
        private = await harness.discord.invoke_command(
            "ask", {"prompt": "long, private", "private": True}
        )
        await harness.discord.wait_for(
            lambda: (
                private.original is not None
                and "15 minutes" in private.original.versions[-1].content
            ),
            timeout=10,
        )
        assert private.errors == []


async def test_a_token_refused_early_moves_a_public_answer_to_channel_messages(
    harness: Harness,
) -> None:
    """Discord may refuse the token before its 15 minutes (a skewed clock): the end of the
    answer still arrives; a private answer just stops."""
    text = "word " * 60
    harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05))
    public = await harness.discord.invoke_command("ask", {"prompt": "long, public"})
    await harness.discord.wait_for(
        lambda: public.original is not None and "word" in public.original.latest.content,
        timeout=10,
    )
    public.token_lifetime = 0  # from now on Discord answers 401, Invalid Webhook Token
    await harness.discord.wait_for(
        lambda: public.original is not None and public.original.latest.content == text.strip(),
        timeout=10,
    )
    assert any(code == 50027 for _, code in public.errors)
    assert public.original is not None
    assert "answer:regenerate:" in str(public.original.latest.components)

    harness.api.script(Reply(text=text, chunk_size=5, chunk_interval=0.05))
    private = await harness.discord.invoke_command(
        "ask", {"prompt": "long, private", "private": True}
    )
    await harness.discord.wait_for(
        lambda: private.original is not None and "word" in private.original.latest.content,
        timeout=10,
    )
    private.token_lifetime = 0
    request = harness.chat_requests()[-1]
    await asyncio.wait_for(request.disconnected.wait(), 10)  # stopped, not paid to the end
    await harness.answer_to(await harness.mention("still here?"))  # and the bot goes on


async def test_only_the_newest_answer_keeps_its_regenerate_button(harness: Harness) -> None:
    first = await harness.answer_to(await harness.mention("one"))
    assert any(cid.startswith("answer:regenerate:") for cid in custom_ids(first))
    second = await harness.answer_to(await harness.mention("two"))
    assert any(cid.startswith("answer:regenerate:") for cid in custom_ids(second))
    # A routine write: it waits its turn in the channel's 5 writes per 5 s.
    await harness.discord.wait_for(lambda: custom_ids(first) == [], timeout=10)
    assert harness.discord.rate_limited_count == 0


async def test_regenerate_shows_the_model_the_questions_image_again(harness: Harness) -> None:
    png = tiny_png(5)
    question = await harness.discord.post_message(
        harness.general,
        harness.alice,
        "what is this?",
        mentions=[harness.discord.bot_user],
        attachments=[UploadFile("dot.png", png, "image/png")],
    )
    first = await harness.answer_to(question)
    await harness.discord.click_button(first, button(first, "answer:regenerate:"), harness.alice)
    await harness.discord.wait_for(lambda: len(harness.chat_requests()) == 2, timeout=10)
    for request in harness.chat_requests():
        parts = chat_messages(request.json)[-1]["content"]
        assert parts[0]["text"] == "alice: what is this?\n[attached image: dot.png]"
        url = parts[1]["image_url"]["url"]
        assert base64.b64decode(url.split(",", 1)[1]) == png

"""/config end to end: server admins shape the bot from Discord, and every request follows."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from bot.config import DEFAULT_SYSTEM_PROMPT
from bot.db.config_store import ConfigStore
from cogs.config import ADMINS_ONLY, NEEDS_INTENT
from tests.fakes.api import Reply
from tests.fakes.discord import FakeChannel, FakeUser, MessageRecord, Perm
from tests.harness import Harness, custom_ids, running_harness, sqlite_url


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot()
        yield harness


@pytest.fixture
def admin(harness: Harness) -> FakeUser:
    return harness.add_admin()


async def configure(
    harness: Harness,
    admin: FakeUser,
    action: str,
    options: dict[str, Any] | None = None,
    channel: FakeChannel | None = None,
) -> str:
    """Run `/config <action>` as `admin` and return what they were told."""
    interaction = await harness.discord.invoke_command(
        f"config {action}", options or {}, channel=channel or harness.general, user=admin
    )
    return await harness.told(interaction)


def system_prompt(harness: Harness, index: int = -1) -> str:
    return harness.sent_history(index)[0]


async def logged_lines(harness: Harness, admin: FakeUser) -> list[str]:
    interaction = await harness.discord.invoke_command(
        "config log", {}, channel=harness.general, user=admin
    )
    await harness.discord.wait_for(
        lambda: (
            interaction.original is not None
            and (interaction.original.versions[-1].embeds or interaction.original.content)
        ),
        timeout=5,
    )
    assert interaction.original is not None
    embeds = interaction.original.versions[-1].embeds
    return str(embeds[0]["description"]).splitlines() if embeds else []


async def test_settings_resolve_channel_then_server_then_default(
    harness: Harness, admin: FakeUser
) -> None:
    first_run = await configure(harness, admin, "show")
    assert first_run.startswith("Nothing is set for this server yet")
    assert "`system_prompt`" in first_run and "`reply_mode`" in first_run
    assert "`roles`" in first_run

    told = await configure(
        harness, admin, "set", {"setting": "system_prompt", "value": "Speak like a pirate."}
    )
    assert told == (
        f'✅ `system_prompt` for <#{harness.general.id}>: not set → "Speak like a pirate."'
    )
    await harness.answer_to(await harness.mention("Hello"))
    assert system_prompt(harness) == "Speak like a pirate."
    await harness.answer_to(await harness.mention("Hello", channel=harness.random))
    assert system_prompt(harness) == DEFAULT_SYSTEM_PROMPT

    await configure(
        harness,
        admin,
        "set",
        {"setting": "system_prompt", "value": "Answer in French.", "scope": "server"},
    )
    await harness.answer_to(await harness.mention("Hello again", channel=harness.random))
    assert system_prompt(harness) == "Answer in French."
    await harness.answer_to(await harness.mention("Hello again"))
    assert system_prompt(harness) == "Speak like a pirate."

    shown = await configure(harness, admin, "show")
    assert '`system_prompt`: "Speak like a pirate." (set for this channel)' in shown
    assert "`model`: gpt-4o-mini (the bot's default)" in shown
    assert "Nothing is set" not in shown
    shown = await configure(harness, admin, "show", channel=harness.random)
    assert '`system_prompt`: "Answer in French." (set for the server)' in shown

    told = await configure(harness, admin, "reset", {"setting": "system_prompt"})
    assert told.startswith(f"↩️ `system_prompt` for <#{harness.general.id}>: ")
    assert told.endswith('Here it is now "Answer in French." (set for the server).')
    await harness.answer_to(await harness.mention("And now?"))
    assert system_prompt(harness) == "Answer in French."

    lines = await logged_lines(harness, admin)
    assert len(lines) == 3
    assert f"<@{admin.id}> `system_prompt` for <#{harness.general.id}>: " in lines[0]
    assert lines[0].endswith("→ not set")
    assert 'for the server: not set → "Answer in French."' in lines[1]


async def test_model_temperature_and_length_reach_the_api(
    harness: Harness, admin: FakeUser
) -> None:
    for setting, value in (("model", "gpt-4o"), ("temperature", "0.3")):
        assert (await configure(harness, admin, "set", {"setting": setting, "value": value}))[
            0
        ] == ("✅")
    await configure(
        harness,
        admin,
        "set",
        {"setting": "max_answer_tokens", "value": "500", "scope": "server"},
    )
    await harness.answer_to(await harness.mention("Hello"))
    request = harness.api.requests_to("/chat/completions")[-1].json
    assert (request["model"], request["temperature"], request["max_tokens"]) == (
        "gpt-4o",
        0.3,
        500,
    )
    # The model picked for one question still wins.
    asked = await harness.discord.invoke_command("ask", {"prompt": "hi", "model": "gpt-4.1"})
    await harness.api.wait_for_requests(2, within=10)
    assert harness.api.requests_to("/chat/completions")[-1].json["model"] == "gpt-4.1"
    await harness.told(asked)

    await configure(harness, admin, "set", {"setting": "image_model", "value": "dall-e-3"})
    await harness.discord.invoke_command("image", {"prompt": "a red boat"})
    await harness.api.wait_for_requests(3, within=10)
    assert harness.api.requests_to("/images/generations")[-1].json["model"] == "dall-e-3"


async def test_reply_mode_all_answers_every_message_and_off_answers_none(
    harness: Harness, admin: FakeUser
) -> None:
    await configure(harness, admin, "set", {"setting": "reply_mode", "value": "all"})
    plain = await harness.discord.post_message(harness.general, harness.alice, "Any news?")
    await harness.answer_to(plain)
    # Elsewhere a message without a mention is still not for the bot.
    await harness.discord.post_message(harness.random, harness.alice, "Just chatting")

    await configure(harness, admin, "set", {"setting": "reply_mode", "value": "off"})
    await harness.mention("Are you there?")
    await harness.discord.post_message(harness.general, harness.alice, "Anyone?")
    asked = await harness.discord.invoke_command("ask", {"prompt": "hi"})
    assert await harness.told(asked) == "⚠️ The bot is off in this channel."
    # /config still works where the bot is off.
    assert "`reply_mode`: off (set for this channel)" in await configure(harness, admin, "show")
    # A question elsewhere is answered after those messages were handled.
    await harness.answer_to(await harness.mention("Hello", channel=harness.random))
    assert len(harness.api.requests_to("/chat/completions")) == 2
    answered = {(m.reference or {}).get("message_id") for m in harness.bot_messages()}
    assert answered == {str(plain.id)}


async def test_reply_mode_thread_opens_a_thread_for_each_mention(
    harness: Harness, admin: FakeUser
) -> None:
    await configure(harness, admin, "set", {"setting": "reply_mode", "value": "thread"})
    harness.api.script(Reply(text="Let us see."))
    question = await harness.mention("How do I bake bread?")

    def thread() -> FakeChannel | None:
        return next((c for c in harness.discord.channels.values() if c.is_thread), None)

    opened = await harness.discord.wait_for(thread, timeout=5)
    assert opened is not None and opened.parent_id == harness.general.id
    assert opened.name == "How do I bake bread?"
    await harness.discord.wait_for(
        lambda: any("regenerate" in str(custom_ids(m)) for m in harness.bot_messages(opened)),
        timeout=10,
    )
    assert harness.bot_messages(opened)[0].content == "Let us see."
    assert "How do I bake bread?" in harness.sent_history()[-1]
    assert not [
        m
        for m in harness.bot_messages()
        if (m.reference or {}).get("message_id") == str(question.id)
    ]
    # The thread goes on without mentions, as a /chat thread does.
    await harness.answer_to(await harness.discord.post_message(opened, harness.alice, "Thanks!"))
    assert harness.sent_history()[-3:] == [
        "alice: How do I bake bread?",
        "Let us see.",
        "alice: Thanks!",
    ]


async def test_personal_history_keeps_people_apart(harness: Harness, admin: FakeUser) -> None:
    await configure(harness, admin, "set", {"setting": "history", "value": "personal"})
    await harness.answer_to(await harness.mention("My name is Alice."))
    await harness.answer_to(await harness.mention("What is my name?", author=harness.bob))
    assert not any("Alice" in text for text in harness.sent_history())
    await harness.answer_to(await harness.mention("And mine?"))
    assert "alice: My name is Alice." in harness.sent_history()

    reset = await harness.discord.invoke_command("reset", channel=harness.general)
    assert await harness.told(reset) == "🧹 Forgot your conversation here (4 messages)."
    await harness.answer_to(await harness.mention("Still me?", author=harness.bob))
    assert "bob: What is my name?" in harness.sent_history()


async def test_only_people_who_manage_the_server_change_settings(
    harness: Harness, admin: FakeUser
) -> None:
    (config,) = [c for c in harness.discord.registered_commands() if c["name"] == "config"]
    assert config["default_member_permissions"] == str(Perm.MANAGE_GUILD)
    assert config["contexts"] == [0]
    # Discord hides /config from others, but an admin may override that: the bot checks too.
    for action, options in (
        ("set", {"setting": "model", "value": "gpt-4o"}),
        ("reset", {"setting": "model"}),
        ("show", {}),
    ):
        refused = await harness.discord.invoke_command(
            f"config {action}", options, user=harness.alice
        )
        assert await harness.told(refused) == f"⚠️ {ADMINS_ONLY}"
    assert await logged_lines(harness, admin) == []


async def test_invalid_values_are_refused_and_nothing_is_stored(
    harness: Harness, admin: FakeUser
) -> None:
    refusals = {
        ("temperature", "5"): "The temperature is a number from 0 to 2, not '5'.",
        ("model", "gpt-3"): "'gpt-3' is not one of the models here; pick one of ",
        ("roles", "@Nobody"): "This server has no role named '@Nobody'",
        ("max_answer_tokens", "100000"): "max_answer_tokens is a whole number from 1 to 16384",
        ("system_prompt", "x" * 4001): "A system prompt can be up to 4000 characters",
    }
    for (setting, value), sentence in refusals.items():
        told = await configure(harness, admin, "set", {"setting": setting, "value": value})
        assert told.startswith(f"⚠️ {sentence}"), told
    assert await logged_lines(harness, admin) == []
    assert (await configure(harness, admin, "show")).startswith("Nothing is set")


async def test_roles_limit_who_may_use_the_bot(harness: Harness, admin: FakeUser) -> None:
    harness.api.script(Reply(text="Hi Alice."))
    before = await harness.mention("Hi!")
    answer = await harness.answer_to(before)
    members = harness.discord.add_role(harness.guild, "Members")
    carol = harness.discord.add_user("carol")
    harness.discord.add_member(harness.guild, carol, roles=[members])
    told = await configure(
        harness, admin, "set", {"setting": "roles", "value": f"<@&{members.id}>"}
    )
    assert told.endswith(f"not set → <@&{members.id}>")
    sentence = f"⚠️ Only members with one of the roles <@&{members.id}> can use the bot here."

    asked = await harness.discord.invoke_command("ask", {"prompt": "hi"})
    assert await harness.told(asked) == sentence
    mention = await harness.mention("Hello?")
    refusal = await harness.discord.wait_for(
        lambda: next(
            (
                m
                for m in harness.bot_messages()
                if (m.reference or {}).get("message_id") == str(mention.id)
            ),
            None,
        ),
        timeout=5,
    )
    assert refusal is not None and refusal.content == sentence
    regenerate = next(c for c in custom_ids(answer) if c.startswith("answer:regenerate:"))
    pressed = await harness.discord.click_button(answer, regenerate, harness.alice)
    assert await harness.told(pressed) == sentence
    assert len(harness.api.requests_to("/chat/completions")) == 1
    # A member with the role, and an admin, may.
    await harness.answer_to(await harness.mention("Hello!", author=carol, channel=harness.random))
    await harness.answer_to(await harness.mention("Hello!", author=admin, channel=harness.random))
    assert len(harness.api.requests_to("/chat/completions")) == 3


async def test_a_long_system_prompt_through_the_editor(harness: Harness, admin: FakeUser) -> None:
    opening = await harness.discord.invoke_command(
        "config set", {"setting": "system_prompt", "scope": "server"}, user=admin
    )
    await harness.discord.wait_for(lambda: opening.modal is not None, timeout=5)
    modal = opening.modal
    assert modal is not None and modal["title"] == "System prompt for the server"
    (text_input,) = [row["components"][0] for row in modal["components"]]
    assert text_input["value"] == DEFAULT_SYSTEM_PROMPT and text_input["max_length"] == 4000

    long_prompt = "You are the server's librarian. " * 120  # 3840 characters
    submitted = await harness.discord.submit_modal(opening, {text_input["custom_id"]: long_prompt})
    assert (await harness.told(submitted)).startswith("✅ `system_prompt` for the server: ")
    await harness.answer_to(await harness.mention("Recommend a book", channel=harness.random))
    assert system_prompt(harness) == long_prompt.strip()


async def test_all_needs_the_message_content_intent_and_says_so(
    tmp_path: Path,
) -> None:
    async with running_harness(sqlite_url(tmp_path)) as harness:
        await harness.start_bot(message_content_intent=False)
        admin = harness.add_admin()
        told = await configure(harness, admin, "set", {"setting": "reply_mode", "value": "all"})
        assert NEEDS_INTENT in told
        assert NEEDS_INTENT in await configure(harness, admin, "show")


def rows(harness: Harness, query: str, *parameters: int) -> list[tuple[Any, ...]]:
    """Rows of the bot's SQLite database, read as they are now."""
    path = harness.database_url.removeprefix("sqlite+aiosqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as database:
        return database.execute(query, parameters).fetchall()


async def test_settings_go_with_their_channel_and_server_and_stay_after_reset(
    harness: Harness, admin: FakeUser
) -> None:
    await configure(harness, admin, "set", {"setting": "reply_mode", "value": "all"})
    await configure(
        harness, admin, "set", {"setting": "temperature", "value": "1.5"}, channel=harness.random
    )
    reset = await harness.discord.invoke_command("reset", user=harness.moderator)
    await harness.told(reset)
    assert "`reply_mode`: all (set for this channel)" in await configure(harness, admin, "show")

    guild, general, random = harness.guild.id, harness.general.id, harness.random.id
    settings_of_channels = "SELECT channel_id FROM channel_settings WHERE guild_id = ?"
    assert sorted(rows(harness, settings_of_channels, guild)) == sorted([(general,), (random,)])

    await harness.discord.delete_channel(harness.random)
    await harness.discord.wait_for(
        lambda: rows(harness, settings_of_channels, guild) == [(general,)], timeout=5
    )
    assert rows(harness, "SELECT id FROM conversations WHERE channel_id = ?", random) == []

    await harness.discord.remove_bot(harness.guild)
    await harness.discord.wait_for(
        lambda: rows(harness, "SELECT * FROM guild_settings WHERE guild_id = ?", guild) == [],
        timeout=5,
    )
    for table in ("channel_settings", "config_changes", "conversations"):
        assert rows(harness, f"SELECT * FROM {table} WHERE guild_id = ?", guild) == []


async def test_values_are_offered_for_the_setting_chosen(harness: Harness, admin: FakeUser) -> None:
    async def offered(setting: str, typed: str) -> list[str]:
        record = await harness.discord.invoke_autocomplete(
            "config set", {"setting": setting, "value": typed}, focused="value", user=admin
        )
        await harness.discord.wait_for(lambda: record.autocomplete_choices is not None)
        return [choice["value"] for choice in record.autocomplete_choices or []]

    assert await offered("model", "4o") == ["gpt-4o-mini", "gpt-4o"]
    assert await offered("image_model", "dall") == ["dall-e-3", "dall-e-2"]
    assert await offered("reply_mode", "") == ["mention", "all", "thread", "off"]
    assert await offered("temperature", "") == []


async def test_a_failing_database_is_not_told_to_chatter(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message is checked against the channel's reply mode: when that check fails, only
    those who asked the bot hear of it."""

    async def unreachable(_store: ConfigStore, _guild_id: int) -> str | None:
        raise OperationalError("SELECT version", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(ConfigStore, "version", unreachable)
    chatter = await harness.discord.post_message(harness.general, harness.alice, "just chatting")
    question = await harness.mention("Hello?")

    def replies_to(message: MessageRecord) -> list[MessageRecord]:
        return [
            m
            for m in harness.bot_messages()
            if (m.reference or {}).get("message_id") == str(message.id)
        ]

    await harness.discord.wait_for(lambda: replies_to(question), timeout=5)
    assert replies_to(question)[0].content.startswith("⚠️")
    assert replies_to(chatter) == []

"""The fake Discord against a plain, real ``discord.ext.commands.Bot`` over real sockets."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    ChannelType,
    FakeChannel,
    FakeDiscord,
    FakeDiscordConfig,
    FakeGuild,
    FakeUser,
    Intents,
    InteractionRecord,
    MessageFlag,
    Perm,
    UploadFile,
)

ROOT = Path(__file__).resolve().parents[1]
Setup = Callable[[commands.Bot], None]
BotInteraction = discord.Interaction[commands.Bot]


@dataclass
class Env:
    fake: FakeDiscord
    bot: commands.Bot
    task: asyncio.Task[None]
    guild: FakeGuild
    general: FakeChannel
    alice: FakeUser
    bob: FakeUser
    moderator: FakeUser
    other_bot: FakeUser
    received: list[discord.Message] = field(default_factory=list)

    async def expect(self, event: str, action: Awaitable[Any], check: Any = None) -> Any:
        """Starts waiting for a bot-side ``event``, runs ``action``, returns the event."""
        waiter = asyncio.ensure_future(self.bot.wait_for(event, check=check, timeout=5))
        await asyncio.sleep(0)  # let the waiter register its listener
        await action
        return await waiter

    def channel(self) -> discord.TextChannel:
        channel = self.bot.get_channel(self.general.id)
        assert isinstance(channel, discord.TextChannel)
        return channel


EnvFactory = Callable[..., Awaitable[Env]]


@pytest.fixture
async def make_env() -> AsyncIterator[EnvFactory]:
    envs: list[Env] = []

    async def make(
        config: FakeDiscordConfig | None = None,
        *,
        message_content: bool = True,
        setup: Setup | None = None,
    ) -> Env:
        fake = FakeDiscord(config)
        await fake.start()
        guild = fake.add_guild("Test Guild", channels=["general", "random"])
        alice = fake.add_user("alice")
        bob = fake.add_user("bob")
        moderator = fake.add_user("mod")
        other_bot = fake.add_user("otherbot", bot=True)
        for user in (alice, bob, other_bot):
            fake.add_member(guild, user)
        fake.add_member(guild, moderator, permissions=Perm.MANAGE_MESSAGES)
        fake.point_client_here()

        intents = discord.Intents.default()
        intents.message_content = message_content
        bot = commands.Bot(command_prefix="!", intents=intents, guild_ready_timeout=0.05)
        if setup is not None:
            setup(bot)
        task = asyncio.create_task(bot.start(fake.token))
        env = Env(
            fake,
            bot,
            task,
            guild,
            fake.channels[guild.channel_ids[0]],
            alice,
            bob,
            moderator,
            other_bot,
        )
        envs.append(env)

        async def record(message: discord.Message) -> None:
            env.received.append(message)

        bot.add_listener(record, "on_message")
        await asyncio.wait_for(bot.wait_until_ready(), 10)
        return env

    yield make

    for env in envs:
        await close_env(env)


async def close_env(env: Env) -> None:
    """Closes the bot, checks that it hung up every socket, stops the fake."""
    await env.bot.close()
    await asyncio.wait_for(env.task, 10)
    fake = env.fake
    await fake.wait_for(lambda: not fake.connections, what="gateway sockets closed")
    await fake.stop()
    assert env.bot.is_closed()


# ---------------------------------------------------------------------------------------------
# Login, gateway, messages
# ---------------------------------------------------------------------------------------------


async def test_login_ready_and_cache(make_env: EnvFactory) -> None:
    env = await make_env()
    fake, bot = env.fake, env.bot
    assert bot.user is not None and bot.user.id == fake.bot_user.id
    assert bot.application_id == fake.application_id
    guild = bot.get_guild(env.guild.id)
    assert guild is not None
    assert sorted(c.name for c in guild.text_channels) == ["general", "random"]
    assert guild.member_count == len(env.guild.members)
    # Without the members intent only the bot's own member comes with GUILD_CREATE.
    assert guild.me is not None and guild.get_member(env.alice.id) is None
    mod = await guild.fetch_member(env.moderator.id)
    assert mod.guild_permissions.manage_messages
    alice = await guild.fetch_member(env.alice.id)
    assert not alice.guild_permissions.manage_messages
    assert fake.identify_count == 1
    assert fake.identify_payloads[0]["intents"] & Intents.MESSAGE_CONTENT
    assert bot.latency < 1  # the fake acknowledged the first heartbeat
    assert fake.requests_for("GET /users/@me")[0].headers["Authorization"] == f"Bot {fake.token}"

    # AutoShardedClient's route, the exact JSON content type, and a bot route without a token.
    data = await bot.http.request(discord.http.Route("GET", "/gateway/bot"))
    assert data["url"] == fake.gateway_url and data["shards"] == 1
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.api_base}/users/@me") as resp,
    ):
        assert resp.status == 401
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["message"] == "401: Unauthorized"


async def test_user_message_reaches_on_message(make_env: EnvFactory) -> None:
    env = await make_env()
    message = await env.expect(
        "message",
        env.fake.post_message(env.general, env.alice, "hello bot"),
        check=lambda m: m.author.id == env.alice.id,
    )
    assert message.content == "hello bot"
    assert message.channel.id == env.general.id
    assert isinstance(message.author, discord.Member)


async def test_content_blanked_without_message_content_intent(make_env: EnvFactory) -> None:
    env = await make_env(message_content=False)
    fake = env.fake

    def from_alice(m: discord.Message) -> bool:
        return m.author.id == env.alice.id

    plain = await env.expect(
        "message",
        fake.post_message(
            env.general, env.alice, "secret words", attachments=[UploadFile("a.txt", b"x")]
        ),
        from_alice,
    )
    assert plain.content == "" and plain.attachments == []

    mention = await env.expect(
        "message",
        fake.post_message(env.general, env.alice, "hi there", mentions=[fake.bot_user]),
        from_alice,
    )
    assert mention.content == f"<@{fake.bot_user.id}> hi there"
    assert env.bot.user in mention.mentions

    dm = await env.expect(
        "message", fake.post_message(fake.dm_channel(env.alice), env.alice, "psst"), from_alice
    )
    assert dm.content == "psst" and dm.guild is None

    # A reply to the bot's message pings the bot, so its content arrives too.
    own = await env.channel().send("I am the bot")
    reply = await env.expect(
        "message",
        fake.post_message(env.general, env.alice, "answer to you", reference=own.id),
        from_alice,
    )
    assert reply.content == "answer to you"
    assert reply.reference is not None and reply.reference.message_id == own.id


async def test_send_edit_delete_keeps_version_history(make_env: EnvFactory) -> None:
    env = await make_env()
    fake = env.fake
    sent = await env.channel().send("first")
    await sent.edit(content="second")
    await sent.edit(content="third", embed=discord.Embed(title="t"))
    record = fake.message(sent.id)
    assert record.contents == ["first", "second", "third"]
    assert record.versions[-1].embeds[0]["title"] == "t"
    assert [m.id for m in fake.messages_in(env.general)] == [sent.id]
    assert all(a.mono <= b.mono for a, b in zip(record.versions, record.versions[1:], strict=False))

    await sent.delete()
    assert record.deleted and record.deleted_wall is not None
    assert fake.messages_in(env.general) == []
    assert fake.messages_in(env.general, include_deleted=True) == [record]

    # A moderator deletes a user's message; the bot sees the delete.
    posted = await fake.post_message(env.general, env.alice, "spam")
    deleted = await env.expect(
        "raw_message_delete",
        fake.delete_message(env.general, posted.id, by=env.moderator),
    )
    assert deleted.message_id == posted.id
    with pytest.raises(PermissionError):
        other = await fake.post_message(env.general, env.alice, "mine")
        await fake.delete_message(env.general, other.id, by=env.bob)


async def test_discord_validation_errors(make_env: EnvFactory) -> None:
    env = await make_env()
    channel = env.channel()
    with pytest.raises(discord.HTTPException) as too_long:
        await channel.send("x" * 2001)
    assert too_long.value.status == 400 and too_long.value.code == 50035
    assert "content" in too_long.value.text
    await channel.send("x" * 2000)

    with pytest.raises(discord.HTTPException) as empty:
        await channel.send(" ")
    assert empty.value.code == 50006

    with pytest.raises(discord.NotFound) as unknown_channel:
        await env.bot.http.send_message(123, params=discord.http.handle_message_parameters("hi"))
    assert unknown_channel.value.code == 10003
    with pytest.raises(discord.NotFound) as unknown_message:
        await channel.fetch_message(123)
    assert unknown_message.value.code == 10008

    user_message = await env.fake.post_message(env.general, env.alice, "mine")
    partial = channel.get_partial_message(user_message.id)
    with pytest.raises(discord.Forbidden) as not_yours:
        await partial.edit(content="changed")
    assert not_yours.value.code == 50005


async def test_reply_respects_allowed_mentions(make_env: EnvFactory) -> None:
    env = await make_env()
    fake = env.fake
    question = await fake.post_message(env.general, env.alice, "ping me?")
    message = await env.channel().fetch_message(question.id)
    quiet = await message.reply(
        f"<@{env.bob.id}> @everyone hello", allowed_mentions=discord.AllowedMentions.none()
    )
    loud = await message.reply(f"<@{env.bob.id}> hello")
    assert fake.message(quiet.id).pinged_user_ids == []
    assert fake.message(quiet.id).allowed_mentions is not None
    assert not fake.message(quiet.id).mention_everyone
    assert set(fake.message(loud.id).pinged_user_ids) == {env.bob.id, env.alice.id}
    assert fake.message(loud.id).reference is not None


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


async def test_bot_upload_is_stored_byte_for_byte(make_env: EnvFactory) -> None:
    env = await make_env()
    payload = bytes(range(256)) * 40 + b"\r\n--boundary\r\n\x00end"
    sent = await env.channel().send(
        "here", file=discord.File(io.BytesIO(payload), filename="data.bin")
    )
    record = env.fake.message(sent.id)
    assert [f.data for f in record.attachment_files] == [payload]
    assert record.versions[0].attachment_names == ["data.bin"]
    upload = env.fake.requests_for("POST /channels/{channel_id}/messages")[-1]
    assert upload.files[0].data == payload
    assert upload.payload["attachments"] == [{"id": 0, "filename": "data.bin"}]
    # The CDN serves it back to the client.
    assert sent.attachments[0].url.startswith(env.fake.base_url)
    assert await sent.attachments[0].read() == payload

    # Editing with a new file while keeping the old one.
    edited = await sent.edit(
        attachments=[sent.attachments[0], discord.File(io.BytesIO(b"two"), filename="two.txt")]
    )
    assert [a.filename for a in edited.attachments] == ["data.bin", "two.txt"]
    assert [f.data for f in record.attachment_files] == [payload, b"two"]


# ---------------------------------------------------------------------------------------------
# Interactions
# ---------------------------------------------------------------------------------------------


def _commands_setup(
    results: dict[str, asyncio.Future[Any]],
) -> Setup:
    def setup(bot: commands.Bot) -> None:
        @app_commands.command(name="ask", description="Ask something")
        @app_commands.describe(prompt="What to ask")
        async def ask(interaction: BotInteraction, prompt: str, private: bool = False) -> None:
            await interaction.response.defer(thinking=True)
            await interaction.edit_original_response(content=f"thinking about {prompt}")
            await interaction.edit_original_response(content=f"answer to {prompt}")
            await interaction.followup.send("only for you", ephemeral=True)

        @app_commands.command(name="quick", description="Defer then follow up")
        async def quick(interaction: BotInteraction) -> None:
            await interaction.response.defer(ephemeral=True)
            await interaction.followup.send("done")

        @app_commands.command(name="look", description="Look at an image")
        async def look(interaction: BotInteraction, image: discord.Attachment) -> None:
            data = await image.read()
            results["look"].set_result((image.filename, image.content_type, data))
            await interaction.response.send_message(f"{len(data)} bytes")

        async def models(
            interaction: BotInteraction, current: str
        ) -> list[app_commands.Choice[str]]:
            names = ["gpt-4o", "gpt-4o-mini", "o3"]
            return [app_commands.Choice(name=n, value=n) for n in names if n.startswith(current)]

        @app_commands.command(name="pick", description="Pick a model")
        @app_commands.autocomplete(model=models)
        async def pick(interaction: BotInteraction, model: str) -> None:
            await interaction.response.send_message(model)

        config = app_commands.Group(name="config", description="Settings")

        @config.command(name="set", description="Set a value")
        async def config_set(
            interaction: BotInteraction,
            key: Literal["temperature", "model"],
            value: app_commands.Range[int, 0, 10],
        ) -> None:
            await interaction.response.send_message(f"{key}={value}", ephemeral=True)

        @app_commands.command(name="slow", description="Answers too late")
        async def slow(interaction: BotInteraction) -> None:
            await results["slow_gate"]
            try:
                await interaction.response.defer()
            except discord.HTTPException as exc:
                if not results["slow"].done():
                    results["slow"].set_result(exc)

        top_level: list[app_commands.Command[Any, ..., Any]] = [ask, quick, look, pick, slow]
        for command in top_level:
            bot.tree.add_command(command)
        bot.tree.add_command(config)

    return setup


async def _synced_env(
    make_env: EnvFactory, config: FakeDiscordConfig | None = None
) -> tuple[Env, dict[str, asyncio.Future[Any]]]:
    loop = asyncio.get_running_loop()
    results: dict[str, asyncio.Future[Any]] = {
        k: loop.create_future() for k in ("look", "slow", "slow_gate")
    }
    env = await make_env(config, setup=_commands_setup(results))
    names = {"ask", "quick", "look", "pick", "config", "slow"}
    synced = await env.bot.tree.sync()
    assert {c.name for c in synced} == names
    # The same commands as guild commands, which the fake prefers when invoked in that guild.
    guild = discord.Object(env.guild.id)
    env.bot.tree.copy_global_to(guild=guild)
    synced_guild = await env.bot.tree.sync(guild=guild)
    assert {c.name for c in synced_guild} == names
    assert {c.guild_id for c in synced_guild} == {env.guild.id}
    return env, results


async def test_slash_command_defer_edit_and_ephemeral_followup(make_env: EnvFactory) -> None:
    env, _ = await _synced_env(make_env)
    fake = env.fake
    stored = {c["name"]: c for c in fake.registered_commands(env.guild)}
    assert stored["ask"]["options"][0]["name"] == "prompt"
    assert stored["ask"]["application_id"] == str(fake.application_id)

    rec = await fake.invoke_command("ask", {"prompt": "life"}, channel=env.general, user=env.alice)
    await fake.wait_for(lambda: rec.followups, what="followup sent")
    assert rec.response_type == 5 and rec.ack_latency is not None and rec.ack_latency < 1
    assert rec.original is not None
    assert rec.original.versions[0].loading
    assert rec.original.contents == ["", "thinking about life", "answer to life"]
    assert not rec.original.flags & MessageFlag.LOADING
    followup = rec.followups[0]
    assert followup.content == "only for you" and followup.visible_to == env.alice.id
    public = fake.messages_in(env.general)
    assert rec.original in public and followup not in public
    assert followup in fake.messages_in(env.general, as_user=env.alice)
    assert followup not in fake.messages_in(env.general, as_user=env.bob)
    # Interaction routes carry no Authorization header; rate-limit headers are per token.
    webhook_calls = fake.requests_for(kind="webhook")
    assert webhook_calls and all("Authorization" not in r.headers for r in webhook_calls)

    # The first followup after a deferred response replaces the "thinking" message.
    quick = await fake.invoke_command("quick", channel=env.general, user=env.bob)
    await fake.wait_for(lambda: quick.followups, what="quick followup")
    assert quick.followups[0] is quick.original
    assert quick.original is not None and quick.original.content == "done"
    assert quick.original.visible_to == env.bob.id

    # A subcommand with typed options.
    sub = await fake.invoke_command(
        "config set", {"key": "temperature", "value": 7}, user=env.alice
    )
    await fake.wait_for(lambda: sub.original, what="config set answered")
    assert sub.original is not None and sub.original.content == "temperature=7"
    assert sub.data["options"][0]["options"][1] == {"name": "value", "type": 4, "value": 7}
    # Discord's client sends only a choice, and a number within the range.
    for values in ({"key": "colour", "value": 7}, {"key": "model", "value": 11}):
        with pytest.raises(ValueError):
            await fake.invoke_command("config set", values, user=env.alice)


async def test_attachment_option_is_read_byte_for_byte(make_env: EnvFactory) -> None:
    env, results = await _synced_env(make_env)
    image = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(200))
    rec = await env.fake.invoke_command(
        "look", attachments={"image": UploadFile("cat.png", image)}, user=env.alice
    )
    filename, content_type, data = await asyncio.wait_for(results["look"], 5)
    assert (filename, content_type, data) == ("cat.png", "image/png", image)
    assert rec.data["options"][0]["type"] == 11
    await env.fake.wait_for(lambda: rec.original, what="look answered")
    assert rec.original is not None and rec.original.content == f"{len(image)} bytes"


async def test_autocomplete_choices_are_recorded(make_env: EnvFactory) -> None:
    env, _ = await _synced_env(make_env)
    rec = await env.fake.invoke_autocomplete("pick", {}, focused="model", user=env.alice)
    await env.fake.wait_for(lambda: rec.autocomplete_choices is not None)
    assert [c["value"] for c in rec.autocomplete_choices or []] == ["gpt-4o", "gpt-4o-mini", "o3"]
    narrowed = await env.fake.invoke_autocomplete("pick", {"model": "gpt"}, focused="model")
    await env.fake.wait_for(lambda: narrowed.autocomplete_choices is not None)
    assert len(narrowed.autocomplete_choices or []) == 2


async def test_late_ack_and_interaction_errors(make_env: EnvFactory) -> None:
    env, results = await _synced_env(
        make_env,
        FakeDiscordConfig(
            interaction_ack_deadline=0.3, interaction_token_lifetime=1.0, interaction_window=0.2
        ),
    )
    fake = env.fake
    rec = await fake.invoke_command("slow", user=env.alice)
    await fake.wait_for(lambda: rec.did_not_respond, what="ack deadline passed")
    results["slow_gate"].set_result(None)
    error = await asyncio.wait_for(results["slow"], 5)
    assert isinstance(error, discord.NotFound) and error.code == 10062
    assert rec.rejected[0].error_code == 10062 and not rec.acknowledged

    # A second callback, a followup on an expired token, @original before any callback.
    ask = await fake.invoke_command("ask", {"prompt": "x"}, user=env.alice)
    await fake.wait_for(lambda: ask.followups)
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/interactions/{ask.id}/{ask.token}/callback"
        async with session.post(url, json={"type": 5}) as resp:
            assert resp.status == 400 and (await resp.json())["code"] == 40060
        gate = results["slow_gate"] = asyncio.get_running_loop().create_future()
        fresh = await fake.invoke_command("slow", user=env.alice)  # held until the gate opens
        original = (
            f"{fake.api_base}/webhooks/{fake.application_id}/{fresh.token}/messages/@original"
        )
        async with session.patch(original, json={"content": "x"}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10008
        gate.set_result(None)
        await fake.wait_for(lambda: ask.token_expired, what="token expired")
        followup = f"{fake.api_base}/webhooks/{fake.application_id}/{ask.token}?wait=1"
        async with session.post(followup, json={"content": "late"}) as resp:
            assert resp.status == 401 and (await resp.json())["code"] == 50027


async def test_permissions_follow_overwrites_and_bind_writes(make_env: EnvFactory) -> None:
    env = await make_env()
    fake, me = env.fake, env.fake.bot_user
    thread = fake.add_thread(env.general, "planning")
    # Denied to @everyone, so to the bot too, whatever its role grants; given back to alice.
    fake.set_overwrite(env.general, env.guild.everyone, deny=Perm.SEND_MESSAGES_IN_THREADS)
    fake.set_overwrite(env.general, env.alice, allow=Perm.MANAGE_THREADS)

    def cached() -> discord.Permissions:
        return env.channel().permissions_for(env.channel().guild.me)

    await fake.wait_for(lambda: not cached().send_messages_in_threads, what="CHANNEL_UPDATE")
    in_thread = fake.permissions_in(thread, me)
    assert not in_thread & Perm.SEND_MESSAGES_IN_THREADS
    assert not in_thread & Perm.ATTACH_FILES  # implied by sending, here in threads
    assert fake.permissions_in(env.general, me) == cached().value
    assert fake.permissions_in(env.general, me) & Perm.ATTACH_FILES

    rec = await fake.invoke_command("anything", channel=thread, user=env.alice)
    assert int(rec.payload["app_permissions"]) == in_thread
    assert int(rec.payload["member"]["permissions"]) & Perm.MANAGE_THREADS
    dm = await fake.invoke_command("anything", channel=fake.dm_channel(env.alice), user=env.alice)
    assert int(dm.payload["app_permissions"]) == Perm.IN_BOT_DM

    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bot {fake.token}"}
        post = f"{fake.api_base}/channels/{thread.id}/messages"
        async with session.post(post, json={"content": "hi"}, headers=headers) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == 50013
        # Interaction responses need no Send Messages; an upload needs Attach Files.
        callback = f"{fake.api_base}/interactions/{rec.id}/{rec.token}/callback"
        async with session.post(callback, json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 204
        form = aiohttp.FormData()
        form.add_field(
            "payload_json", json.dumps({"attachments": [{"id": 0, "filename": "a.txt"}]})
        )
        form.add_field("files[0]", b"text", filename="a.txt", content_type="text/plain")
        followup = f"{fake.api_base}/webhooks/{fake.application_id}/{rec.token}?wait=1"
        async with session.post(followup, data=form) as resp:
            assert resp.status == 403 and (await resp.json())["code"] == 50013
    assert rec.original is not None and rec.original.content == "hi"
    assert rec.followups == []


class PersistentView(discord.ui.View):
    def __init__(self, clicks: list[int]) -> None:
        super().__init__(timeout=None)
        self.clicks = clicks

    @discord.ui.button(label="Regenerate", custom_id="answer:regenerate")
    async def regenerate(self, interaction: BotInteraction, button: discord.ui.Button[Any]) -> None:
        self.clicks.append(interaction.user.id)
        await interaction.response.edit_message(content="regenerated", view=None)


async def test_button_click_reaches_persistent_view(make_env: EnvFactory) -> None:
    clicks: list[int] = []

    def setup(bot: commands.Bot) -> None:
        async def hook() -> None:
            bot.add_view(PersistentView(clicks))

        bot.setup_hook = hook  # type: ignore[method-assign]

    env = await make_env(setup=setup)
    sent_view = PersistentView([])
    sent = await env.channel().send("answer", view=sent_view)
    sent_view.stop()  # only the persistent view registered at startup is left
    record = env.fake.message(sent.id)
    assert record.components[0]["components"][0]["custom_id"] == "answer:regenerate"

    rec = await env.fake.click_button(sent.id, "answer:regenerate", env.bob)
    await env.fake.wait_for(lambda: rec.acknowledged, what="button acknowledged")
    assert clicks == [env.bob.id]
    assert rec.response_type == 7 and rec.payload["message"]["id"] == str(sent.id)
    assert record.contents == ["answer", "regenerated"] and record.components == []


class NameModal(discord.ui.Modal, title="Who are you?"):
    """The older layout: each text input in an action row, with its own label."""

    name: discord.ui.TextInput[NameModal] = discord.ui.TextInput(
        label="Your name", custom_id="name", default="anon", max_length=20
    )
    notes: discord.ui.TextInput[NameModal] = discord.ui.TextInput(
        label="Notes", custom_id="notes", style=discord.TextStyle.paragraph, required=False
    )

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message(f"{self.name.value}|{self.notes.value}")


class DrawModal(discord.ui.Modal, title="Draw"):
    """The newer layout: a label around the text input."""

    prompt: discord.ui.Label[DrawModal] = discord.ui.Label(
        text="Prompt",
        description="What to draw",
        component=discord.ui.TextInput(custom_id="prompt", min_length=3, max_length=50),
    )

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        text_input = self.prompt.component
        assert isinstance(text_input, discord.ui.TextInput)
        await interaction.response.edit_message(content=f"drawing {text_input.value}", view=None)


class DrawButton(discord.ui.View):
    @discord.ui.button(label="Draw", custom_id="draw:open")
    async def open(self, interaction: BotInteraction, button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_modal(DrawModal(custom_id="draw:modal"))


async def test_modals_are_submitted_and_parsed_by_discord_py(make_env: EnvFactory) -> None:
    seen: list[dict[str, Any]] = []

    def setup(bot: commands.Bot) -> None:
        @app_commands.command(name="whoami", description="Asks your name")
        async def whoami(interaction: BotInteraction) -> None:
            await interaction.response.send_modal(NameModal(custom_id="who:modal"))

        bot.tree.add_command(whoami)

        async def hook() -> None:
            bot.add_view(DrawButton(timeout=None))

        bot.setup_hook = hook  # type: ignore[method-assign]

        @bot.listen()
        async def on_interaction(interaction: BotInteraction) -> None:
            if interaction.type is discord.InteractionType.modal_submit:
                assert interaction.data is not None
                seen.append(dict(interaction.data))

    env = await make_env(setup=setup)
    fake = env.fake

    # A slash command opens a modal of action rows; the prefilled name is kept.
    who = await fake.invoke_command("whoami", user=env.alice)
    await fake.wait_for(lambda: who.modal, what="modal opened")
    assert who.response_type == 9 and who.modal is not None
    assert who.modal["custom_id"] == "who:modal" and who.modal["title"] == "Who are you?"
    with pytest.raises(ValueError, match="required"):
        await fake.submit_modal(who, {"name": ""})
    with pytest.raises(ValueError, match="0 to 20 characters, not 21"):
        await fake.submit_modal(who, {"name": "x" * 21})
    with pytest.raises(ValueError, match="no text input"):
        await fake.submit_modal(who, {"age": "3"})
    with pytest.raises(ValueError, match="only alice"):
        await fake.submit_modal(who, {"notes": "hi"}, user=env.bob)
    submit = await fake.submit_modal(who, {"notes": "likes cats"})
    await fake.wait_for(lambda: submit.original, what="modal submit answered")
    assert submit.original is not None and submit.original.content == "anon|likes cats"
    assert submit.type == 5 and submit.user is env.alice and submit.channel_id == env.general.id
    assert submit.data == {
        "custom_id": "who:modal",
        "components": [
            {
                "type": 1,
                "id": 1,
                "components": [{"type": 4, "id": 2, "custom_id": "name", "value": "anon"}],
            },
            {
                "type": 1,
                "id": 3,
                "components": [{"type": 4, "id": 4, "custom_id": "notes", "value": "likes cats"}],
            },
        ],
    }
    assert seen[0] == submit.data
    with pytest.raises(ValueError, match="already submitted"):
        await fake.submit_modal(who, {})

    # A button opens a modal with a label; submitting it updates the button's message.
    sent = await env.channel().send("pick", view=DrawButton(timeout=1))
    click = await fake.click_button(sent.id, "draw:open", env.bob)
    await fake.wait_for(lambda: click.modal, what="label modal opened")
    assert click.modal is not None
    assert click.modal["components"][0]["type"] == 18
    with pytest.raises(ValueError, match="3 to 50"):
        await fake.submit_modal(click, {"prompt": "ox"})
    drawn = await fake.submit_modal(click, {"prompt": "a red fox"})
    await fake.wait_for(lambda: drawn.acknowledged, what="label modal answered")
    assert drawn.response_type == 7 and drawn.payload["message"]["id"] == str(sent.id)
    assert fake.message(sent.id).content == "drawing a red fox"
    assert drawn.data["components"] == [
        {
            "type": 18,
            "id": 1,
            "component": {"type": 4, "id": 2, "custom_id": "prompt", "value": "a red fox"},
        }
    ]


async def test_modal_submission_keeps_component_ids_and_takes_no_modal() -> None:
    async with FakeDiscord() as fake, aiohttp.ClientSession() as session:
        guild = fake.add_guild()
        alice = fake.add_user("alice")
        fake.add_member(guild, alice)

        async def callback(rec: InteractionRecord, body: dict[str, Any]) -> tuple[int, Any]:
            url = f"{fake.api_base}/interactions/{rec.id}/{rec.token}/callback"
            async with session.post(url, json=body) as resp:
                return resp.status, await resp.json() if resp.status != 204 else None

        rec = await fake.invoke_command("anything", user=alice)
        modal = {
            "custom_id": "m",
            "title": "Ids",
            "components": [
                {"type": 1, "components": [_text_input("a", id=2)]},
                {"type": 18, "id": 7, "label": "B", "component": _text_input("b", label=None)},
            ],
        }
        assert await callback(rec, {"type": 9, "data": modal}) == (204, None)
        submit = await fake.submit_modal(rec, {"a": "x", "b": "y"})
        # The bot's own ids are kept; Discord numbers the rest, skipping ids in use.
        assert submit.data["components"] == [
            {
                "type": 1,
                "id": 1,
                "components": [{"type": 4, "id": 2, "custom_id": "a", "value": "x"}],
            },
            {
                "type": 18,
                "id": 7,
                "component": {"type": 4, "id": 3, "custom_id": "b", "value": "y"},
            },
        ]
        assert "message" not in submit.payload
        status, body = await callback(submit, {"type": 9, "data": modal})
        assert status == 400 and body["code"] == 50035
        assert await callback(submit, {"type": 4, "data": {"content": "thanks"}}) == (204, None)
        assert submit.original is not None and submit.original.content == "thanks"


def _text_input(custom_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": 4, "custom_id": custom_id, "style": 1, "label": "Text", **extra}


def _row(component: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": [component]}


@pytest.mark.parametrize(
    ("modal", "path", "code"),
    [
        ({"title": "T", "components": [_row(_text_input("a"))]}, "custom_id", "BASE_TYPE_REQUIRED"),
        (
            {"custom_id": "m", "title": "T" * 46, "components": [_row(_text_input("a"))]},
            "title",
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            {"custom_id": "m" * 101, "title": "T", "components": [_row(_text_input("a"))]},
            "custom_id",
            "BASE_TYPE_BAD_LENGTH",
        ),
        ({"custom_id": "m", "title": "T", "components": []}, "components", "BASE_TYPE_MIN_LENGTH"),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input(str(i))) for i in range(6)],
            },
            "components",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [
                    {"type": 1, "components": [_text_input("a"), _text_input("b")]},
                ],
            },
            "components.0.components",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"custom_id": "m", "title": "T", "components": [_row({"type": 2, "custom_id": "b"})]},
            "components.0.components.0.type",
            "UNION_TYPE_CHOICES",
        ),
        (
            {"custom_id": "m", "title": "T", "components": [_row(_text_input("a", label=None))]},
            "components.0.components.0.label",
            "BASE_TYPE_REQUIRED",
        ),
        (
            {"custom_id": "m", "title": "T", "components": [_row(_text_input("a", style=3))]},
            "components.0.components.0.style",
            "BASE_TYPE_CHOICES",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input("a", max_length=5, value="123456"))],
            },
            "components.0.components.0.value",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input("a", min_length=4001))],
            },
            "components.0.components.0.min_length",
            "NUMBER_TYPE_MAX",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input("a", max_length=0))],
            },
            "components.0.components.0.max_length",
            "NUMBER_TYPE_MIN",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input("a", placeholder="p" * 101))],
            },
            "components.0.components.0.placeholder",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [_row(_text_input("a")), _row(_text_input("a"))],
            },
            "components.1.components.0.custom_id",
            "COMPONENT_CUSTOM_ID_DUPLICATED",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [{"type": 18, "label": "L", "component": _text_input("a")}],
            },
            "components.0.component.label",
            "COMPONENT_INVALID_FIELD",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [
                    {
                        "type": 18,
                        "label": "L" * 46,
                        "component": _text_input("a", label=None),
                    }
                ],
            },
            "components.0.label",
            "BASE_TYPE_BAD_LENGTH",
        ),
        (
            {
                "custom_id": "m",
                "title": "T",
                "components": [
                    {
                        "type": 18,
                        "label": "L",
                        "description": "d" * 101,
                        "component": _text_input("a", label=None),
                    }
                ],
            },
            "components.0.description",
            "BASE_TYPE_MAX_LENGTH",
        ),
        (
            {"custom_id": "m", "title": "T", "components": [{"type": 18, "label": "L"}]},
            "components.0.component",
            "BASE_TYPE_REQUIRED",
        ),
    ],
)
async def test_modal_callback_is_checked_as_discord_does(
    modal: dict[str, Any], path: str, code: str
) -> None:
    async with FakeDiscord() as fake:
        guild = fake.add_guild()
        alice = fake.add_user("alice")
        fake.add_member(guild, alice)
        rec = await fake.invoke_command("anything", user=alice)
        async with aiohttp.ClientSession() as session:
            url = f"{fake.api_base}/interactions/{rec.id}/{rec.token}/callback"
            async with session.post(url, json={"type": 9, "data": modal}) as resp:
                body = await resp.json()
        assert resp.status == 400 and body["code"] == 50035
        node = body["errors"]["data"]
        for key in path.split("."):
            node = node[key]
        assert node["_errors"][0]["code"] == code
        assert rec.modal is None and not rec.acknowledged


# ---------------------------------------------------------------------------------------------
# Channels and guilds going away
# ---------------------------------------------------------------------------------------------


def _events(fake: FakeDiscord, t: str) -> list[Any]:
    """The ``d`` of every event ``t`` the fake dispatched, over all sessions."""
    return [
        json.loads(frame)["d"]
        for session in fake.sessions.values()
        for _, name, frame in session.events
        if name == t
    ]


async def test_deleted_channels_and_threads_are_gone(make_env: EnvFactory) -> None:
    env = await make_env(FakeDiscordConfig(interaction_ack_deadline=60))
    fake, bot = env.fake, env.bot
    random = fake.channels[env.guild.channel_ids[1]]
    planning = fake.add_thread(env.general, "planning")
    side = fake.add_thread(random, "side talk")
    category = fake.add_channel(env.guild, "topics", type=ChannelType.GUILD_CATEGORY)
    child = fake.add_channel(env.guild, "cats", parent=category)
    guild = bot.get_guild(env.guild.id)
    assert guild is not None
    await fake.wait_for(lambda: guild.get_channel(child.id), what="channels cached")
    await fake.wait_for(lambda: guild.get_thread(side.id), what="threads cached")
    bot_message = await bot.http.send_message(
        random.id, params=discord.http.handle_message_parameters("before")
    )
    user_message = await fake.post_message(random, env.alice, "hello")
    pending = await fake.invoke_command("anything", channel=random, user=env.alice)

    # A thread: THREAD_DELETE with the four fields Discord sends.
    raw = await env.expect("raw_thread_delete", fake.delete_channel(planning))
    assert (raw.thread_id, raw.parent_id, raw.guild_id) == (planning.id, env.general.id, guild.id)
    assert _events(fake, "THREAD_DELETE") == [
        {
            "id": str(planning.id),
            "guild_id": str(guild.id),
            "parent_id": str(env.general.id),
            "type": ChannelType.PUBLIC_THREAD,
        }
    ]
    assert guild.get_thread(planning.id) is None

    # A text channel takes its threads with it, with no THREAD_DELETE of their own.
    gone = await env.expect("guild_channel_delete", fake.delete_channel(random))
    assert gone.id == random.id and guild.get_channel(random.id) is None
    assert guild.get_thread(side.id) is None and side.deleted
    assert [d["id"] for d in _events(fake, "CHANNEL_DELETE")] == [str(random.id)]
    assert len(_events(fake, "THREAD_DELETE")) == 1
    listed = [c["id"] for c in fake._guild_payload(env.guild)["channels"]]
    assert str(random.id) not in listed and str(env.general.id) in listed
    assert not fake._guild_payload(env.guild)["threads"]
    assert fake.messages_in(random) == [fake.message(int(bot_message["id"])), user_message]

    # REST on the deleted channel and thread: 404 Unknown Channel.
    http = bot.http
    say = discord.http.handle_message_parameters("x")
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: http.send_message(random.id, params=say),
        lambda: http.get_channel(random.id),
        lambda: http.get_message(random.id, user_message.id),
        lambda: http.logs_from(random.id, 10),
        lambda: http.edit_message(random.id, int(bot_message["id"]), params=say),
        lambda: http.start_thread_without_message(
            random.id, name="t", auto_archive_duration=60, type=11
        ),
        lambda: http.get_channel(side.id),
        lambda: http.send_message(side.id, params=say),
    ]
    for call in calls:
        with pytest.raises(discord.NotFound) as unknown:
            await call()
        assert unknown.value.code == 10003
    # An interaction made there before cannot be answered with a message any more.
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/interactions/{pending.id}/{pending.token}/callback"
        async with session.post(url, json={"type": 4, "data": {"content": "hi"}}) as resp:
            assert resp.status == 404 and (await resp.json())["code"] == 10003

    # Test actions refuse it: no message, interaction or thread can be made there.
    with pytest.raises(KeyError, match="deleted"):
        await fake.post_message(random, env.alice, "anyone?")
    with pytest.raises(KeyError, match="deleted"):
        await fake.invoke_command("anything", channel=random.id, user=env.alice)
    with pytest.raises(KeyError, match="deleted"):
        fake.add_thread(random, "again")
    with pytest.raises(KeyError, match="deleted"):
        await fake.edit_message(user_message, "changed")

    # A category's channels stay, out of the category, with a CHANNEL_UPDATE each.
    cats = guild.get_channel(child.id)
    assert cats is not None and cats.category_id == category.id
    _, after = await env.expect("guild_channel_update", fake.delete_channel(category))
    assert after.id == child.id and after.category_id is None
    assert child.parent_id is None and child.id in env.guild.channel_ids
    with pytest.raises(ValueError, match="guild channels"):
        await fake.delete_channel(fake.dm_channel(env.alice))


async def test_bot_removed_from_guild(make_env: EnvFactory) -> None:
    env = await make_env()
    fake, bot = env.fake, env.bot
    other = fake.add_guild("Other Guild", channels=["lobby"])
    await fake.wait_for(lambda: bot.get_guild(other.id), what="second guild")
    general = env.general

    removed = await env.expect("guild_remove", fake.remove_bot(env.guild))
    assert removed.id == env.guild.id
    assert _events(fake, "GUILD_DELETE") == [{"id": str(env.guild.id)}]
    assert bot.get_guild(env.guild.id) is None and bot.get_guild(other.id) is not None
    assert fake.bot_user.id not in env.guild.members and general.deleted

    http = bot.http
    say = discord.http.handle_message_parameters("x")
    calls: list[tuple[Callable[[], Awaitable[Any]], int]] = [
        (lambda: http.get_guild(env.guild.id), 10004),
        (lambda: http.get_member(env.guild.id, env.alice.id), 10004),
        (lambda: http.bulk_upsert_guild_commands(fake.application_id, env.guild.id, []), 10004),
        (lambda: http.get_channel(general.id), 10003),
        (lambda: http.send_message(general.id, params=say), 10003),
    ]
    for call, code in calls:
        with pytest.raises(discord.NotFound) as unknown:
            await call()
        assert unknown.value.code == code

    # Nothing more happens there for the bot.
    seq = max(s.seq for s in fake.sessions.values())
    with pytest.raises(KeyError, match="removed"):
        fake.add_member(env.guild, fake.add_user("carol"))
    with pytest.raises(KeyError):
        await fake.post_message(general, env.alice, "still there?")
    with pytest.raises(KeyError):
        await fake.invoke_command("anything", channel=general, user=env.alice)
    assert max(s.seq for s in fake.sessions.values()) == seq
    assert fake.messages_in(general) == []

    # A new session hears only of the guilds the bot is still in.
    async def no_pause(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    bot.before_identify_hook = no_pause  # type: ignore[method-assign]
    await env.expect("ready", fake.drop_gateway(resumable=False))
    assert [g.id for g in bot.guilds] == [other.id]


# ---------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 7])
def test_a_guild_goes_on_the_shard_asked_for(seed: int | None) -> None:
    fake = FakeDiscord(FakeDiscordConfig(shards=3, snowflake_seed=seed))
    wanted = [2, 0, 1, 1, 0]
    guilds = [fake.add_guild(f"g{n}", shard=shard) for n, shard in enumerate(wanted)]
    assert [(g.id >> 22) % 3 for g in guilds] == wanted
    if seed is not None:  # a twin makes the same ids
        twin = FakeDiscord(FakeDiscordConfig(shards=3, snowflake_seed=seed))
        assert [twin.add_guild(f"g{n}", shard=s).id for n, s in enumerate(wanted)] == [
            g.id for g in guilds
        ]
    with pytest.raises(ValueError, match="shard 3"):
        fake.add_guild("nowhere", shard=3)


async def _sharded_bot(shard_id: int, answered: list[str]) -> commands.AutoShardedBot:
    """A bot that runs shard ``shard_id`` of two and says which shard a command came by."""
    bot = commands.AutoShardedBot(
        command_prefix="!",
        intents=discord.Intents.default(),
        shard_count=2,
        shard_ids=[shard_id],
        guild_ready_timeout=0.05,
    )

    @app_commands.command(name="where", description="Which shard")
    async def where(interaction: BotInteraction) -> None:
        answered.append(f"bot {shard_id}")
        assert interaction.guild is not None
        await interaction.response.send_message(f"shard {interaction.guild.shard_id}")

    bot.tree.add_command(where)
    return bot


async def test_each_shard_hears_only_of_its_guilds() -> None:
    fake = FakeDiscord(FakeDiscordConfig(shards=2))
    await fake.start()
    zero = fake.add_guild("zero", shard=0)
    one = fake.add_guild("one", shard=1)
    alice = fake.add_user("alice")
    for guild in (zero, one):
        fake.add_member(guild, alice)
    fake.point_client_here()
    answered: list[str] = []
    bots = [await _sharded_bot(0, answered), await _sharded_bot(1, answered)]
    heard: list[list[int]] = [[], []]
    for n, bot in enumerate(bots):

        async def record(message: discord.Message, n: int = n) -> None:
            heard[n].append(message.id)

        bot.add_listener(record, "on_message")
    tasks = [asyncio.create_task(bot.start(fake.token)) for bot in bots]
    try:
        for bot in bots:
            await asyncio.wait_for(bot.wait_until_ready(), 10)
        # IDENTIFY carries the shard pair; READY and GUILD_CREATE bring only the shard's guilds.
        assert sorted(p["shard"] for p in fake.identify_payloads) == [[0, 2], [1, 2]]
        assert [g.id for g in bots[0].guilds] == [zero.id]
        assert [g.id for g in bots[1].guilds] == [one.id]
        data = await bots[0].http.request(discord.http.Route("GET", "/gateway/bot"))
        assert data["shards"] == 2

        # Messages, direct messages (shard 0) and interactions reach only their guild's shard.
        in_one = await fake.post_message(one.channel_ids[0], alice, "one")
        in_zero = await fake.post_message(zero.channel_ids[0], alice, "zero")
        direct = await fake.post_message(fake.dm_channel(alice), alice, "dm")
        await fake.wait_for(lambda: len(heard[0]) == 2 and len(heard[1]) == 1)
        assert heard == [[in_zero.id, direct.id], [in_one.id]]
        assert fake.shards_told("MESSAGE_CREATE", in_one.id) == [(1, 2)]
        assert fake.shards_told("MESSAGE_CREATE", direct.id) == [(0, 2)]
        command = await fake.invoke_command("where", channel=one.channel_ids[0], user=alice)
        await fake.wait_for(lambda: command.original)
        assert command.original is not None and command.original.latest.content == "shard 1"
        assert answered == ["bot 1"]
        assert fake.shards_told("INTERACTION_CREATE", command.id) == [(1, 2)]

        # A guild that joins later comes to its shard only.
        later = fake.add_guild("later", shard=0)
        await fake.wait_for(lambda: bots[0].get_guild(later.id))
        assert fake.shards_told("GUILD_CREATE", later.id) == [(0, 2)]
        assert bots[1].get_guild(later.id) is None
    finally:
        for bot, task in zip(bots, tasks, strict=True):
            await bot.close()
            await asyncio.wait_for(task, 10)
        await fake.stop()


async def _identify(fake: FakeDiscord, shard: Any) -> tuple[int | None, dict[str, Any] | None]:
    """IDENTIFY with ``shard`` over a raw websocket: the close code, or READY's data."""
    identify = {"token": fake.token, "intents": 0, "properties": {}, "shard": shard}
    async with aiohttp.ClientSession() as session, session.ws_connect(fake.gateway_url) as ws:
        assert (await ws.receive_json(timeout=5))["op"] == 10
        await ws.send_json({"op": 2, "d": identify})
        reply = await ws.receive(timeout=5)
        if reply.type is aiohttp.WSMsgType.CLOSE:
            return reply.data, None
        frame = json.loads(reply.data)
        assert frame["t"] == "READY"
        return None, frame["d"]


async def test_identify_checks_the_shard() -> None:
    config = FakeDiscordConfig(shards=2, max_guilds_per_shard=1)
    async with FakeDiscord(config) as fake:
        fake.add_guild("zero", shard=0)
        one = fake.add_guild("one", shard=1)
        for invalid in ([2, 2], [0, 0], [-1, 2], [0], "0,2", [0.0, 2]):
            assert await _identify(fake, invalid) == (4010, None)
        # One shard for both guilds would hold more than a shard may: sharding is required.
        assert await _identify(fake, [0, 1]) == (4011, None)
        code, ready = await _identify(fake, [1, 2])
        assert code is None and ready is not None
        assert ready["shard"] == [1, 2]
        assert ready["guilds"] == [{"id": str(one.id), "unavailable": True}]


# ---------------------------------------------------------------------------------------------
# Twin worlds
# ---------------------------------------------------------------------------------------------


def _build_world(fake: FakeDiscord) -> list[int]:
    """A small world, built the same way every time; the ids it was given, in order."""
    guild = fake.add_guild("Twin", channels=["general", "random"])
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    fake.add_member(guild, alice, permissions=Perm.MANAGE_MESSAGES)
    helpers = fake.add_role(guild, "helpers")
    fake.add_member(guild, bob, roles=[helpers])
    extra = fake.add_channel(guild, "extra")
    thread = fake.add_thread(extra, "notes")
    dm = fake.dm_channel(alice)
    return [
        fake.bot_user.id,
        fake.application_id,
        fake.owner.id,
        guild.id,
        *guild.roles,
        *guild.channel_ids,
        alice.id,
        bob.id,
        extra.id,
        thread.id,
        dm.id,
    ]


async def test_twin_fakes_with_one_seed_give_the_world_the_same_ids() -> None:
    first = FakeDiscord(FakeDiscordConfig(snowflake_seed=7))
    twin = FakeDiscord(FakeDiscordConfig(snowflake_seed=7))
    ids = _build_world(first)
    assert _build_world(twin) == ids
    other = _build_world(FakeDiscord(FakeDiscordConfig(snowflake_seed=8)))
    assert not set(other) & set(ids)

    # The n-th id made is 2025-01-01 00:00 UTC plus n ms: the bot user's is the first.
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    assert discord.utils.snowflake_time(first.bot_user.id) == start
    for snowflake in ids:
        assert start <= discord.utils.snowflake_time(snowflake) < start + dt.timedelta(seconds=1)
    before, after = first.world_snowflake(), first.world_snowflake()
    assert after > before > max(ids) and (after >> 22) - (before >> 22) == 1

    # Ids made while serving still tell the current time.
    message = await first.post_message(first._first_text_channel(), first.owner, "now")
    age = dt.datetime.now(dt.UTC) - discord.utils.snowflake_time(message.id)
    assert abs(age.total_seconds()) < 60
    # Without a seed, ids come from the clock.
    plain = FakeDiscord()
    assert abs(time.time() - discord.utils.snowflake_time(plain.bot_user.id).timestamp()) < 60


async def test_seeded_world_serves_a_real_client(make_env: EnvFactory) -> None:
    expired: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def setup(bot: commands.Bot) -> None:
        @app_commands.command(name="when", description="When")
        async def when(interaction: BotInteraction) -> None:
            expired.set_result(interaction.is_expired())
            await interaction.response.send_message("now")

        bot.tree.add_command(when)

    env = await make_env(FakeDiscordConfig(snowflake_seed=1), setup=setup)
    guild = env.bot.get_guild(env.guild.id)
    assert guild is not None and guild.created_at.year == 2025
    rec = await env.fake.invoke_command("when", user=env.alice)
    assert await asyncio.wait_for(expired, 5) is False
    await env.fake.wait_for(lambda: rec.original, what="answered")


# ---------------------------------------------------------------------------------------------
# Threads, rate limits, reconnects, process mode
# ---------------------------------------------------------------------------------------------


async def test_thread_created_by_bot_is_cached(make_env: EnvFactory) -> None:
    env = await make_env()
    created = await env.expect(
        "thread_create",
        env.channel().create_thread(name="a question", type=discord.ChannelType.public_thread),
    )
    guild = env.bot.get_guild(env.guild.id)
    assert guild is not None
    thread = guild.get_thread(created.id)
    assert thread is not None and thread.name == "a question" and thread.parent_id == env.general.id
    assert env.fake.channels[thread.id].is_thread
    await thread.send("inside")
    assert [m.content for m in env.fake.messages_in(thread.id)] == ["inside"]

    starter = await env.channel().send("start here")
    from_message = await env.expect("thread_create", starter.create_thread(name="from message"))
    assert from_message.id == starter.id
    user_message = await env.expect(
        "message",
        env.fake.post_message(from_message.id, env.alice, "in thread"),
        lambda m: m.author.id == env.alice.id,
    )
    assert isinstance(user_message.channel, discord.Thread)


async def test_burst_of_edits_meets_429s_and_completes(make_env: EnvFactory) -> None:
    config = FakeDiscordConfig(
        channel_message_window=0.5, send_window=0.5, edit_window=0.5, interaction_window=0.5
    )
    env = await make_env(config)
    fake = env.fake
    message = await env.channel().send("edit 0")
    for i in range(1, 9):
        message = await message.edit(content=f"edit {i}")
    record = fake.message(message.id)
    assert record.contents == [f"edit {i}" for i in range(9)]
    limited = fake.requests_for(status=429)
    assert fake.rate_limited_count == len(limited) >= 1
    body = limited[0].response
    assert body["global"] is False and body["retry_after"] > 0
    assert all(r.route.startswith("PATCH") for r in limited)
    ok = fake.requests_for("PATCH /channels/{channel_id}/messages/{message_id}", status=200)
    assert len(ok) == 8
    async with aiohttp.ClientSession() as session:
        url = f"{fake.api_base}/channels/{env.general.id}/messages"
        headers = {"Authorization": f"Bot {fake.token}"}
        statuses = []
        for _ in range(6):
            async with session.post(url, json={"content": "x"}, headers=headers) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    assert resp.headers["Via"] == "1.1 google"
                    assert resp.headers["X-RateLimit-Scope"] == "user"
                else:
                    assert int(resp.headers["X-RateLimit-Limit"]) == 5
                    assert float(resp.headers["X-RateLimit-Reset-After"]) <= 0.5
    assert 429 in statuses


async def test_global_rate_limit_pauses_the_client(make_env: EnvFactory) -> None:
    env = await make_env(FakeDiscordConfig(global_limit=4, global_window=0.3))
    fake = env.fake
    users = await asyncio.gather(*(env.bot.fetch_user(env.alice.id) for _ in range(10)))
    assert {u.name for u in users} == {"alice"}
    limited = fake.requests_for(status=429)
    assert limited and all(r.scope == "global" and r.response["global"] for r in limited)
    assert len(fake.requests_for("GET /users/{user_id}", status=200)) == 10


async def test_gateway_drop_is_resumed(make_env: EnvFactory) -> None:
    env = await make_env()
    fake = env.fake
    await fake.drop_gateway()
    # Dispatched while the bot may still be disconnected: RESUME replays it.
    during = await fake.post_message(env.general, env.alice, "while you were away")
    await fake.wait_for(lambda: fake.resume_count == 1, what="resumed")
    after = await env.expect(
        "message",
        fake.post_message(env.general, env.alice, "after reconnect"),
        lambda m: m.content == "after reconnect",
    )
    assert after.id != during.id
    assert during.id in [m.id for m in env.received]
    assert fake.identify_count == 1
    assert len(fake.sessions) == 1
    seqs = [s for _, _, s in next(iter(fake.sessions.values())).dispatched]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    # An invalidated session makes the client IDENTIFY again (without discord.py's 5 s pause
    # before a non-initial IDENTIFY).
    async def no_pause(shard_id: int | None, *, initial: bool = False) -> None:
        return None

    env.bot.before_identify_hook = no_pause  # type: ignore[method-assign]
    await env.expect("ready", fake.drop_gateway(resumable=False))
    assert fake.identify_count == 2


async def test_wait_for_times_out_with_state() -> None:
    async with FakeDiscord() as fake:
        with pytest.raises(TimeoutError, match="identify=0"):
            await fake.wait_for(lambda: fake.identify_count > 0, timeout=0.1)


async def test_process_mode_serves_control_endpoints() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.fakes.discord",
        "--channels",
        "3",
        "--port",
        "0",
        "--set",
        "latency=0.001",
        "--set",
        "snowflake_seed=7",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
        assert info["api_base"].endswith("/api/v10") and len(info["channel_ids"]) == 3
        # A twin built in this process the way the process builds its world has its ids.
        twin = FakeDiscord(FakeDiscordConfig(snowflake_seed=7))
        guild = twin.add_guild("Bench Guild", channels=[f"channel-{i}" for i in range(3)])
        for i in range(2):
            twin.add_member(guild, twin.add_user(f"user{i}"))
        assert info["bot_user_id"] == str(twin.bot_user.id)
        assert info["channel_ids"] == [str(c) for c in guild.channel_ids]
        assert info["users"] == {u.name: str(u.id) for u in twin.users.values()}
        control = info["control_base"]
        async with aiohttp.ClientSession() as session:
            post = {"channel_id": info["channel_ids"][1], "content": "bench"}
            async with session.post(f"{control}/messages", json=post) as resp:
                assert resp.status == 201
                created = await resp.json()
            headers = {"Authorization": f"Bot {info['token']}"}
            async with session.get(f"{info['api_base']}/users/@me", headers=headers) as resp:
                assert (await resp.json())["id"] == info["bot_user_id"]
            async with session.get(f"{control}/state") as resp:
                state = await resp.json()
        (message,) = state["messages"]
        assert message["id"] == created["id"]
        assert message["versions"][0]["content"] == f"<@{info['bot_user_id']}> bench"
        assert message["versions"][0]["t"] == pytest.approx(created["created"])
        assert state["requests"] == 1 and state["rate_limited"] == 0
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0


async def test_injected_write_faults_refuse_writes_before_they_take_effect() -> None:
    async def write_40(seed: int) -> tuple[list[int], FakeDiscord, int]:
        config = FakeDiscordConfig(write_fault_rate=0.5, write_fault_seed=seed)
        config.send_limit = config.channel_message_limit = 100
        async with FakeDiscord(config) as fake:
            channel_id = fake.add_guild("Faults", channels=["general"]).channel_ids[0]
            url = f"{fake.api_base}/channels/{channel_id}/messages"
            seen: list[int] = []
            async with aiohttp.ClientSession(headers={"Authorization": f"Bot {fake.token}"}) as s:
                for i in range(40):
                    async with s.post(url, json={"content": f"m{i}"}) as resp:
                        seen.append(resp.status)
                        body = await resp.json()
                    if resp.status == 429:
                        assert resp.headers["Via"] == "1.1 google"
                        assert resp.headers["X-RateLimit-Scope"] == "shared"
                        assert body["global"] is False and 0 < body["retry_after"] <= 1.0
                async with s.get(f"{fake.api_base}/users/@me") as resp:
                    assert resp.status == 200  # only message writes fail
            return seen, fake, channel_id

    seen, fake, channel_id = await write_40(seed=3)
    assert {200, 429, 500} == set(seen)
    assert fake.write_faults == {"429": seen.count(429), "500": seen.count(500)}
    assert fake.rate_limited_count == 0  # none of them was the client's doing
    assert len(fake.messages_in(channel_id)) == seen.count(200)  # a refused write left nothing
    assert (await write_40(seed=3))[0] == seen

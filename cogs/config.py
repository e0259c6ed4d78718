"""/config: server admins set the bot up per server and per channel, from Discord itself.

Also where the bot forgets what belonged to a channel that was deleted or a server it left.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.errors import UserError
from bot.places import Place
from bot.server_config import (
    MAX_SYSTEM_PROMPT,
    Change,
    History,
    LogEntry,
    Memory,
    PlaceSettings,
    ReplyMode,
    Scope,
    ServerConfig,
    Setting,
    Source,
    describe,
)
from cogs.failures import tell_failure
from cogs.permissions import admin_group, require_admin
from cogs.places import place_of
from cogs.sinks import NO_MENTIONS

log = logging.getLogger(__name__)

PROMPT_MODAL_PREFIX = "config:system_prompt:"
_MESSAGE_LIMIT = 2000
_SHOWN_PROMPT = 300  # characters of a system prompt that /config show quotes
_PREFILL_SECONDS = 1.5
_LOGGED_VALUE = 40  # characters of each value in /config log (25 fit in an embed)
ADMINS_ONLY = "/config is for people with the Manage Server permission."
NEEDS_INTENT = (
    "⚠️ `all` needs the message content intent, which is off for this bot: until its owner "
    "turns it on, only mentions are answered."
)
_FIRST_RUN = (
    "Nothing is set for this server yet, so the bot runs on its defaults, shown below. "
    "The three settings most servers change first:\n"
    "• `system_prompt`: how the bot speaks and what it is for (with no value, an editor opens)\n"
    "• `reply_mode`: `mention` (the default), `all` for a channel that is the bot's, "
    "`thread` to answer each mention in a thread of its own, or `off`\n"
    "• `roles`: who may use the bot (people who can manage the server always may)\n"
    "`/config set` changes this channel's setting; add `scope: server` for every channel."
)

_SETTING_CHOICES = [app_commands.Choice(name=s.value, value=s.value) for s in Setting]
_SCOPE_CHOICES = [app_commands.Choice(name=s.value, value=s.value) for s in Scope]


class ConfigCog(commands.Cog):
    config_group = admin_group("config", "Set the bot up for this server and its channels.")

    def __init__(self, bot: commands.AutoShardedBot, config: ServerConfig) -> None:
        self.bot = bot
        self.config = config

    @config_group.command(name="show", description="The settings here, and where each is set.")
    async def show(self, interaction: discord.Interaction) -> None:
        place = _admin_place(interaction)
        await interaction.response.defer(ephemeral=True)
        settings = await self.config.for_place(place)
        assert place.guild_id is not None
        lines = []
        if await self.config.is_untouched(place.guild_id):
            lines.append(_FIRST_RUN)
        lines.append(f"**Settings in <#{place.channel_id}>**")
        for setting in Setting:
            value = describe(setting, settings.value(setting))
            if setting is Setting.SYSTEM_PROMPT and len(value) > _SHOWN_PROMPT:
                value = value[:_SHOWN_PROMPT] + '…"'
            lines.append(f"`{setting.value}`: {value} ({self._source(place, settings, setting)})")
        if settings.reply_mode is ReplyMode.ALL and not self.bot.intents.message_content:
            lines.append(NEEDS_INTENT)
        await _reply(interaction, "\n".join(lines))

    @config_group.command(name="set", description="Change a setting for this channel or server.")
    @app_commands.describe(
        setting="What to change",
        value="The new value (system_prompt with no value opens an editor; roles as mentions)",
        scope="This channel (in a thread: its channel), or the whole server",
    )
    @app_commands.choices(setting=_SETTING_CHOICES, scope=_SCOPE_CHOICES)
    async def set_(
        self,
        interaction: discord.Interaction,
        setting: str,
        value: str | None = None,
        scope: str = Scope.CHANNEL.value,
    ) -> None:
        place = _admin_place(interaction)
        name, where = Setting(setting), Scope(scope)
        if name is Setting.SYSTEM_PROMPT and value is None:
            # A modal must be the first answer, within Discord's three seconds: the current
            # prompt is read with a deadline, else taken as this process last saw it.
            try:
                async with asyncio.timeout(_PREFILL_SECONDS):
                    settings = await self.config.for_scope(place, where)
            except TimeoutError:
                settings = self.config.last_seen(place, where)
            await interaction.response.send_modal(_prompt_modal(where, settings.system_prompt))
            return
        await interaction.response.defer(ephemeral=True)
        await self._change(interaction, place, name, value, where)

    @config_group.command(name="reset", description="Let a setting follow the server or default.")
    @app_commands.describe(setting="What to reset", scope="This channel, or the whole server")
    @app_commands.choices(setting=_SETTING_CHOICES, scope=_SCOPE_CHOICES)
    async def reset(
        self, interaction: discord.Interaction, setting: str, scope: str = Scope.CHANNEL.value
    ) -> None:
        place = _admin_place(interaction)
        await interaction.response.defer(ephemeral=True)
        name, where = Setting(setting), Scope(scope)
        change = await self.config.change(place, name, None, where, by=interaction.user.id)
        now = await self.config.for_place(place)
        inherited = describe(name, now.value(name))
        await _reply(
            interaction,
            f"↩️ {_changed(place, change)}\nHere it is now {inherited} "
            f"({self._source(place, now, name)}).",
        )

    @config_group.command(name="log", description="The last 25 changes to the settings here.")
    async def log_(self, interaction: discord.Interaction) -> None:
        place = _admin_place(interaction)
        await interaction.response.defer(ephemeral=True)
        assert place.guild_id is not None
        entries = await self.config.log(place.guild_id)
        if not entries:
            await _reply(interaction, "Nothing has been changed with /config in this server yet.")
            return
        embed = discord.Embed(
            title="Changes to the bot's settings", description="\n".join(map(_logged, entries))
        )
        await interaction.edit_original_response(embed=embed, allowed_mentions=NO_MENTIONS)

    @set_.autocomplete("value")
    async def _value_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        offered = {
            Setting.MODEL.value: self.config.catalog.chat_models,
            Setting.IMAGE_MODEL.value: self.config.catalog.image_models,
            Setting.REPLY_MODE.value: [mode.value for mode in ReplyMode],
            Setting.HISTORY.value: [mode.value for mode in History],
            Setting.MEMORY.value: [value.value for value in Memory],
        }.get(str(getattr(interaction.namespace, "setting", "")), [])
        typed = current.lower()
        return [app_commands.Choice(name=v, value=v) for v in offered if typed in v.lower()][:25]

    # The system prompt's editor.

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.modal_submit or not interaction.data:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
        if not custom_id.startswith(PROMPT_MODAL_PREFIX):
            return
        try:
            place = _admin_place(interaction)
            # "Thinking": a modal opened by a command has no message to update.
            await interaction.response.defer(ephemeral=True, thinking=True)
            scope = Scope(custom_id.removeprefix(PROMPT_MODAL_PREFIX))
            text = _submitted(interaction.data)
            await self._change(interaction, place, Setting.SYSTEM_PROMPT, text, scope)
        except Exception as exc:
            await tell_failure(interaction, exc, doing="Setting a system prompt")

    # Forgetting.

    @commands.Cog.listener()
    async def on_guild_channel_delete(self, channel: discord.abc.GuildChannel) -> None:
        await self._forget(self.config.forget_channel(channel.guild.id, channel.id), channel.id)

    @commands.Cog.listener()
    async def on_raw_thread_delete(self, payload: discord.RawThreadDeleteEvent) -> None:
        await self._forget(
            self.config.forget_channel(payload.guild_id, payload.thread_id), payload.thread_id
        )

    @commands.Cog.listener()
    async def on_guild_role_delete(self, role: discord.Role) -> None:
        # Left in `roles`, a deleted role would leave only admins able to use the bot.
        me = self.bot.user.id if self.bot.user else 0
        forgetting = self.config.forget_role(role.guild.id, role.id, by=me)
        await self._forget(forgetting, role.id)

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        await self._forget(self.config.forget_server(guild.id), guild.id)

    async def _forget(self, forgetting: Any, what: int) -> None:
        try:
            await forgetting
        except Exception:
            log.exception("Forgetting what belonged to %s failed", what)

    # Helpers.

    async def _change(
        self,
        interaction: discord.Interaction,
        place: Place,
        setting: Setting,
        value: str | None,
        scope: Scope,
    ) -> None:
        """Check `value`, store it, and say what changed; nothing is stored if it is refused."""
        guild = interaction.guild
        assert guild is not None
        model = (await self.config.for_scope(place, scope)).model
        roles = {role.id: role.name for role in guild.roles}
        parsed = self.config.parse(setting, value, model=model, server_roles=roles)
        change = await self.config.change(place, setting, parsed, scope, by=interaction.user.id)
        lines = [f"✅ {_changed(place, change)}"]
        wants_intent = setting is Setting.REPLY_MODE and parsed == ReplyMode.ALL
        if wants_intent and not self.bot.intents.message_content:
            lines.append(NEEDS_INTENT)
        if scope is Scope.SERVER:
            here = await self.config.for_place(place)
            if here.source(setting) is Source.CHANNEL:
                lines.append(
                    f"<#{place.settings_channel_id}> has a value of its own, which wins there."
                )
        await _reply(interaction, "\n".join(lines))

    def _source(self, place: Place, settings: PlaceSettings, setting: Setting) -> str:
        source = settings.source(setting)
        if source is Source.CHANNEL:
            if place.settings_channel_id != place.channel_id:
                return f"set for <#{place.settings_channel_id}>"
            return "set for this channel"
        if source is Source.SERVER:
            return "set for the server"
        return "the bot's default"


def _admin_place(interaction: discord.Interaction) -> Place:
    """Where /config is used, by someone who may manage the server."""
    guild = require_admin(interaction, ADMINS_ONLY)
    return place_of(interaction.channel, guild.id)


def _prompt_modal(scope: Scope, current: str) -> discord.ui.Modal:
    where = "this channel" if scope is Scope.CHANNEL else "the server"
    modal = discord.ui.Modal(
        title=f"System prompt for {where}", custom_id=PROMPT_MODAL_PREFIX + scope
    )
    modal.add_item(
        discord.ui.TextInput(
            label="System prompt",
            style=discord.TextStyle.paragraph,
            default=current[:MAX_SYSTEM_PROMPT],
            max_length=MAX_SYSTEM_PROMPT,
            required=True,
        )
    )
    return modal


def _submitted(data: Any) -> str:
    """The text typed into the modal's one text input."""
    for row in data.get("components", []):
        for component in row.get("components", [row.get("component")]):
            if isinstance(component, dict) and component.get("type") == 4:
                return str(component.get("value") or "")
    raise UserError("The editor came back empty; please try again.")


def _changed(place: Place, change: Change) -> str:
    where = f"<#{place.settings_channel_id}>" if change.scope is Scope.CHANNEL else "the server"
    old = _short(describe(change.setting, change.old) if change.old is not None else "not set")
    new = _short(describe(change.setting, change.new) if change.new is not None else "not set")
    return f"`{change.setting.value}` for {where}: {old} → {new}"


def _logged(entry: LogEntry) -> str:
    change = entry.change
    where = f"<#{change.channel_id}>" if change.channel_id else "the server"
    old = "not set" if change.old is None else describe(entry.setting, change.old)
    new = "not set" if change.new is None else describe(entry.setting, change.new)
    when = int(change.at.timestamp())
    return (
        f"<t:{when}:R> <@{change.user_id}> `{entry.setting.value}` for {where}: "
        f"{_short(old, _LOGGED_VALUE)} → {_short(new, _LOGGED_VALUE)}"
    )


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


async def _reply(interaction: discord.Interaction, text: str) -> None:
    if len(text) > _MESSAGE_LIMIT:
        text = text[: _MESSAGE_LIMIT - 1] + "…"
    await interaction.edit_original_response(content=text, allowed_mentions=NO_MENTIONS)

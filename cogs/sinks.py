"""Where a streamed answer is written on Discord: channel messages or an interaction's messages."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import logging
import math
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import discord

from bot.delivery.pacing import Window
from bot.delivery.reply import AttachedFile, Controls, MessageGone, Shown

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()
STOP_PREFIX = "answer:stop:"
# Then `{turn}`, or `{turn}:json` for an answer asked for in JSON.
REGENERATE_PREFIX = "answer:regenerate:"
REGENERATE_JSON = ":json"
# Then `{key}:{page}:{action}`: the page shown where it was pressed, and what to do.
PAGING_PREFIX = "answer:alt:"
# Channel windows kept before the budget first looks for quiet ones to set aside.
_QUIET_LOOK_FROM = 64


@dataclass(frozen=True)
class DiscordLimits:
    """Discord's documented write limits; tests shrink or loosen them."""

    channel_writes: int = 5
    channel_period: float = 5.0
    token_writes: int = 5
    token_period: float = 2.0
    bot_writes: int = 50
    bot_period: float = 1.0
    # Kept free in the bot-wide window for first and final writes.
    bot_reserve: int = 2
    # Routine updates share the rest less this part of the window (see Window's slack): when
    # many answers stream at once, the first and final texts that come meanwhile find room
    # without delaying anyone long. A part, so that it scales with a process's share.
    bot_slack: float = 0.02
    # A write holds its slot until a period after its reply (see Window), so the time it
    # travels needs no margin; this one is for the clocks' own resolution.
    margin: float = 0.01
    # Seconds between edits of a progress message (an image being made).
    progress_interval: float = 5.0
    # An interaction token lives 15 minutes; stop using one this long before it dies.
    token_lifetime: float = 15 * 60.0
    token_margin: float = 30.0

    def share(self, part: Fraction) -> DiscordLimits:
        """The limits of a process that writes for `part` of the bot's shards: Discord counts
        the bot-wide limit over every process together, so each keeps to its part of it."""
        rate = self.bot_writes * part  # writes a period
        if rate >= 1:
            writes, period = math.floor(rate), self.bot_period
        else:
            # Less than one write a period: one write in a longer period, so that the
            # processes together still keep within the limit (one of 64 shards: 1 in 1.28 s).
            writes, period = 1, float(self.bot_period / rate)
        return dataclasses.replace(
            self,
            bot_writes=writes,
            bot_period=period,
            bot_reserve=min(self.bot_reserve, writes - 1),
        )


class DiscordBudget:
    """The rate windows shared by every answer the bot is writing."""

    def __init__(self, limits: DiscordLimits = DiscordLimits()) -> None:
        self.limits = limits
        self.bot = Window(
            limits.bot_writes,
            limits.bot_period + limits.margin,
            reserve=limits.bot_reserve,
            slack=limits.bot_slack * limits.bot_writes,
            lend_reserve=True,
        )
        self._channels: dict[int, Window] = {}
        # Windows of channels with no write in their period: dropped once nothing refers to
        # them, so that a bot in many channels keeps only the windows in use. One still
        # referred to (a sink's) is found here again: a channel never has two windows.
        self._quiet: weakref.WeakValueDictionary[int, Window] = weakref.WeakValueDictionary()
        self._look_for_quiet_at = _QUIET_LOOK_FROM

    def channel(self, channel_id: int) -> Window:
        window = self._channels.get(channel_id) or self._quiet.pop(channel_id, None)
        if window is None:
            self._set_quiet_aside()
            # No whole slot kept for final writes: that would slow every update by a quarter.
            # With the slack, a lone answer's final write waits for its channel under 0.5 s.
            window = Window(
                self.limits.channel_writes,
                self.limits.channel_period + self.limits.margin,
                reserve=0,
                slack=0.6,
            )
        self._channels[channel_id] = window
        return window

    def _set_quiet_aside(self) -> None:
        """Each time the windows kept have doubled, set aside those of quiet channels."""
        if len(self._channels) < self._look_for_quiet_at:
            return
        now = time.monotonic()
        for channel_id, window in list(self._channels.items()):
            if window.idle(now):
                self._quiet[channel_id] = self._channels.pop(channel_id)
        self._look_for_quiet_at = max(2 * len(self._channels), _QUIET_LOOK_FROM)

    def token(self) -> Window:
        return Window(self.limits.token_writes, self.limits.token_period + self.limits.margin)


def pressed_button(interaction: discord.Interaction[Any]) -> str:
    """The custom id of the button pressed; empty for any other interaction."""
    if interaction.type is not discord.InteractionType.component or interaction.data is None:
        return ""
    return str(interaction.data.get("custom_id", ""))


def token_refused(exc: discord.HTTPException) -> bool:
    """Discord no longer takes the interaction's token (401, Invalid Webhook Token)."""
    return exc.status == 401 or exc.code == 50027


def token_expiry(interaction: discord.Interaction[Any], limits: DiscordLimits) -> datetime.datetime:
    """When to stop using an interaction's token: a little before Discord stops taking it."""
    usable = limits.token_lifetime - limits.token_margin
    return interaction.created_at + datetime.timedelta(seconds=usable)


async def clear_controls(channel: discord.abc.Messageable, message_id: int) -> None:
    """Remove a message's buttons; a message deleted meanwhile needs nothing."""
    if isinstance(channel, discord.GroupChannel) or not hasattr(channel, "get_partial_message"):
        return
    with contextlib.suppress(discord.NotFound):
        await channel.get_partial_message(message_id).edit(view=None)


def controls_view(controls: Controls) -> discord.ui.View | None:
    """Buttons whose clicks the chat cog handles by their custom ids, also after a restart."""
    if controls == Controls():
        return None
    view = discord.ui.View(timeout=None)
    if controls.stop_key is not None:
        view.add_item(
            discord.ui.Button(
                label="Stop",
                emoji="⏹️",
                style=discord.ButtonStyle.secondary,
                custom_id=STOP_PREFIX + controls.stop_key,
            )
        )
    if controls.paging is not None:
        paging = controls.paging
        for label, emoji, action in (("Previous", "◀️", "prev"), ("Next", "▶️", "next")):
            view.add_item(
                discord.ui.Button(
                    label=label,
                    emoji=emoji,
                    style=discord.ButtonStyle.secondary,
                    custom_id=f"{PAGING_PREFIX}{paging.key}:{paging.page}:{action}",
                )
            )
        view.add_item(
            discord.ui.Button(
                label="Keep",
                emoji="✅",
                style=discord.ButtonStyle.primary,
                custom_id=f"{PAGING_PREFIX}{paging.key}:{paging.page}:keep",
            )
        )
    if controls.regenerate_turn is not None:
        view.add_item(
            discord.ui.Button(
                label="Regenerate",
                emoji="🔁",
                style=discord.ButtonStyle.secondary,
                custom_id=f"{REGENERATE_PREFIX}{controls.regenerate_turn}"
                + (REGENERATE_JSON if controls.regenerate_json else ""),
            )
        )
    # A finished view is not kept in discord.py's view store: clicks reach the cog's listener,
    # and a long-running bot does not hold one view per message it ever sent.
    view.stop()
    return view


class ChannelSink:
    """An answer written as channel messages, the first one replying to the question."""

    def __init__(
        self,
        channel: discord.abc.Messageable,
        channel_id: int,
        budget: DiscordBudget,
        *,
        reference: discord.Message | None = None,
        existing: Sequence[discord.PartialMessage] = (),
    ) -> None:
        self._channel = channel
        self._channel_id = channel_id
        self._budget = budget
        self._reference = reference
        # By position in the answer: a send that failed must not shift the ones after it.
        self._messages: dict[int, discord.Message | discord.PartialMessage] = dict(
            enumerate(existing)
        )

    def windows(self) -> Sequence[Window]:
        # Looked up at each write: the budget may have set a quiet channel's window aside.
        return (self._budget.channel(self._channel_id), self._budget.bot)

    def deadline(self) -> datetime.datetime | None:
        return None

    def can_attach_files(self) -> bool:
        guild = getattr(self._channel, "guild", None)
        if guild is None or not hasattr(self._channel, "permissions_for"):
            return True  # direct messages
        return bool(self._channel.permissions_for(guild.me).attach_files)

    def message_ids(self) -> list[int]:
        return [self._messages[index].id for index in sorted(self._messages)]

    async def clear_controls(self, message_id: int) -> None:
        await clear_controls(self._channel, message_id)

    async def remove(self, index: int) -> None:
        message = self._messages.pop(index, None)
        if message is not None:
            with contextlib.suppress(discord.NotFound):
                await message.delete()

    async def show(self, index: int, shown: Shown) -> None:
        view = controls_view(shown.controls)
        try:
            if index in self._messages:
                await self._messages[index].edit(
                    content=shown.content, view=view, **_attachments(shown.file)
                )
                return
            options: dict[str, Any] = {}
            if view is not None:
                options["view"] = view
            if shown.file is not None:
                options["file"] = _discord_file(shown.file)
            if index == 0 and self._reference is not None:
                # Only the first message replies to the question; continuations follow it.
                options["reference"] = self._reference
            self._messages[index] = await self._channel.send(
                shown.content, allowed_mentions=NO_MENTIONS, mention_author=False, **options
            )
        except discord.NotFound as exc:
            raise MessageGone from exc
        except discord.HTTPException as exc:
            if index == 0 and self._reference is not None and exc.code in (50013, 50035, 160002):
                # The question was deleted, or replying needs a permission we lack: answer
                # without replying.
                self._reference = None
                await self.show(index, shown)
                return
            if isinstance(exc, discord.Forbidden):
                log.warning("Missing permissions to write the answer: %s", exc.text)
                raise MessageGone from exc
            raise


class InteractionSink:
    """An answer to a slash command: the deferred response, then followups.

    A public answer that outlives the interaction token goes on as channel messages; a private
    one cannot, so the service ends it with a notice before the token expires (`deadline`).
    """

    def __init__(
        self,
        interaction: discord.Interaction,
        budget: DiscordBudget,
        *,
        private: bool,
    ) -> None:
        self._interaction = interaction
        self._budget = budget
        self._private = private
        self.token_window = budget.token()
        self._expires = token_expiry(interaction, budget.limits)
        # By position in the answer, as in ChannelSink.
        self._messages: dict[int, discord.Message | discord.WebhookMessage] = {}
        self._after_expiry: ChannelSink | None = None

    def acknowledged(self) -> None:
        """The deferral counts against the token's limit like any later write."""
        self.token_window.record(time.monotonic())

    def _expired(self) -> bool:
        return discord.utils.utcnow() >= self._expires

    def deadline(self) -> datetime.datetime | None:
        return self._expires if self._private else None

    def can_attach_files(self) -> bool:
        if self._after_expiry is not None:
            return self._after_expiry.can_attach_files()
        return bool(self._interaction.app_permissions.attach_files)

    def windows(self) -> Sequence[Window]:
        if self._after_expiry is not None:
            return self._after_expiry.windows()
        return (self.token_window,)

    def message_ids(self) -> list[int]:
        if self._after_expiry is not None:
            return self._after_expiry.message_ids()
        return [self._messages[index].id for index in sorted(self._messages)]

    def _without_token(self) -> ChannelSink | None:
        """Where a public answer goes on once the token has expired (None: the token serves)."""
        if self._after_expiry is None and self._expired() and not self._private:
            self._after_expiry = self._channel_sink()
        return self._after_expiry

    async def show(self, index: int, shown: Shown) -> None:
        without_token = self._without_token()
        if without_token is not None:
            await without_token.show(index, shown)
            return
        try:
            await self._show_with_token(index, shown)
        except discord.HTTPException as exc:
            if not token_refused(exc):
                raise
            # Discord may refuse the token before its 15 minutes (a skewed clock): what is
            # left is written as at expiry. A private answer has no other way to be shown.
            log.info("Discord refused an interaction token; continuing without it")
            self._expires = discord.utils.utcnow()
            if self._private:
                raise MessageGone from exc
            self._after_expiry = self._channel_sink()
            await self._after_expiry.show(index, shown)

    async def _show_with_token(self, index: int, shown: Shown) -> None:
        view = controls_view(shown.controls)  # None removes the buttons of an edited message
        try:
            if index == 0:
                message = await self._interaction.edit_original_response(
                    content=shown.content,
                    view=view,
                    allowed_mentions=NO_MENTIONS,
                    **_attachments(shown.file),
                )
                self._messages[0] = message
            elif index in self._messages:
                await self._interaction.followup.edit_message(
                    self._messages[index].id,
                    content=shown.content,
                    view=view,
                    allowed_mentions=NO_MENTIONS,
                    **_attachments(shown.file),
                )
            else:
                followup = await self._interaction.followup.send(
                    shown.content,
                    view=view or discord.utils.MISSING,
                    file=_discord_file(shown.file) if shown.file else discord.utils.MISSING,
                    ephemeral=self._private,
                    allowed_mentions=NO_MENTIONS,
                    wait=True,
                )
                self._messages[index] = followup
        except (discord.NotFound, discord.Forbidden) as exc:
            raise MessageGone from exc

    async def remove(self, index: int) -> None:
        without_token = self._without_token()
        if without_token is not None:
            await without_token.remove(index)
            return
        message = self._messages.pop(index, None)
        if message is not None:
            with contextlib.suppress(discord.NotFound):
                await self._interaction.followup.delete_message(message.id)

    async def clear_controls(self, message_id: int) -> None:
        channel = self._interaction.channel
        if isinstance(channel, discord.abc.Messageable):
            await clear_controls(channel, message_id)

    def _channel_sink(self) -> ChannelSink:
        """The token is gone, but a public response is an ordinary message of the bot's."""
        channel = self._interaction.channel
        if not isinstance(channel, discord.abc.Messageable) or channel.id is None:
            raise MessageGone
        existing = [channel.get_partial_message(message_id) for message_id in self.message_ids()]  # type: ignore[union-attr]
        return ChannelSink(channel, channel.id, self._budget, existing=existing)


def _discord_file(file: AttachedFile) -> discord.File:
    return discord.File(io.BytesIO(file.data), filename=file.filename)


def _attachments(file: AttachedFile | None) -> dict[str, Any]:
    """An edit's attachments: the file, or (left out) those the message has."""
    return {"attachments": [_discord_file(file)]} if file is not None else {}


async def tell_privately(interaction: discord.Interaction[Any], text: str) -> None:
    """One sentence only the person who acted sees, also after everyone saw the bot thinking.

    A deferred response is deleted first, so call this only before anything was shown in it:
    an answer streamed into it handles its own failures (ChatService.ask finishes it)."""
    if interaction.response.type is discord.InteractionResponseType.deferred_channel_message:
        # The first followup would take the "thinking" message's place, in public: that message
        # goes first (a private one too: the sentence comes all the same).
        try:
            await interaction.delete_original_response()
        except discord.HTTPException as exc:
            log.info("Could not remove the thinking message: %s", exc)
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True, allowed_mentions=NO_MENTIONS)
        else:
            await interaction.response.send_message(
                text, ephemeral=True, allowed_mentions=NO_MENTIONS
            )
    except discord.HTTPException as exc:
        log.warning("Could not tell the user: %s", exc)

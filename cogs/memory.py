"""/recall and /forget: search this conversation's older turns, and forget some of them."""

from __future__ import annotations

import logging
from collections.abc import Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Request, RequestKind
from bot.conversation.context import spoken_text
from bot.db.repository import StoredTurn
from bot.errors import UserError
from bot.memory import Memory
from cogs.failures import tell_failure
from cogs.places import person_of, place_of
from cogs.sinks import NO_MENTIONS, pressed_button

log = logging.getLogger(__name__)

FORGET_PREFIX = "memory:forget:"  # then the turn ids, comma-separated
CANCEL_ID = "memory:cancel"
_MESSAGE_LIMIT = 2000  # characters of a Discord message
_QUOTE_LIMITS = (240, 160, 100, 60)  # characters of each turn shown, the most that fit


class MemoryCog(commands.Cog):
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    @app_commands.command(name="recall", description="Search this conversation's history.")
    @app_commands.describe(query="What to look for")
    async def recall(self, interaction: discord.Interaction, query: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        # It shows old messages: only to those who could scroll back to them.
        if interaction.guild_id is not None and not interaction.permissions.read_message_history:
            raise UserError("/recall shows older messages, which you cannot read here.")
        admitted, found = await self.memory.search(self._request(interaction, query), query)
        place = admitted.place
        header = f"**Earlier in this conversation, closest to “{_quoted(query, 80)}”:**"

        def lines(limit: int) -> list[str]:
            return [
                f"• {_line(match.turn, limit)}"
                + _link(place.guild_id, place.channel_id, match.turn)
                for match in found
            ]

        content = _fitted(header, lines)
        await interaction.edit_original_response(content=content, allowed_mentions=NO_MENTIONS)

    @app_commands.command(
        name="forget", description="Make the bot forget messages of this conversation."
    )
    @app_commands.describe(text="What was said: the most similar messages are offered")
    async def forget(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        turns = await self.memory.to_forget(
            self._request(interaction, text), text, moderator=_moderator(interaction)
        )
        header = "**Forget these messages?** They leave the bot's history for good."
        content = _fitted(header, lambda limit: [f"• {_line(turn, limit)}" for turn in turns])
        view = discord.ui.View(timeout=None)
        ids = ",".join(str(turn.id) for turn in turns)
        view.add_item(
            discord.ui.Button(
                label="Forget", style=discord.ButtonStyle.danger, custom_id=FORGET_PREFIX + ids
            )
        )
        view.add_item(discord.ui.Button(label="Cancel", custom_id=CANCEL_ID))
        await interaction.edit_original_response(
            content=content, view=view, allowed_mentions=NO_MENTIONS
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        custom_id = pressed_button(interaction)
        try:
            if custom_id == CANCEL_ID:
                await interaction.response.edit_message(content="Nothing was forgotten.", view=None)
            elif custom_id.startswith(FORGET_PREFIX):
                await self._confirmed(interaction, custom_id.removeprefix(FORGET_PREFIX))
        except Exception as exc:
            await tell_failure(interaction, exc, doing=f"The button {custom_id}")

    async def _confirmed(self, interaction: discord.Interaction, ids: str) -> None:
        await interaction.response.defer()
        turn_ids = [int(turn_id) for turn_id in ids.split(",") if turn_id.isdigit()]
        forgotten = await self.memory.forget(
            self._request(interaction, ""), turn_ids, moderator=_moderator(interaction)
        )
        await interaction.edit_original_response(
            content=f"🧹 Forgot {forgotten} messages." if forgotten else "Nothing was forgotten.",
            view=None,
        )

    def _request(self, interaction: discord.Interaction, text: str) -> Request:
        kind = RequestKind.RECALL if interaction.command is self.recall else RequestKind.FORGET
        return Request(
            kind,
            place_of(interaction.channel, interaction.guild_id),
            person_of(interaction.user, interaction.permissions),
            prompt_chars=len(text),
        )


def _moderator(interaction: discord.Interaction) -> bool:
    return interaction.permissions.manage_messages


def _line(turn: StoredTurn, limit: int) -> str:
    name = _escaped(turn.author_name or "someone")
    speaker = "the bot" if turn.role == "assistant" else f"**{name}**"
    said = spoken_text(turn.content, turn.author_name)
    return f"{turn.created_at:%Y-%m-%d} {speaker}: {_quoted(said, limit)}"


def _fitted(header: str, lines: Callable[[int], list[str]]) -> str:
    """`header` and the `lines` quoting at most as many characters of each turn as lets them
    all fit one message; past that, the lines that fit."""
    for limit in _QUOTE_LIMITS:
        shown = [header, *lines(limit)]
        if len("\n".join(shown)) <= _MESSAGE_LIMIT:
            return "\n".join(shown)
    fitting = [header]
    for line in shown[1:]:
        if len("\n".join([*fitting, line])) > _MESSAGE_LIMIT:
            break
        fitting.append(line)
    return "\n".join(fitting)


def _quoted(text: str, limit: int) -> str:
    """People's words, cut to `limit` characters, shown as written: no markdown, no pings."""
    flat = " ".join(text.split())
    return _escaped(flat if len(flat) <= limit else flat[: limit - 1] + "…")


def _escaped(text: str) -> str:
    return discord.utils.escape_mentions(discord.utils.escape_markdown(text))


def _link(guild_id: int | None, channel_id: int, turn: StoredTurn) -> str:
    if not turn.message_ids:
        return ""
    link = f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{turn.message_ids[0]}"
    return f" · [message]({link})"

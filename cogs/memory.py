"""/recall and /forget: search this conversation's older turns, and forget some of them."""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import Request, RequestKind
from bot.conversation.context import spoken_text
from bot.db.repository import StoredTurn
from bot.memory import Memory
from cogs.failures import tell_failure
from cogs.places import person_of, place_of
from cogs.sinks import NO_MENTIONS

log = logging.getLogger(__name__)

FORGET_PREFIX = "memory:forget:"  # then the turn ids, comma-separated
CANCEL_ID = "memory:cancel"
_QUOTED = 240  # characters of each turn shown


class MemoryCog(commands.Cog):
    def __init__(self, memory: Memory) -> None:
        self.memory = memory

    @app_commands.command(name="recall", description="Search this conversation's history.")
    @app_commands.describe(query="What to look for")
    async def recall(self, interaction: discord.Interaction, query: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        admitted, found = await self.memory.search(self._request(interaction, query), query)
        place = admitted.place
        lines = [f"**Earlier in this conversation, closest to “{_quoted(query, 80)}”:**"]
        for match in found:
            link = _link(place.guild_id, place.channel_id, match.turn)
            lines.append(f"• {_line(match.turn)}" + (f" · [message]({link})" if link else ""))
        await interaction.edit_original_response(
            content="\n".join(lines), allowed_mentions=NO_MENTIONS
        )

    @app_commands.command(
        name="forget", description="Make the bot forget messages of this conversation."
    )
    @app_commands.describe(text="What was said: the most similar messages are offered")
    async def forget(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        turns = await self.memory.to_forget(
            self._request(interaction, text), text, moderator=_moderator(interaction)
        )
        lines = ["**Forget these messages?** They leave the bot's history for good."]
        lines += [f"• {_line(turn)}" for turn in turns]
        view = discord.ui.View(timeout=None)
        ids = ",".join(str(turn.id) for turn in turns)
        view.add_item(
            discord.ui.Button(
                label="Forget", style=discord.ButtonStyle.danger, custom_id=FORGET_PREFIX + ids
            )
        )
        view.add_item(discord.ui.Button(label="Cancel", custom_id=CANCEL_ID))
        await interaction.edit_original_response(
            content="\n".join(lines), view=view, allowed_mentions=NO_MENTIONS
        )

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        if interaction.type is not discord.InteractionType.component or interaction.data is None:
            return
        custom_id = str(interaction.data.get("custom_id", ""))
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


def _line(turn: StoredTurn) -> str:
    speaker = "the bot" if turn.role == "assistant" else f"**{turn.author_name or 'someone'}**"
    said = spoken_text(turn.content, turn.author_name)
    return f"{turn.created_at:%Y-%m-%d} {speaker}: {_quoted(said, _QUOTED)}"


def _quoted(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _link(guild_id: int | None, channel_id: int, turn: StoredTurn) -> str | None:
    if not turn.message_ids:
        return None
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{turn.message_ids[0]}"

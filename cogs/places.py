"""Where in Discord a request came from, as the core names places."""

from __future__ import annotations

import discord

from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place


def place_of(channel: object, guild_id: int | None) -> Place:
    if isinstance(channel, discord.Thread):
        return Place(channel.id, guild_id, ConversationKind.THREAD)
    if isinstance(channel, discord.DMChannel):
        return Place(channel.id, None, ConversationKind.DIRECT)
    if isinstance(channel, discord.abc.Snowflake):
        return Place(channel.id, guild_id, ConversationKind.CHANNEL)
    raise UserError("I can't hold a conversation here.")

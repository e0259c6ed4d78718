"""Where in Discord a request came from, and who made it, as the core names them."""

from __future__ import annotations

import discord

from bot.admission import Person
from bot.db.models import ConversationKind
from bot.errors import UserError
from bot.places import Place


def place_of(channel: object, guild_id: int | None) -> Place:
    if isinstance(channel, discord.Thread):
        return Place(channel.id, guild_id, ConversationKind.THREAD, parent_id=channel.parent_id)
    if isinstance(channel, discord.DMChannel):
        return Place(channel.id, None, ConversationKind.DIRECT)
    if isinstance(channel, discord.abc.Snowflake):
        return Place(channel.id, guild_id, ConversationKind.CHANNEL)
    raise UserError("I can't hold a conversation here.")


def person_of(user: discord.abc.User, permissions: discord.Permissions) -> Person:
    """`permissions`: the person's where they asked (an interaction's `permissions`)."""
    if not isinstance(user, discord.Member):
        return Person(user.id)
    return Person(
        user.id,
        roles=frozenset(role.id for role in user.roles if not role.is_default()),
        admin=is_admin(permissions),
    )


def is_admin(permissions: discord.Permissions) -> bool:
    return permissions.manage_guild or permissions.administrator

"""What the bot must be allowed to do where it delivers a result: checked before any paid
call, so that nobody pays for an answer that could not be shown."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.errors import UserError
from cogs.places import is_admin

# As Discord's settings name them, for the sentence the person reads.
_NAMES = {
    "send_messages": "Send Messages",
    "send_messages_in_threads": "Send Messages in Threads",
    "create_public_threads": "Create Public Threads",
    "attach_files": "Attach Files",
    "read_message_history": "Read Message History",
}


def sending(channel: object) -> str:
    """The permission that writing a message in `channel` takes."""
    return "send_messages_in_threads" if isinstance(channel, discord.Thread) else "send_messages"


def require(interaction: discord.Interaction, *needed: str, purpose: str) -> None:
    """Refuse, naming what is missing, unless the bot has every permission in `needed` where
    the interaction came from. A direct message needs none of them."""
    if interaction.guild is None:
        return
    granted = interaction.app_permissions
    missing = [_NAMES[name] for name in needed if not getattr(granted, name)]
    if missing:
        names = " and ".join(missing)
        plural = "s" if len(missing) > 1 else ""
        raise UserError(f"I need the {names} permission{plural} in this channel {purpose}.")


def admin_group(name: str, description: str) -> app_commands.Group:
    """Commands for people who can manage the server, in servers only: Discord offers them to
    those people (a server may change that), and `require_admin` checks it again."""
    return app_commands.Group(
        name=name,
        description=description,
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
    )


def require_admin(interaction: discord.Interaction, refusal: str) -> discord.Guild:
    """The server, if the person may manage it; else UserError(`refusal`)."""
    if interaction.guild is None or not is_admin(interaction.permissions):
        raise UserError(refusal)
    return interaction.guild

"""What the bot must be allowed to do where it delivers a result: checked before any paid
call, so that nobody pays for an answer that could not be shown."""

from __future__ import annotations

import discord

from bot.errors import UserError

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

"""The one place a failure in Discord becomes one sentence for the person: slash commands,
buttons and mentions all end here. The original is logged (with the upstream trace id) by
`sentence_for`; the person sees only the sentence."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

from bot.admission import NOT_HERE
from bot.errors import sentence_for
from cogs.sinks import NO_MENTIONS, tell_privately

log = logging.getLogger(__name__)


async def tell_failure(
    where: discord.Interaction[Any] | discord.Message, error: BaseException, *, doing: str
) -> None:
    """Tell whoever acted at `where` why it failed: privately for an interaction, as a reply
    to a message."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, app_commands.CheckFailure):
        sentence = NOT_HERE
    else:
        sentence = sentence_for(error, doing=doing, log=log)
    if isinstance(where, discord.Interaction):
        await tell_privately(where, f"⚠️ {sentence}")
        return
    try:
        await where.reply(f"⚠️ {sentence}", allowed_mentions=NO_MENTIONS, mention_author=False)
    except discord.HTTPException as exc:
        log.warning("Could not tell the person in channel %s: %s", where.channel.id, exc)

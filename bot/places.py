"""Where a request is made and answered: a channel, a thread, or a direct-message channel."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db.models import ConversationKind


@dataclass(frozen=True)
class Place:
    """Where a conversation lives, keyed by its Discord channel (or thread) id."""

    channel_id: int
    guild_id: int | None
    kind: ConversationKind
    opened_by_chat: bool = False
    opened_by: int | None = None  # who ran /chat

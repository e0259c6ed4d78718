"""Where a request is made and answered: a channel, a thread, or a direct-message channel."""

from __future__ import annotations

from dataclasses import dataclass

from bot.db.models import ConversationKind


@dataclass(frozen=True)
class Place:
    """Where a conversation lives, keyed by its Discord channel (or thread) id and, for a
    personal conversation, by its person."""

    channel_id: int
    guild_id: int | None
    kind: ConversationKind
    opened_by_chat: bool = False
    opened_by: int | None = None  # who ran /chat
    parent_id: int | None = None  # a thread's channel
    owner_id: int = 0  # the person of a personal conversation; 0: the place's shared one

    @property
    def settings_channel_id(self) -> int:
        """The channel whose settings apply here: a thread follows its parent."""
        if self.kind is ConversationKind.THREAD and self.parent_id is not None:
            return self.parent_id
        return self.channel_id

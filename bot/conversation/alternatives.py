"""Several answers to one question (/ask `alternatives`), paged through until one is kept,
the answer is regenerated, or a newer answer comes in its conversation.

They live in memory only: after a restart their buttons no longer work, and the answer first
shown (the one stored) stays.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from bot.delivery.reply import ReplySink, StreamingReply

# Sets kept for paging at once; the oldest go first (their first answer stays).
_KEPT_AT_MOST = 200


@dataclass
class Alternatives:
    key: str
    author_id: int
    texts: Sequence[str]
    notices: Sequence[str | None]  # by answer: why it ended early, if it did
    # Where they are shown: the reply is shown anew for every page.
    reply: StreamingReply
    sink: ReplySink
    answer_turn: int | None  # the stored answer (None: a private one, not stored)
    json_format: bool
    # Where the stored answer is: its conversation, and the key its answers wait in turn by.
    conversation_id: int
    in_order: Hashable
    # One press at a time: pages are shown in the order they were asked for, and nothing
    # retires them while a page is being shown.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def notice(self, page: int) -> str:
        """What shows under page `page` (from 0): "2/3", and why it ended early."""
        number = f"{page + 1}/{len(self.texts)}"
        reason = self.notices[page]
        return f"{number} · {reason}" if reason else number


class Shelf:
    """The sets of alternatives that can still be paged through, by key."""

    def __init__(self, limit: int = _KEPT_AT_MOST) -> None:
        self._limit = limit
        self._sets: OrderedDict[str, Alternatives] = OrderedDict()

    def add(self, alternatives: Alternatives) -> None:
        self._sets[alternatives.key] = alternatives
        while len(self._sets) > self._limit:
            self._sets.popitem(last=False)

    def get(self, key: str) -> Alternatives | None:
        return self._sets.get(key)

    def of_answer(self, answer_turn: int) -> Alternatives | None:
        """The set whose answer is stored as `answer_turn`, while it can still be paged."""
        return next(
            (found for found in self._sets.values() if found.answer_turn == answer_turn), None
        )

    def remove(self, key: str) -> None:
        self._sets.pop(key, None)

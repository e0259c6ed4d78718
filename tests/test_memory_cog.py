"""/recall's reply as Discord is sent it: within one message, people's words shown as they
wrote them, and only to those who may read the channel's history."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import discord
import pytest

from bot.admission import Request
from bot.db.models import ConversationKind, TurnStatus
from bot.db.repository import StoredTurn
from bot.errors import UserError
from bot.memory import Found
from bot.places import Place
from cogs.memory import MemoryCog

GUILD, CHANNEL = 1_234_567_890_123_456_789, 1_234_567_890_123_456_780


def turn(number: int, content: str, name: str = "N" * 32) -> StoredTurn:
    return StoredTurn(
        id=number,
        conversation_id=1,
        role="user",
        content=f"{name}: {content}",
        token_estimate=9,
        author_id=1,
        author_name=name,
        status=TurnStatus.COMPLETE,
        message_ids=[1_234_567_890_123_456_000 + number],
        created_at=datetime.now(UTC),
        images=[],
        model=None,
    )


class FoundMemory:
    """Finds the turns it is given."""

    def __init__(self, *turns: StoredTurn) -> None:
        self.turns, self.searched = turns, 0

    async def search(self, request: Request, text: str) -> tuple[Any, list[Found]]:
        self.searched += 1
        admitted = SimpleNamespace(place=Place(CHANNEL, GUILD, ConversationKind.CHANNEL))
        return admitted, [Found(t, 0.9) for t in self.turns]


async def recall(memory: FoundMemory, query: str, *, can_read: bool = True) -> str:
    shown: dict[str, Any] = {}

    async def defer(**_: Any) -> None: ...

    async def edit(**fields: Any) -> None:
        shown.update(fields)

    interaction = SimpleNamespace(
        response=SimpleNamespace(defer=defer),
        edit_original_response=edit,
        command=None,
        channel=SimpleNamespace(id=CHANNEL),
        guild_id=GUILD,
        user=SimpleNamespace(id=1),
        permissions=discord.Permissions(read_message_history=can_read),
    )
    cog = MemoryCog(memory)  # type: ignore[arg-type]
    await MemoryCog.recall.callback(cog, interaction, query)  # type: ignore[arg-type, call-arg]
    assert shown["allowed_mentions"].everyone is False
    return str(shown["content"])


async def test_five_long_turns_fit_one_message_with_their_links() -> None:
    content = await recall(FoundMemory(*(turn(n, "word " * 100) for n in range(5))), "q" * 100)
    assert len(content) <= 2000
    lines = content.splitlines()
    assert len(lines) == 6 and all("[message](https://discord.com/" in line for line in lines[1:])


async def test_quoted_words_neither_format_nor_ping() -> None:
    said = turn(1, "@everyone look at **this** <@123456789012345678>", name="__bob__")
    content = await recall(FoundMemory(said), "*look*")
    assert (
        "\\*\\*this\\*\\*" in content and "\\_\\_bob\\_\\_" in content and "\\*look\\*" in content
    )
    assert "@everyone" not in content and "<@123456789012345678>" not in content


async def test_someone_who_cannot_read_the_history_is_told_so() -> None:
    memory = FoundMemory(turn(1, "hello"))
    with pytest.raises(UserError, match="cannot read"):
        await recall(memory, "hello", can_read=False)
    assert memory.searched == 0  # nothing embedded, nothing paid

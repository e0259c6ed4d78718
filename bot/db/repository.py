"""Reading and writing conversations, turns and the bot's own state. One session per call,
never shared."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

from sqlalchemy import ColumnElement, Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.db.models import (
    BotState,
    Conversation,
    ConversationKind,
    Turn,
    TurnImage,
    TurnStatus,
    TurnVector,
)

# Turns are read newest first in pages this size until the token budget is spent.
_PAGE = 64


@dataclass(frozen=True)
class ConversationRef:
    id: int
    channel_id: int
    guild_id: int | None
    kind: ConversationKind
    opened_by_chat: bool
    opened_by: int | None
    owner_id: int = 0


@dataclass(frozen=True)
class ImageRef:
    """Where an image lives on Discord: enough to fetch a fresh URL for it later."""

    channel_id: int
    message_id: int
    attachment_id: int
    filename: str
    content_type: str | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class NewTurn:
    role: str
    content: str
    token_estimate: int
    author_id: int | None = None
    author_name: str | None = None
    status: TurnStatus = TurnStatus.COMPLETE
    message_ids: Sequence[int] = ()
    images: Sequence[ImageRef] = ()
    model: str | None = None


@dataclass(frozen=True)
class StoredTurn:
    id: int
    conversation_id: int
    role: str
    content: str
    token_estimate: int
    author_id: int | None
    author_name: str | None
    status: TurnStatus
    message_ids: list[int]
    model: str | None
    created_at: datetime
    images: list[ImageRef] = field(default_factory=list)


_Text = TypeVar("_Text", str, str | None)


def _storable(text: _Text) -> _Text:
    """Text as every database takes it: PostgreSQL refuses NUL characters in text, so they
    become U+FFFD, the character that stands for one that could not be kept."""
    return text.replace("\x00", "\ufffd") if text else text


def _conversation_ref(row: Conversation) -> ConversationRef:
    return ConversationRef(
        row.id,
        row.channel_id,
        row.guild_id,
        row.kind,
        row.opened_by_chat,
        row.opened_by,
        row.owner_id,
    )


def _conversation_of(channel_id: int, owner_id: int) -> Select[Conversation]:
    return select(Conversation).where(
        Conversation.channel_id == channel_id, Conversation.owner_id == owner_id
    )


def _image_ref(row: TurnImage) -> ImageRef:
    return ImageRef(
        row.channel_id,
        row.message_id,
        row.attachment_id,
        row.filename,
        row.content_type,
        row.prompt,
    )


def _stored_turn(row: Turn) -> StoredTurn:
    return StoredTurn(
        id=row.id,
        conversation_id=row.conversation_id,
        role=row.role,
        content=row.content,
        token_estimate=row.token_estimate,
        author_id=row.author_id,
        author_name=row.author_name,
        status=row.status,
        message_ids=list(row.message_ids),
        model=row.model,
        created_at=row.created_at,
        images=[_image_ref(image) for image in row.images],
    )


class TurnWatcher(Protocol):
    """Told of turns changed in this process, after the change is committed (long-term
    memory keeps their vectors)."""

    def answer_replaced(self, conversation_id: int, turn_id: int) -> None: ...

    def turns_deleted(self, conversation_id: int, turn_ids: Sequence[int]) -> None: ...

    def conversation_reset(self, conversation_id: int) -> None: ...


class ConversationStore:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self.watchers: list[TurnWatcher] = []

    async def find(self, channel_id: int, owner_id: int = 0) -> ConversationRef | None:
        """The channel's shared conversation, or with `owner_id` a person's own one there."""
        async with self._sessions() as session:
            row = await session.scalar(_conversation_of(channel_id, owner_id))
            return _conversation_ref(row) if row else None

    async def get_conversation(self, conversation_id: int) -> ConversationRef:
        async with self._sessions() as session:
            row = await session.get(Conversation, conversation_id)
            if row is None:
                raise LookupError(f"no conversation {conversation_id}")
            return _conversation_ref(row)

    async def open(
        self,
        channel_id: int,
        *,
        guild_id: int | None,
        kind: ConversationKind,
        opened_by_chat: bool = False,
        opened_by: int | None = None,
        owner_id: int = 0,
        parent_id: int | None = None,
    ) -> ConversationRef:
        """The conversation of this channel or thread (a person's own one: `owner_id`),
        created on first use."""
        found = await self.find(channel_id, owner_id)
        if found is not None:
            return found
        try:
            async with self._sessions.begin() as session:
                row = Conversation(
                    channel_id=channel_id,
                    guild_id=guild_id,
                    kind=kind,
                    opened_by_chat=opened_by_chat,
                    opened_by=opened_by,
                    owner_id=owner_id,
                    parent_id=parent_id,
                )
                session.add(row)
            return _conversation_ref(row)
        except IntegrityError:
            # Another process or task created it first: theirs is as good as ours.
            found = await self.find(channel_id, owner_id)
            assert found is not None
            return found

    async def append_turn(self, conversation_id: int, turn: NewTurn) -> int:
        async with self._sessions.begin() as session:
            row = Turn(
                conversation_id=conversation_id,
                role=turn.role,
                content=_storable(turn.content),
                token_estimate=turn.token_estimate,
                author_id=turn.author_id,
                author_name=_storable(turn.author_name),
                status=turn.status,
                message_ids=list(turn.message_ids),
                model=turn.model,
                images=[
                    TurnImage(
                        channel_id=image.channel_id,
                        message_id=image.message_id,
                        attachment_id=image.attachment_id,
                        filename=_storable(image.filename),
                        content_type=image.content_type,
                        prompt=_storable(image.prompt),
                    )
                    for image in turn.images
                ],
            )
            session.add(row)
            await session.flush()
            return row.id

    async def finish_turn(
        self,
        turn_id: int,
        *,
        content: str,
        token_estimate: int,
        status: TurnStatus,
        message_ids: Sequence[int],
        model: str | None = None,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Turn)
                .where(Turn.id == turn_id)
                .values(
                    content=_storable(content),
                    token_estimate=token_estimate,
                    status=status,
                    message_ids=list(message_ids),
                    model=model,
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                )
            )

    async def set_message_ids(self, turn_id: int, message_ids: Sequence[int]) -> None:
        async with self._sessions.begin() as session:
            await session.execute(
                update(Turn).where(Turn.id == turn_id).values(message_ids=list(message_ids))
            )

    async def replace_answer(self, turn_id: int, *, content: str, token_estimate: int) -> bool:
        """Another text for a finished answer (the alternative kept); False: it is gone. Its
        vector, of the text it had, goes: the new text is embedded in its place."""
        async with self._sessions.begin() as session:
            conversation_id = await session.scalar(
                update(Turn)
                .where(Turn.id == turn_id, Turn.role == "assistant")
                .values(content=_storable(content), token_estimate=token_estimate)
                .returning(Turn.conversation_id)
            )
            if conversation_id is None:
                return False
            await session.execute(delete(TurnVector).where(TurnVector.turn_id == turn_id))
        for watcher in self.watchers:
            watcher.answer_replaced(conversation_id, turn_id)
        return True

    async def get_turn(self, turn_id: int) -> StoredTurn | None:
        async with self._sessions() as session:
            row = await session.get(Turn, turn_id)
            return _stored_turn(row) if row else None

    async def get_turns(self, turn_ids: Sequence[int]) -> list[StoredTurn]:
        """The turns of `turn_ids` that still exist, oldest first."""
        async with self._sessions() as session:
            rows = await session.scalars(
                select(Turn).where(Turn.id.in_(turn_ids)).order_by(Turn.id)
            )
            return [_stored_turn(row) for row in rows]

    async def exchange_of(self, turn: StoredTurn) -> list[StoredTurn]:
        """The question and its answer that `turn` is one of, oldest first: the turn next to
        it, when that is the other half."""
        query = select(Turn).where(Turn.conversation_id == turn.conversation_id).limit(1)
        if turn.role == "user":
            query = query.where(Turn.id > turn.id).order_by(Turn.id)
        else:
            query = query.where(Turn.id < turn.id).order_by(Turn.id.desc())
        async with self._sessions() as session:
            other = await session.scalar(query)
            if other is None or other.role == turn.role:
                return [turn]
            return sorted([turn, _stored_turn(other)], key=lambda t: t.id)

    async def delete_turns(self, turn_ids: Sequence[int]) -> None:
        await self._delete(Turn.id.in_(turn_ids))

    async def delete_older(self, before: datetime, *, limit: int) -> int:
        """Delete up to `limit` of the oldest turns made before `before`, with their images'
        references and vectors, in one short transaction; never one being answered. Returns
        how many went (another process deleting the same ones meanwhile: fewer)."""
        oldest = (
            select(Turn.id)
            .where(Turn.created_at < before, Turn.status != TurnStatus.IN_PROGRESS)
            .order_by(Turn.created_at)
            .limit(limit)
        )
        return await self._delete(Turn.id.in_(oldest.scalar_subquery()))

    async def _delete(self, which: ColumnElement[bool]) -> int:
        """Delete turns (their images and vectors go by cascade), then tell the watchers."""
        async with self._sessions.begin() as session:
            deleted = await session.execute(
                delete(Turn).where(which).returning(Turn.conversation_id, Turn.id)
            )
            by_conversation: dict[int, list[int]] = {}
            for conversation_id, turn_id in deleted:
                by_conversation.setdefault(conversation_id, []).append(turn_id)
        for watcher in self.watchers:
            for conversation_id, ids in by_conversation.items():
                watcher.turns_deleted(conversation_id, ids)
        return sum(map(len, by_conversation.values()))

    async def newest_turns(
        self,
        conversation_id: int,
        *,
        token_budget: int,
        max_turns: int | None = None,
        before_turn_id: int | None = None,
    ) -> list[StoredTurn]:
        """The newest whole turns that fit the budget, oldest first.

        Walks the (conversation_id, id) index backwards a page at a time, so the cost depends on
        what is returned, not on how long the conversation is.
        """
        chosen: list[StoredTurn] = []
        spent = 0
        cursor = before_turn_id
        async with self._sessions() as session:
            while True:
                query = (
                    select(Turn)
                    .where(Turn.conversation_id == conversation_id)
                    .where(Turn.status != TurnStatus.IN_PROGRESS)
                    .order_by(Turn.id.desc())
                    .limit(_PAGE)
                )
                if cursor is not None:
                    query = query.where(Turn.id < cursor)
                page = (await session.scalars(query)).all()
                for row in page:
                    if spent + row.token_estimate > token_budget:
                        return chosen[::-1]
                    if max_turns is not None and len(chosen) >= max_turns:
                        return chosen[::-1]
                    spent += row.token_estimate
                    chosen.append(_stored_turn(row))
                if len(page) < _PAGE:
                    return chosen[::-1]
                cursor = page[-1].id

    async def newest_image(self, conversation_id: int) -> ImageRef | None:
        async with self._sessions() as session:
            row = await session.scalar(
                select(TurnImage)
                .join(Turn)
                .where(Turn.conversation_id == conversation_id)
                .order_by(TurnImage.id.desc())
                .limit(1)
            )
            return _image_ref(row) if row else None

    async def image_of_message(self, message_id: int) -> tuple[ImageRef, StoredTurn] | None:
        """The first image a message shows, with the turn that showed it."""
        async with self._sessions() as session:
            image = await session.scalar(
                select(TurnImage)
                .where(TurnImage.message_id == message_id)
                .order_by(TurnImage.id)
                .limit(1)
            )
            if image is None:
                return None
            turn = await session.get(Turn, image.turn_id)
            assert turn is not None
            return _image_ref(image), _stored_turn(turn)

    async def reset(self, channel_id: int, owner_id: int = 0) -> int:
        """Forget a conversation's turns. Returns how many were forgotten."""
        async with self._sessions.begin() as session:
            conversation = await session.scalar(_conversation_of(channel_id, owner_id))
            conversation_id = conversation.id if conversation else None
            if conversation_id is None:
                return 0
            result = await session.execute(
                delete(Turn).where(Turn.conversation_id == conversation_id)
            )
        for watcher in self.watchers:
            watcher.conversation_reset(conversation_id)
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    async def interrupt_unfinished(
        self, owns: Callable[[int | None], bool] = lambda _guild_id: True
    ) -> list[tuple[StoredTurn, int]]:
        """Mark answers left in progress by a crash as interrupted, in the servers (by id,
        None for direct messages) this process `owns`; returns them with their channel ids."""
        async with self._sessions.begin() as session:
            rows = (
                await session.execute(
                    select(Turn, Conversation.channel_id, Conversation.guild_id)
                    .join(Conversation)
                    .where(Turn.status == TurnStatus.IN_PROGRESS)
                )
            ).all()
            found = []
            for turn, channel_id, guild_id in rows:
                if owns(guild_id):
                    turn.status = TurnStatus.INTERRUPTED
                    found.append((_stored_turn(turn), channel_id))
            return found


class StateStore:
    """Small named values shared by every process of the bot."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, key: str) -> str | None:
        async with self._sessions() as session:
            row = await session.get(BotState, key)
            return row.value if row else None

    async def set(self, key: str, value: str) -> None:
        try:
            async with self._sessions.begin() as session:
                await session.merge(BotState(key=key, value=value))
        except IntegrityError:
            # Another process inserted the key at the same moment: write over theirs.
            async with self._sessions.begin() as session:
                await session.merge(BotState(key=key, value=value))

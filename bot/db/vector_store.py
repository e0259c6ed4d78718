"""Where turns' embeddings are kept (table turn_vectors), and, with pgvector, searched.

Vectors are float32 bytes, unit length, in every database. Where PostgreSQL has the pgvector
extension (revision 0005 creates it when it can), each row also holds them in an `embedding`
column with an HNSW index, and a search is one indexed query; otherwise `bot.memory` searches
the bytes itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, and_, bindparam, exists, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from bot.db.models import Conversation, ConversationKind, Turn, TurnStatus, TurnVector

# Turns not embedded yet are read this many at a time.
PAGE = 64


@dataclass(frozen=True)
class Unembedded:
    """A finished turn without a vector of the current model, with where it was said."""

    turn_id: int
    conversation_id: int
    role: str
    content: str
    author_name: str | None
    # Who asked: the author of a question, or of the question an answer answers.
    asker_id: int | None
    channel_id: int
    guild_id: int | None
    kind: ConversationKind
    parent_id: int | None


@dataclass(frozen=True)
class NewVector:
    turn_id: int
    conversation_id: int
    vector: bytes
    content: str  # the turn's text the vector was made of


class VectorStore:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], *, model: str, dimensions: int
    ) -> None:
        self._sessions = sessions
        self.model = model
        self.dimensions = dimensions
        self.pgvector = False  # known after `prepare`
        self.iterative_scan = False  # pgvector 0.8 on: a search walks its index past others'

    async def prepare(self) -> None:
        """Find out whether the database searches vectors itself (pgvector's column is there)."""
        async with self._sessions() as session:
            if session.get_bind().dialect.name != "postgresql":
                return
            found = await session.scalar(
                text(
                    "SELECT 1 FROM information_schema.columns "
                    "WHERE table_name = 'turn_vectors' AND column_name = 'embedding' "
                    "AND table_schema = current_schema()"
                )
            )
            self.pgvector = found is not None
            if self.pgvector:
                version = await session.scalar(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
                self.iterative_scan = _version(str(version)) >= (0, 8)

    async def add(self, vectors: Sequence[NewVector]) -> list[int]:
        """Store vectors, in place of any of another model (a turn another process embedded
        meanwhile keeps either: they are the same); returns the turns stored. A turn deleted
        since it was read (Regenerate, /forget, /reset), or whose text changed (another
        alternative kept), is left out, not the whole batch."""
        if not vectors:
            return []
        turn_ids = [v.turn_id for v in vectors]
        async with self._sessions.begin() as session:
            postgres = session.get_bind().dialect.name == "postgresql"
            insert = postgresql.insert if postgres else sqlite.insert
            # Row by row from the turn itself: a turn gone inserts nothing.
            from_turn = select(
                Turn.id,
                Turn.conversation_id,
                bindparam("model", self.model, type_=String),
                bindparam("dimensions", self.dimensions, type_=Integer),
                bindparam("vector", type_=LargeBinary),
            ).where(Turn.id == bindparam("turn_id"), Turn.content == bindparam("content"))
            statement = insert(TurnVector).from_select(
                ["turn_id", "conversation_id", "model", "dimensions", "vector"], from_turn
            )
            excluded = statement.excluded
            # On the connection: the session's bulk insert takes values, not a select.
            connection = await session.connection()
            await connection.execute(
                statement.on_conflict_do_update(
                    index_elements=["turn_id"],
                    set_={
                        "model": excluded.model,
                        "dimensions": excluded.dimensions,
                        "vector": excluded.vector,
                    },
                ),
                [{"turn_id": v.turn_id, "vector": v.vector, "content": v.content} for v in vectors],
            )
            stored = set(
                await session.scalars(
                    select(TurnVector.turn_id).where(TurnVector.turn_id.in_(turn_ids))
                )
            )
            if self.pgvector and stored:
                # pgvector reads its text form, '[0.1,0.2,...]'.
                await session.execute(
                    text(
                        "UPDATE turn_vectors "
                        "SET embedding = CAST(CAST(:literal AS text) AS vector) "
                        "WHERE turn_id = :turn_id"
                    ),
                    [
                        {"turn_id": v.turn_id, "literal": vector_literal(v.vector)}
                        for v in vectors
                        if v.turn_id in stored
                    ],
                )
        return [turn_id for turn_id in turn_ids if turn_id in stored]

    async def unembedded(
        self, *, after: int = 0, conversation_id: int | None = None
    ) -> list[Unembedded]:
        """The next PAGE finished turns with text and no vector of the current model, after
        turn `after`, in turn order: of one conversation, or of all."""
        asked_before = (
            select(Turn.author_id)
            .where(
                Turn.conversation_id == _turn.conversation_id,
                Turn.id < _turn.id,
                Turn.role == "user",
            )
            .order_by(Turn.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = (
            select(
                _turn.id,
                _turn.conversation_id,
                _turn.role,
                _turn.content,
                _turn.author_name,
                _turn.author_id,
                asked_before,
                Conversation.channel_id,
                Conversation.guild_id,
                Conversation.kind,
                Conversation.parent_id,
            )
            .join(Conversation, Conversation.id == _turn.conversation_id)
            .where(
                _turn.status == TurnStatus.COMPLETE,
                _turn.content != "",
                ~exists().where(
                    and_(
                        TurnVector.turn_id == _turn.id,
                        TurnVector.model == self.model,
                        TurnVector.dimensions == self.dimensions,
                    )
                ),
            )
            .order_by(_turn.id)
        )
        if conversation_id is not None:
            query = query.where(_turn.conversation_id == conversation_id)
        query = query.where(_turn.id > after).limit(PAGE)
        async with self._sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            Unembedded(
                turn_id=row[0],
                conversation_id=row[1],
                role=row[2],
                content=row[3],
                author_name=row[4],
                asker_id=row[5] if row[2] == "user" else row[6],
                channel_id=row[7],
                guild_id=row[8],
                kind=row[9],
                parent_id=row[10],
            )
            for row in rows
        ]

    async def of_conversation(
        self, conversation_id: int, *, after: int = 0
    ) -> Sequence[tuple[int, bytes]]:
        """A conversation's vectors of the current model, from turn `after` on."""
        values = (conversation_id, after, self.model, self.dimensions)
        async with self._sessions() as session:
            connection = await session.connection()
            # 100,000 rows (100 MB) read straight from the driver take a fraction of the time
            # they take through SQLAlchemy's rows (a third on PostgreSQL): this is the wait of
            # a conversation's first search.
            driver: Any = (await connection.get_raw_connection()).driver_connection
            if connection.dialect.name == "sqlite":
                rows = await driver.execute_fetchall(
                    _OF_CONVERSATION.format("?", "?", "?", "?"), values
                )
            else:
                rows = await driver.fetch(_OF_CONVERSATION.format("$1", "$2", "$3", "$4"), *values)
            return list(rows)

    async def newest(self, conversation_id: int) -> int:
        """The newest turn of the conversation that has a vector (0: none)."""
        query = select(func.max(TurnVector.turn_id)).where(
            TurnVector.conversation_id == conversation_id
        )
        async with self._sessions() as session:
            return int(await session.scalar(query) or 0)

    async def any_before(self, conversation_id: int, turn_id: int) -> bool:
        """Whether the conversation has a vector of a turn older than `turn_id`."""
        query = select(TurnVector.turn_id).where(
            TurnVector.conversation_id == conversation_id,
            TurnVector.turn_id < turn_id,
            TurnVector.model == self.model,
            TurnVector.dimensions == self.dimensions,
        )
        async with self._sessions() as session:
            return await session.scalar(query.limit(1)) is not None

    async def nearest(
        self, conversation_id: int, vector: bytes, *, before: int | None, limit: int
    ) -> list[tuple[int, float]]:
        """With pgvector: the `limit` turns most similar to `vector` (turn id, cosine
        similarity), older than turn `before` if given, most similar first."""
        assert self.pgvector
        sized = f"vector({self.dimensions})"  # as the index is made: see revision 0005
        distance = f"embedding::{sized} <=> CAST(CAST(:query AS text) AS {sized})"
        query = text(
            f"SELECT turn_id, 1 - ({distance}) AS similarity FROM turn_vectors "
            "WHERE conversation_id = :conversation_id AND model = :model "
            "AND dimensions = :dimensions AND turn_id < :before "
            f"ORDER BY {distance} LIMIT :limit"
        ).bindparams(bindparam("limit"))
        async with self._sessions.begin() as session:
            if self.iterative_scan:
                # Keep walking the index past other conversations' vectors (older pgvector
                # knows no such setting, and stops after ef_search of them).
                await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
            rows = await session.execute(
                query,
                {
                    "query": vector_literal(vector),
                    "conversation_id": conversation_id,
                    "model": self.model,
                    "dimensions": self.dimensions,
                    "before": before if before is not None else 2**62,
                    "limit": limit,
                },
            )
            found = [(int(turn_id), float(similarity)) for turn_id, similarity in rows]
        return sorted(found, key=lambda match: -match[1])


_OF_CONVERSATION = (
    "SELECT turn_id, vector FROM turn_vectors WHERE conversation_id = {} AND turn_id > {} "
    "AND model = {} AND dimensions = {}"
)
_turn = aliased(Turn)  # the turn embedded, beside the questions before it


def _version(text_: str) -> tuple[int, ...]:
    """'0.8.6' as (0, 8, 6)."""
    return tuple(int(part) for part in re.findall(r"\d+", text_))


def vector_literal(vector: bytes) -> str:
    import numpy as np  # heavy: only where vectors are

    values = np.frombuffer(vector, dtype="<f4")
    return "[" + ",".join(f"{x:.7g}" for x in values.tolist()) + "]"

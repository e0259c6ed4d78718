"""The database schema. Every change here comes with an Alembic revision in `migrations/`."""

from __future__ import annotations

import enum
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a real 64-bit key.
Id = BigInteger().with_variant(Integer(), "sqlite")

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _enum(enum_type: type[enum.StrEnum]) -> Enum:
    """Stored as its plain value in a short string column: portable, and readable in SQL."""
    return Enum(
        enum_type, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
    )


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[int]: JSON}


class ConversationKind(enum.StrEnum):
    CHANNEL = "channel"
    THREAD = "thread"
    DIRECT = "direct"


class TurnStatus(enum.StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    STOPPED = "stopped"  # someone pressed Stop: the partial text is kept
    FAILED = "failed"  # the API failed mid-answer: the partial text is kept
    INTERRUPTED = "interrupted"  # the bot stopped or crashed while answering


class Conversation(Base):
    """One channel, thread or direct-message channel, keyed by its Discord id."""

    __tablename__ = "conversations"
    __table_args__ = (
        UniqueConstraint("channel_id", "owner_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    # With `history personal`, each person has a conversation of their own in a channel;
    # 0 is the channel's shared one.
    owner_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # A thread's channel: deleting the channel drops its threads' conversations too.
    parent_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    kind: Mapped[ConversationKind] = mapped_column(_enum(ConversationKind))
    # A thread opened by /chat answers every message without a mention.
    opened_by_chat: Mapped[bool] = mapped_column(default=False)
    # Who ran /chat: they may make the thread forget. Not a turn's author, since turns go.
    opened_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    turns: Mapped[list[Turn]] = relationship(
        back_populates="conversation", cascade="all, delete-orphan", passive_deletes=True
    )


class Turn(Base):
    """One message in a conversation: a person's question or the bot's answer."""

    __tablename__ = "turns"
    __table_args__ = (
        # The newest turns of a conversation are read by walking this index backwards.
        Index("ix_turns_conversation_id_id", "conversation_id", "id"),
        # Buttons carry turn ids: an id must never come back for another turn after a delete.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(16))  # "user" or "assistant"
    author_id: Mapped[int | None] = mapped_column(BigInteger)
    author_name: Mapped[str | None] = mapped_column(String(100))
    content: Mapped[str] = mapped_column(Text, default="")
    # Estimated tokens of this turn, stored so trimming history never recounts old turns.
    token_estimate: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[TurnStatus] = mapped_column(
        _enum(TurnStatus),
        default=TurnStatus.COMPLETE,
    )
    # The Discord messages that show this turn (an answer may span several).
    message_ids: Mapped[list[int]] = mapped_column(default=list)
    model: Mapped[str | None] = mapped_column(String(100))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    # Indexed for HISTORY_RETENTION_DAYS, which deletes the oldest turns a batch at a time.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )

    conversation: Mapped[Conversation] = relationship(back_populates="turns")
    images: Mapped[list[TurnImage]] = relationship(
        back_populates="turn",
        cascade="all, delete-orphan",
        passive_deletes=True,
        lazy="selectin",
        order_by="TurnImage.id",
    )


class TurnImage(Base):
    """An image shown in a turn. Discord's attachment URLs expire, so we keep the ids that
    let us fetch the message again and read a fresh URL."""

    __tablename__ = "turn_images"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("turns.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    # Regenerating images finds their prompt through the message that shows them.
    message_id: Mapped[int] = mapped_column(BigInteger, index=True)
    attachment_id: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(100))
    prompt: Mapped[str | None] = mapped_column(Text)  # set for images the bot made

    turn: Mapped[Turn] = relationship(back_populates="images")


class TurnVector(Base):
    """A finished turn's embedding, for recalling it when it no longer fits the history.

    With pgvector, PostgreSQL also holds it in an `embedding` column of type vector, indexed
    (revision 0005): that column is not mapped here, since it exists only where the extension
    does (see `bot.db.vector_store`)."""

    __tablename__ = "turn_vectors"
    __table_args__ = (
        # A conversation's vectors are read, and searched, in turn order.
        Index("ix_turn_vectors_conversation_id_turn_id", "conversation_id", "turn_id"),
    )

    # Deleting a turn (Regenerate, /forget), a conversation (/reset, a deleted channel) drops it.
    turn_id: Mapped[int] = mapped_column(
        Id, ForeignKey("turns.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    conversation_id: Mapped[int] = mapped_column(ForeignKey("conversations.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(100))
    dimensions: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, unit length


def mapped_here(
    _object: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Alembic's `include_object`: whether to compare a schema object with these models.
    pgvector's column and index (see TurnVector) exist only where the extension does."""
    if not reflected or compare_to is not None or name is None:
        return True
    vector_column = type_ == "column" and name == "embedding"
    return not (vector_column or name.startswith("ix_turn_vectors_embedding"))


class ScopeSettings:
    """What an admin set with /config for a server or a channel; None means "inherit"."""

    model: Mapped[str | None] = mapped_column(String(100))  # for chat
    image_model: Mapped[str | None] = mapped_column(String(100))
    system_prompt: Mapped[str | None] = mapped_column(Text)
    temperature: Mapped[float | None] = mapped_column(Float)
    max_answer_tokens: Mapped[int | None] = mapped_column(Integer)
    reply_mode: Mapped[str | None] = mapped_column(String(16))
    history: Mapped[str | None] = mapped_column(String(16))
    # Role ids allowed to use the bot; an empty list: everyone.
    roles: Mapped[list[int] | None] = mapped_column()
    memory: Mapped[str | None] = mapped_column(String(16))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class GuildSettings(ScopeSettings, Base):
    __tablename__ = "guild_settings"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # Changed with every change to the server's settings or its channels', so that every
    # process can tell with one read whether what it holds is current. Random, never reused.
    version: Mapped[str] = mapped_column(String(32))


class ChannelSettings(ScopeSettings, Base):
    __tablename__ = "channel_settings"

    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)


class ConfigChange(Base):
    """One change made with /config: the server's audit log."""

    __tablename__ = "config_changes"
    __table_args__ = (
        Index("ix_config_changes_guild_id_id", "guild_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)  # None: the server's setting
    user_id: Mapped[int] = mapped_column(BigInteger)
    setting: Mapped[str] = mapped_column(String(32))
    # As shown to people; None: not set here (inherited).
    old_value: Mapped[str | None] = mapped_column(Text)
    new_value: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class BotState(Base):
    """Small facts the bot keeps between starts, shared by all its processes."""

    __tablename__ = "bot_state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class UsageKind(enum.StrEnum):
    CHAT = "chat"
    IMAGE = "image"
    EDIT = "edit"
    EMBEDDING = "embedding"  # turns embedded for long-term memory, and questions recalling


class UsageRecord(Base):
    """What one request cost, as the API reported it."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_guild_id_created_at", "guild_id", "created_at"),
        Index("ix_usage_records_user_id_created_at", "user_id", "created_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[UsageKind] = mapped_column(_enum(UsageKind))
    model: Mapped[str] = mapped_column(String(100))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsageDay(Base):
    """Usage summed by day, so that a period's total reads a few rows, not every request: per
    person, and for the whole server (user 0), by model."""

    __tablename__ = "usage_days"
    # A server's days across all its people (the top of /usage, whose key leads by person).
    __table_args__ = (Index("ix_usage_days_guild_id_day", "guild_id", "day"),)

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 0: direct messages
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # 0: everyone
    day: Mapped[date] = mapped_column(Date, primary_key=True)  # in UTC
    model: Mapped[str] = mapped_column(String(100), primary_key=True)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # prompt plus completion
    images: Mapped[int] = mapped_column(Integer, default=0)
    requests: Mapped[int] = mapped_column(Integer, default=0)


class BudgetScope(enum.StrEnum):
    PERSON = "person"  # a cap for each person (of a role, or one member)
    SERVER = "server"  # the whole server's total


class Period(enum.StrEnum):
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class Budget(Base):
    """A cap set with /budget. A person's: for everyone (no role, no user), for members of a
    role, or for one member; 0 stands for "none" so that the unique key holds."""

    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("guild_id", "scope", "role_id", "user_id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    scope: Mapped[BudgetScope] = mapped_column(_enum(BudgetScope))
    role_id: Mapped[int] = mapped_column(BigInteger, default=0)
    user_id: Mapped[int] = mapped_column(BigInteger, default=0)
    period: Mapped[Period] = mapped_column(_enum(Period))
    tokens: Mapped[int | None] = mapped_column(BigInteger)  # None: no cap
    images: Mapped[int | None] = mapped_column(Integer)
    updated_by: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )


class Reservation(Base):
    """What a request may still cost while it runs; replaced by its usage when it ends. One
    left by a crashed process stops counting when it expires."""

    __tablename__ = "budget_reservations"
    __table_args__ = (
        Index("ix_budget_reservations_guild_id_expires_at", "guild_id", "expires_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    images: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

"""turn vectors for long-term memory (pgvector where available), the memory setting

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# The HNSW index covers vectors of the default size (EMBEDDING_DIMENSIONS): an index needs a
# fixed size, so vectors of another size are searched without it.
INDEXED_DIMENSIONS = 256
EMBEDDING_INDEX = (
    f"CREATE INDEX ix_turn_vectors_embedding_{INDEXED_DIMENSIONS} ON turn_vectors "
    f"USING hnsw ((embedding::vector({INDEXED_DIMENSIONS})) vector_cosine_ops) "
    f"WHERE dimensions = {INDEXED_DIMENSIONS}"
)


def upgrade() -> None:
    op.create_table(
        "turn_vectors",
        sa.Column("turn_id", Id, autoincrement=False, nullable=False),
        sa.Column("conversation_id", Id, nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name=op.f("fk_turn_vectors_conversation_id_conversations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["turn_id"],
            ["turns.id"],
            name=op.f("fk_turn_vectors_turn_id_turns"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("turn_id", name=op.f("pk_turn_vectors")),
    )
    with op.batch_alter_table("turn_vectors", schema=None) as batch_op:
        batch_op.create_index(
            "ix_turn_vectors_conversation_id_turn_id", ["conversation_id", "turn_id"], unique=False
        )
    _add_pgvector()
    for table in ("guild_settings", "channel_settings"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("memory", sa.String(length=16), nullable=True))


def _add_pgvector() -> None:
    """pgvector's column and index, where PostgreSQL has the extension or may create it.
    Without them, vectors are searched in the bot's memory instead."""
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    offered = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
    ).first()
    if offered is None:
        log.info("PostgreSQL has no pgvector extension: memory is searched by the bot itself")
        return
    try:
        # All in a savepoint: any refusal (a user who may not create extensions, the extension
        # in a schema off the search path, a pgvector without HNSW) leaves the rest.
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            bind.execute(sa.text("ALTER TABLE turn_vectors ADD COLUMN embedding vector"))
            bind.execute(sa.text(EMBEDDING_INDEX))
    except sa.exc.DBAPIError as exc:
        log.warning("Could not use pgvector (%s): memory is searched by the bot", exc.orig)


def downgrade() -> None:
    for table in ("channel_settings", "guild_settings"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("memory")
    with op.batch_alter_table("turn_vectors", schema=None) as batch_op:
        batch_op.drop_index("ix_turn_vectors_conversation_id_turn_id")
    op.drop_table("turn_vectors")
    # The older schema knows no such kind; what it cost still counts, as chat.
    op.execute(sa.text("UPDATE usage_records SET kind = 'chat' WHERE kind = 'embedding'"))

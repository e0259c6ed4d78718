"""server and channel settings from /config, their audit log, personal conversations

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_SETTINGS = (
    ("max_answer_tokens", sa.Integer()),
    ("reply_mode", sa.String(length=16)),
    ("history", sa.String(length=16)),
    ("roles", sa.JSON()),
)


def upgrade() -> None:
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.alter_column("chat_model", new_column_name="model")
        for name, type_ in _NEW_SETTINGS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.add_column(sa.Column("version", sa.String(length=32), nullable=True))
    # Rows left by a downgrade get a version of their own; new ones always carry one.
    op.execute(sa.text("UPDATE guild_settings SET version = 'migrated'"))
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.alter_column("version", existing_type=sa.String(length=32), nullable=False)
    with op.batch_alter_table("channel_settings", schema=None) as batch_op:
        batch_op.alter_column("chat_model", new_column_name="model")
        for name, type_ in _NEW_SETTINGS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))
        batch_op.drop_column("enabled")
    # A channel's settings belong to a server (nothing wrote them before this revision).
    op.execute(sa.text("DELETE FROM channel_settings WHERE guild_id IS NULL"))
    with op.batch_alter_table("channel_settings", schema=None) as batch_op:
        batch_op.alter_column("guild_id", existing_type=sa.BigInteger(), nullable=False)

    op.create_table(
        "config_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("channel_id", sa.BigInteger(), nullable=True),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("setting", sa.String(length=32), nullable=False),
        sa.Column("old_value", sa.Text(), nullable=True),
        sa.Column("new_value", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_config_changes")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("config_changes", schema=None) as batch_op:
        batch_op.create_index("ix_config_changes_guild_id_id", ["guild_id", "id"], unique=False)

    # Existing conversations are the channels' shared ones (owner 0).
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("owner_id", sa.BigInteger(), server_default="0", nullable=False)
        )
        # Threads known before this revision have none: their channel is not known.
        batch_op.add_column(sa.Column("parent_id", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_conversations_parent_id", ["parent_id"], unique=False)
        batch_op.drop_constraint("uq_conversations_channel_id", type_="unique")
        batch_op.create_unique_constraint(
            "uq_conversations_channel_id_owner_id", ["channel_id", "owner_id"]
        )


def downgrade() -> None:
    # Personal conversations have no place in the older schema.
    op.execute(sa.text("DELETE FROM conversations WHERE owner_id <> 0"))
    with op.batch_alter_table("conversations", schema=None) as batch_op:
        batch_op.drop_constraint("uq_conversations_channel_id_owner_id", type_="unique")
        batch_op.create_unique_constraint("uq_conversations_channel_id", ["channel_id"])
        batch_op.drop_index("ix_conversations_parent_id")
        batch_op.drop_column("parent_id")
        batch_op.drop_column("owner_id")

    with op.batch_alter_table("config_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_config_changes_guild_id_id")
    op.drop_table("config_changes")

    with op.batch_alter_table("channel_settings", schema=None) as batch_op:
        batch_op.alter_column("guild_id", existing_type=sa.BigInteger(), nullable=True)
        batch_op.add_column(sa.Column("enabled", sa.Boolean(), nullable=True))
        for name, _ in reversed(_NEW_SETTINGS):
            batch_op.drop_column(name)
        batch_op.alter_column("model", new_column_name="chat_model")
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("version")
        for name, _ in reversed(_NEW_SETTINGS):
            batch_op.drop_column(name)
        batch_op.alter_column("model", new_column_name="chat_model")

"""budgets, their reservations, and usage summed by day

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "usage_days",
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(length=100), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("guild_id", "user_id", "day", "model", name=op.f("pk_usage_days")),
    )
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.create_index("ix_usage_days_guild_id_day", ["guild_id", "day"], unique=False)
    op.create_table(
        "budgets",
        sa.Column("id", Id, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "scope",
            sa.Enum("person", "server", name="budgetscope", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("role_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "period",
            sa.Enum("day", "week", "month", name="period", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("tokens", sa.BigInteger(), nullable=True),
        sa.Column("images", sa.Integer(), nullable=True),
        sa.Column("updated_by", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budgets")),
        sa.UniqueConstraint(
            "guild_id",
            "scope",
            "role_id",
            "user_id",
            name="uq_budgets_guild_id_scope_role_id_user_id",
        ),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", Id, nullable=False),
        sa.Column("guild_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_reservations")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_budget_reservations_guild_id_expires_at", ["guild_id", "expires_at"], unique=False
        )

    # What was recorded before counts too: summed by day, per person and for the server.
    day = (
        "date(created_at)"
        if op.get_bind().dialect.name == "sqlite"
        else "CAST(created_at AT TIME ZONE 'UTC' AS date)"
    )
    for user, grouped in (("user_id", ", user_id"), ("0", "")):
        op.execute(
            sa.text(
                "INSERT INTO usage_days (guild_id, user_id, day, model, tokens, images, requests) "
                f"SELECT COALESCE(guild_id, 0), {user}, {day}, model, "
                "SUM(prompt_tokens + completion_tokens), SUM(images), COUNT(*) "
                f"FROM usage_records GROUP BY COALESCE(guild_id, 0){grouped}, {day}, model"
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.drop_index("ix_budget_reservations_guild_id_expires_at")
    op.drop_table("budget_reservations")
    op.drop_table("budgets")
    with op.batch_alter_table("usage_days", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_days_guild_id_day")
    op.drop_table("usage_days")

"""daily roll-ups of the KPI report per team and agent: the rows, the days built, and the days to
(re)build; every day of the existing history is marked to be built

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from shared.db.migrations.backfill import mark_every_day_dirty

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_daily",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("conversations", sa.Integer(), nullable=False),
        sa.Column("kept", sa.Integer(), nullable=False),
        sa.Column("breached", sa.Integer(), nullable=False),
        sa.Column("closed", sa.Integer(), nullable=False),
        sa.Column("reopened", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kpi_daily_day", "kpi_daily", ["day"], unique=False)
    op.create_index("ix_kpi_daily_team_day", "kpi_daily", ["team_id", "day"], unique=False)
    op.create_index("ix_kpi_daily_owner_day", "kpi_daily", ["owner_id", "day"], unique=False)
    op.create_table(
        "kpi_days",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("stable_after", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("day"),
    )
    op.create_table(
        "kpi_dirty_days",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("utc_day", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kpi_dirty_days_utc_day", "kpi_dirty_days", ["utc_day"], unique=False)
    # The backfill: every day of the history is marked to be built.
    mark_every_day_dirty()


def downgrade() -> None:
    op.drop_index("ix_kpi_dirty_days_utc_day", table_name="kpi_dirty_days")
    op.drop_table("kpi_dirty_days")
    op.drop_table("kpi_days")
    op.drop_index("ix_kpi_daily_owner_day", table_name="kpi_daily")
    op.drop_index("ix_kpi_daily_team_day", table_name="kpi_daily")
    op.drop_index("ix_kpi_daily_day", table_name="kpi_daily")
    op.drop_table("kpi_daily")

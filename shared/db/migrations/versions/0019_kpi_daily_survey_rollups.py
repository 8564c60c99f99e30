"""daily roll-ups of the KPI report's surveys per team and agent, by the day their conversation
opened and the day they were sent; every day of the existing history is marked to be rebuilt

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

from shared.db.migrations.backfill import mark_every_day_dirty

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "kpi_daily_surveys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("sent_day", sa.Date(), nullable=False),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("answered", sa.Integer(), nullable=False),
        sa.Column("csat_answers", sa.Integer(), nullable=False),
        sa.Column("csat_good", sa.Integer(), nullable=False),
        sa.Column("nps_answers", sa.Integer(), nullable=False),
        sa.Column("promoters", sa.Integer(), nullable=False),
        sa.Column("detractors", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_kpi_daily_surveys_day", "kpi_daily_surveys", ["day"], unique=False)
    op.create_index("ix_kpi_daily_surveys_team_day", "kpi_daily_surveys", ["team_id", "day"], unique=False)
    op.create_index("ix_kpi_daily_surveys_owner_day", "kpi_daily_surveys", ["owner_id", "day"], unique=False)
    # The days built by 0017's job have no survey rows yet: every day is marked again (the backfill).
    mark_every_day_dirty()


def downgrade() -> None:
    op.drop_index("ix_kpi_daily_surveys_owner_day", table_name="kpi_daily_surveys")
    op.drop_index("ix_kpi_daily_surveys_team_day", table_name="kpi_daily_surveys")
    op.drop_index("ix_kpi_daily_surveys_day", table_name="kpi_daily_surveys")
    op.drop_table("kpi_daily_surveys")

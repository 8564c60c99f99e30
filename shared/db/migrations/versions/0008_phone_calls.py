"""phone calls: answered and ended per CallSid, so a call's end is a missed call only when nobody took it

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phone_calls",
        # The primary key is the lock: the "answered" and "ended" notices of one call both insert it
        # first (ON CONFLICT), so the second waits for the first to commit.
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_status", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("call_sid"),
    )


def downgrade() -> None:
    op.drop_table("phone_calls")

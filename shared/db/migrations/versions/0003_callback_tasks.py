"""phone calls: call-back tasks, one per voicemail or missed call (unique CallSid)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "callback_tasks",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.PrimaryKeyConstraint("id"),
        # The idempotency key: every callback of one call, delivered any number of times, is one task.
        sa.UniqueConstraint("call_sid", name="uq_callback_tasks_call_sid"),
    )
    with op.batch_alter_table("callback_tasks") as batch:
        batch.create_index("ix_callback_tasks_conversation_id", ["conversation_id"], unique=False)
        # An agent's open call-backs: WHERE owner_id = ? AND done_at IS NULL.
        batch.create_index("ix_callback_tasks_owner_open", ["owner_id", "done_at"], unique=False)


def downgrade() -> None:
    op.drop_table("callback_tasks")

"""inbox and KPIs: agents' inbox passwords and browser sessions; indexes for the KPI period queries

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_passwords",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id"),
    )
    op.create_table(
        "inbox_sessions",
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id_hash"),
    )
    with op.batch_alter_table("inbox_sessions") as batch:
        batch.create_index("ix_inbox_sessions_agent_id", ["agent_id"], unique=False)
    # The KPI report reads conversations opened, and customer messages received, in a period.
    with op.batch_alter_table("conversations") as batch:
        batch.create_index("ix_conversations_opened_at", ["opened_at"], unique=False)
    with op.batch_alter_table("messages") as batch:
        batch.create_index("ix_messages_received_at", ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_received_at")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_opened_at")
    with op.batch_alter_table("inbox_sessions") as batch:
        batch.drop_index("ix_inbox_sessions_agent_id")
    op.drop_table("inbox_sessions")
    op.drop_table("agent_passwords")

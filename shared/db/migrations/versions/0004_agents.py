"""agents: tokens, availability, category corrections; first response time; the API's pending events

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash", name="uq_agent_token_hash"),
    )
    with op.batch_alter_table("agent_tokens") as batch:
        batch.create_index("ix_agent_tokens_agent_id", ["agent_id"], unique=False)
    op.create_table(
        "agent_availability",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id"),
    )
    op.create_table(
        "category_corrections",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("old_category", sa.String(length=32), nullable=False),
        sa.Column("new_category", sa.String(length=32), nullable=False),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("category_corrections") as batch:
        batch.create_index("ix_category_corrections_conversation_id", ["conversation_id"], unique=False)
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("first_response_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("router_outbox") as batch:
        # Set for events made by the agent API (no bus redelivery repairs those), cleared on confirm.
        batch.add_column(sa.Column("pending_since", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_router_outbox_pending_since", ["pending_since"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("router_outbox") as batch:
        batch.drop_index("ix_router_outbox_pending_since")
        batch.drop_column("pending_since")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("first_response_at")
    op.drop_table("category_corrections")
    op.drop_table("agent_availability")
    op.drop_table("agent_tokens")

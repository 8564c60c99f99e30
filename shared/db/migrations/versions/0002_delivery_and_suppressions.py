"""delivery status on the outbox, sending options, suppressions, the number to answer from

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("options", JSON, nullable=True))
        batch.add_column(sa.Column("delivery_status", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("delivery_error", sa.Text(), nullable=True))
        batch.create_index("ix_outbox_provider_message_id", ["provider_message_id"], unique=False)
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("reply_from", sa.String(length=320), nullable=True))
    op.create_table(
        "suppressions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "address", name="uq_suppression"),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("reply_from")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_provider_message_id")
        batch.drop_column("delivery_error")
        batch.drop_column("delivery_status")
        batch.drop_column("options")

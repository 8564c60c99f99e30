"""flood control: the router's per-sender notice buckets; the customer of each acknowledgement

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sender_buckets",
        sa.Column("key", sa.String(length=400), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("outbox") as batch:
        # Rows from before have none: the cap counts them by channel and address, as it did.
        batch.add_column(sa.Column("customer_id", sa.String(length=36), nullable=True))
        batch.create_index("ix_outbox_customer", ["customer_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_customer")
        batch.drop_column("customer_id")
    op.drop_table("sender_buckets")

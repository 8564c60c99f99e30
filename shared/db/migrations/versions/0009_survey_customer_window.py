"""surveys: when the customer last wrote, so a WhatsApp survey after the 24-hour window goes as a template

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: surveys scheduled before this column existed have no known window (treated as closed).
    with op.batch_alter_table("surveys") as batch:
        batch.add_column(sa.Column("last_customer_message_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("surveys") as batch:
        batch.drop_column("last_customer_message_at")

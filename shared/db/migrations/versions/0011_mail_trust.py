"""conversations: unverified e-mail senders and a Reply-To awaiting an agent's confirmation

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Mail our server did not authenticate is marked in the inbox; a Reply-To that is none of the
    # customer's addresses waits for an agent instead of silently taking the answers
    # (services/router/trust.py).
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("unverified_sender", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("reply_to_pending", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("reply_to_pending")
        batch.drop_column("unverified_sender")

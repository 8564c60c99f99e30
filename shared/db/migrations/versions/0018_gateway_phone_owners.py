"""the gateway's own read model of whom a caller's phone reaches (phone → owner of the customer's
open conversation), filled from the router's ownership.phone events instead of the gateway reading
the router's conversations and identities

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_phone_owners",
        sa.Column("phone", sa.String(length=32), primary_key=True),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("open", sa.Boolean(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The one time it is taken from the router's tables: the conversations open at the upgrade, so
    # their callers still ring their owner. From now on the router's ownership.phone events carry it
    # (each with a higher sequence: the conversation's latest assignment id, as here).
    op.execute(sa.text(
        "INSERT INTO gateway_phone_owners (phone, conversation_id, owner_id, open, sequence, changed_at) "
        "SELECT i.value, c.id, c.owner_id, :open, "
        "COALESCE((SELECT MAX(a.id) FROM assignments a WHERE a.conversation_id = c.id), 0), c.last_message_at "
        "FROM identities i JOIN conversations c ON c.customer_id = i.customer_id AND c.status = 'open' "
        "WHERE i.kind = 'phone' AND length(i.value) <= 32").bindparams(open=True))


def downgrade() -> None:
    op.drop_table("gateway_phone_owners")

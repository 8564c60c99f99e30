"""call-back tasks: who closed each (an agent who called back, "answered", "resolved")

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Who closed it decides whether a person answered the customer: an agent's call back keeps
    # the promise and earns a survey; a conversation resolved with its call unreturned does not.
    op.add_column("callback_tasks", sa.Column("done_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("callback_tasks", "done_by")

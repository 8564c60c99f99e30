"""assignments: an (agent_id, assigned_at) index, so the router's "last assigned" per agent reads the
index from its end instead of scanning every assignment ever made (make bench: router cost with 1 M
conversations)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.create_index("ix_assignments_agent_assigned", ["agent_id", "assigned_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_index("ix_assignments_agent_assigned")

"""sign-in: token expiry, the token behind an inbox session, failed-login counters, known addresses

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent_tokens") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("inbox_sessions") as batch:
        # Sessions opened before this revision have no token: they end at their own expiry (12 h).
        batch.add_column(sa.Column("token_id", sa.Integer(), nullable=True))
        batch.create_index("ix_inbox_sessions_token_id", ["token_id"], unique=False)
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    with op.batch_alter_table("login_throttle") as batch:
        batch.create_index("ix_login_throttle_last_failure_at", ["last_failure_at"], unique=False)
    op.create_table(
        "login_known_addresses",
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", "address"),
    )


def downgrade() -> None:
    op.drop_table("login_known_addresses")
    op.drop_table("login_throttle")
    with op.batch_alter_table("inbox_sessions") as batch:
        batch.drop_index("ix_inbox_sessions_token_id")
        batch.drop_column("token_id")
    with op.batch_alter_table("agent_tokens") as batch:
        batch.drop_column("expires_at")

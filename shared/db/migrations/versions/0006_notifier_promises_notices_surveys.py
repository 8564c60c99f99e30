"""notifier promises notices surveys (placeholder, filled in by its feature)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""
import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # promises and agent notices
    _upgrade_promises_and_notices()
    # surveys
    _upgrade_surveys()


def downgrade() -> None:
    # surveys
    _downgrade_surveys()
    # promises and agent notices
    _downgrade_promises_and_notices()


# --- promises and agent notices: first-response promises, notices held until a shift starts -----


def _upgrade_promises_and_notices() -> None:
    from sqlalchemy.dialects import postgresql

    op.create_table(
        "promises",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("opening", sa.Integer(), nullable=False),
        sa.Column("reference", sa.String(length=32), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("team_id", sa.String(length=64), nullable=True),
        sa.Column("lead_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warn_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("warned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("breached_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kept_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        # One promise per opening: a redelivered conversation.opened finds it.
        sa.UniqueConstraint("conversation_id", "opening", name="uq_promise_conversation_opening"),
    )
    with op.batch_alter_table("promises") as batch:
        # The ticker's two questions: open promises past warn_at, open promises past due_at.
        batch.create_index("ix_promises_status_warn", ["status", "warn_at"], unique=False)
        batch.create_index("ix_promises_status_due", ["status", "due_at"], unique=False)
        batch.create_index("ix_promises_owner_id", ["owner_id"], unique=False)
    op.create_table(
        "agent_notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=True),
        sa.Column("agent_id", sa.String(length=64), nullable=False),
        sa.Column("fields", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                  nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("correlation_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key", name="uq_agent_notices_idempotency_key"),
    )
    with op.batch_alter_table("agent_notices") as batch:
        batch.create_index("ix_agent_notices_status_due", ["status", "not_before"], unique=False)
        batch.create_index("ix_agent_notices_conversation_id", ["conversation_id"], unique=False)


def _downgrade_promises_and_notices() -> None:
    op.drop_table("agent_notices")
    op.drop_table("promises")


# --- surveys: the follow-up survey's schedule and answers, and survey opt-outs -------------------


def _upgrade_surveys() -> None:
    op.create_table(
        "surveys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("opening", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("reply_from", sa.String(length=320), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("token", sa.String(length=40), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("comment_source", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_id", "opening", name="uq_survey_conversation_opening"),
        sa.UniqueConstraint("token", name="uq_surveys_token"),
    )
    with op.batch_alter_table("surveys") as batch:
        batch.create_index("ix_surveys_status_due", ["status", "due_at"], unique=False)
        batch.create_index("ix_surveys_recipient", ["channel", "address", "sent_at"], unique=False)
        batch.create_index("ix_surveys_customer_id", ["customer_id"], unique=False)
    op.create_table(
        "survey_opt_outs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=True),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("channel", "address", name="uq_survey_opt_out_address"),
    )
    with op.batch_alter_table("survey_opt_outs") as batch:
        batch.create_index("ix_survey_opt_outs_customer_id", ["customer_id"], unique=False)


def _downgrade_surveys() -> None:
    op.drop_table("survey_opt_outs")
    op.drop_table("surveys")

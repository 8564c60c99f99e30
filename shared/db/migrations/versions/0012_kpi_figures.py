"""KPI figures kept as they happen: a conversation's resolution and first-response times, the
router's own record of its surveys, the notifier's "still to report" mark; indexes for the period
aggregates and the keyset-paginated conversation lists

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def _utc(value):
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        # Business seconds from opening to the first human response, computed once when it
        # happens (the router backfills older rows at start: the calendar is in the config, which a
        # migration does not read); wall-clock seconds from opening to resolution.
        batch.add_column(sa.Column("first_response_business_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("resolution_s", sa.Float(), nullable=True))
        # The KPI report's period scans: a team's or an agent's conversations opened in [from, to).
        batch.create_index("ix_conversations_team_opened", ["team_id", "opened_at"], unique=False)
        batch.create_index("ix_conversations_owner_opened", ["owner_id", "opened_at"], unique=False)
        # The conversation lists: owner or team, status, last activity, id — one ordered index scan
        # per branch of "mine or my teams'", whatever the history's size. The (owner, status) index
        # is a prefix of the new one.
        batch.drop_index("ix_conversations_owner_status")
        batch.create_index("ix_conversations_owner_status_activity",
                           ["owner_id", "status", "last_message_at", "id"], unique=False)
        batch.create_index("ix_conversations_team_status_activity",
                           ["team_id", "status", "last_message_at", "id"], unique=False)
    op.create_table(
        "conversation_surveys",
        sa.Column("conversation_id", sa.String(length=36), nullable=False),
        sa.Column("opening", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("score", sa.Integer(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("conversation_id", "opening"),
    )
    with op.batch_alter_table("conversation_surveys") as batch:
        batch.create_index("ix_conversation_surveys_sent_at", ["sent_at"], unique=False)
    with op.batch_alter_table("surveys") as batch:
        # Set when a survey is sent or answered, cleared once the router was told (survey.result).
        batch.add_column(sa.Column("to_report", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_surveys_to_report", ["id"], unique=False,
                           postgresql_where=sa.text("to_report"), sqlite_where=sa.text("to_report"))

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # Exact to the microsecond (EXTRACT of an interval is numeric on PostgreSQL 14+).
        op.execute("UPDATE conversations SET resolution_s = EXTRACT(EPOCH FROM resolved_at - opened_at) "
                   "WHERE resolved_at IS NOT NULL")
    else:
        # SQLite's julianday is not exact to the microsecond: the embedded mode's few rows in Python.
        rows = bind.execute(sa.text("SELECT id, opened_at, resolved_at FROM conversations "
                                    "WHERE resolved_at IS NOT NULL")).all()
        for cid, opened, resolved in rows:
            bind.execute(sa.text("UPDATE conversations SET resolution_s = :s WHERE id = :id"),
                         {"s": (_utc(resolved) - _utc(opened)).total_seconds(), "id": cid})
    # The one time the router's record of surveys is taken from the notifier's table: the surveys
    # sent before this release. From now on the notifier tells the router (survey.result).
    op.execute("INSERT INTO conversation_surveys (conversation_id, opening, kind, sent_at, score, answered_at) "
               "SELECT conversation_id, opening, kind, sent_at, score, answered_at FROM surveys "
               "WHERE sent_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table("surveys") as batch:
        batch.drop_index("ix_surveys_to_report")
        batch.drop_column("to_report")
    op.drop_table("conversation_surveys")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_team_status_activity")
        batch.drop_index("ix_conversations_owner_status_activity")
        batch.create_index("ix_conversations_owner_status", ["owner_id", "status"], unique=False)
        batch.drop_index("ix_conversations_owner_opened")
        batch.drop_index("ix_conversations_team_opened")
        batch.drop_column("resolution_s")
        batch.drop_column("first_response_business_s")

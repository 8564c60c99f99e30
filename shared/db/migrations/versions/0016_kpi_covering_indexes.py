"""the KPI report's passes read indexes only: the period indexes of a team's and an agent's
conversations carry every column the report reads, and customer messages have their own index by
arrival carrying their conversation

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""
import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# What services/router/kpi_store.aggregates reads of a conversation besides its scope and opening
# time: with these in the index, PostgreSQL answers a period from the index alone (an index-only
# scan: the table's pages are not read for rows the visibility map knows are settled, which is a
# history's old rows). SQLite has no INCLUDE: there the indexes stay as they were.
KPI_COLUMNS = ["id", "status", "owner_id", "team_id", "channel", "category", "language", "opening", "reply_to",
               "promise_due", "first_response_at", "resolved_at", "first_response_business_s", "resolution_s"]


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_team_opened")
        batch.drop_index("ix_conversations_owner_opened")
        batch.create_index("ix_conversations_team_opened", ["team_id", "opened_at"], unique=False,
                           postgresql_include=[c for c in KPI_COLUMNS if c != "team_id"])
        batch.create_index("ix_conversations_owner_opened", ["owner_id", "opened_at"], unique=False,
                           postgresql_include=[c for c in KPI_COLUMNS if c != "owner_id"])
    with op.batch_alter_table("messages") as batch:
        # Arrivals by hour of the week: the customer messages of a period and their conversation.
        batch.create_index("ix_messages_in_received", ["received_at"], unique=False,
                           postgresql_include=["conversation_id"],
                           postgresql_where=sa.text("direction = 'in'"), sqlite_where=sa.text("direction = 'in'"))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_in_received")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_team_opened")
        batch.drop_index("ix_conversations_owner_opened")
        batch.create_index("ix_conversations_team_opened", ["team_id", "opened_at"], unique=False)
        batch.create_index("ix_conversations_owner_opened", ["owner_id", "opened_at"], unique=False)

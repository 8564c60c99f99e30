"""drop three indexes no query reads: every message pays for them on its inserts and updates

- ix_messages_received_at: the only query by a message's arrival is the KPI report's arrivals,
  customer messages only, and 0016's partial ix_messages_in_received answers it (on SQLite too:
  its planner takes the partial index for `direction = ?`); the histories sort a customer's
  messages after finding them by conversation.
- ix_outbox_status: no query filters on the status alone. The acknowledgement cap's count and
  `earlier_unsent` find their rows by recipient, customer or conversation (ix_outbox_recipient,
  ix_outbox_customer, ix_outbox_conversation_id); in the bench the planner sometimes took the status
  index instead and read thousands of 'sent' rows to find a few.
- ix_promises_owner_id: nothing looks promises up by owner.

Measured in a quick bench (pg_stat_user_indexes): 0 scans on the first and the last; the outbox's
status index was the one read for the wrong reason above.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_received_at")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_status")
    with op.batch_alter_table("promises") as batch:
        batch.drop_index("ix_promises_owner_id")


def downgrade() -> None:
    with op.batch_alter_table("promises") as batch:
        batch.create_index("ix_promises_owner_id", ["owner_id"], unique=False)
    with op.batch_alter_table("outbox") as batch:
        batch.create_index("ix_outbox_status", ["status"], unique=False)
    with op.batch_alter_table("messages") as batch:
        batch.create_index("ix_messages_received_at", ["received_at"], unique=False)

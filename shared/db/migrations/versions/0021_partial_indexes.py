"""partial indexes where most rows have nothing to find: writes skip them

Every message writes rows whose indexed value is NULL or whose status no query looks for, and
PostgreSQL adds an index entry for each all the same (a NULL is indexed; an UPDATE that is not HOT
adds the new version to every index):
- ix_outbox_provider_message_id: a row is inserted pending, without a provider id (two per
  message: the acknowledgement and the owner's notice). The delivery reports look a row up by
  `provider_message_id = …`, which implies IS NOT NULL: the partial index serves them.
- ix_outbox_customer: only acknowledgements carry the customer (the daily cap counts their every
  address); agents' notices do not. The cap's look-up is `customer_id = ANY(…)`.
- ix_router_outbox_pending_since: only the agent API's events wait for a confirm (the bus's events
  are stored with NULL); the re-publisher's query is `pending_since IS NOT NULL AND …`.
- ix_agent_notices_status_due → ix_agent_notices_pending_due: the ticker asks for pending notices
  by due time only; a sent notice (every notice, once its send is recorded) leaves it.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""
import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def _where(condition: str) -> dict:
    return {"postgresql_where": sa.text(condition), "sqlite_where": sa.text(condition)}


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_provider_message_id")
        batch.create_index("ix_outbox_provider_message_id", ["provider_message_id"], unique=False,
                           **_where("provider_message_id IS NOT NULL"))
        batch.drop_index("ix_outbox_customer")
        batch.create_index("ix_outbox_customer", ["customer_id", "created_at"], unique=False,
                           **_where("customer_id IS NOT NULL"))
    with op.batch_alter_table("router_outbox") as batch:
        batch.drop_index("ix_router_outbox_pending_since")
        batch.create_index("ix_router_outbox_pending_since", ["pending_since"], unique=False,
                           **_where("pending_since IS NOT NULL"))
    with op.batch_alter_table("agent_notices") as batch:
        batch.drop_index("ix_agent_notices_status_due")
        batch.create_index("ix_agent_notices_pending_due", ["not_before"], unique=False,
                           **_where("status = 'pending'"))


def downgrade() -> None:
    with op.batch_alter_table("agent_notices") as batch:
        batch.drop_index("ix_agent_notices_pending_due")
        batch.create_index("ix_agent_notices_status_due", ["status", "not_before"], unique=False)
    with op.batch_alter_table("router_outbox") as batch:
        batch.drop_index("ix_router_outbox_pending_since")
        batch.create_index("ix_router_outbox_pending_since", ["pending_since"], unique=False)
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index("ix_outbox_customer")
        batch.create_index("ix_outbox_customer", ["customer_id", "created_at"], unique=False)
        batch.drop_index("ix_outbox_provider_message_id")
        batch.create_index("ix_outbox_provider_message_id", ["provider_message_id"], unique=False)

"""The indexes the migrations leave are the ones the models declare, and 0020's drops and 0021's
partial indexes roll back.

Every message inserts into the messages and outbox tables (and a new conversation into promises)
and pays for each of their indexes; 0020 dropped three no query reads. An index in the models but
not in the migrations (or the reverse) would be a schema that differs between a fresh database
and the tests' metadata, so the two are compared for the tables a message writes."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import inspect

from services.notifier.models import AgentNotice, Outbox, Promise
from services.router.models import Conversation, Message, RouterOutbox
from shared.db import _MIGRATIONS, make_engine, migrate

pytestmark = pytest.mark.integration

DROPPED = {"messages": "ix_messages_received_at", "outbox": "ix_outbox_status", "promises": "ix_promises_owner_id"}


def indexes(engine, table: str) -> set[str]:
    """The table's plain indexes: those behind unique constraints are reflected differently by each
    backend, and a unique index is there for correctness, not speed."""
    return {ix["name"] for ix in inspect(engine).get_indexes(table) if not ix["unique"]}


def declared(model) -> set[str]:
    return {ix.name for ix in model.__table__.indexes if not ix.unique}


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_migrated_indexes_are_the_models_and_0020_rolls_back_and_forth(pg_url, tmp_path, backend) -> None:
    url = pg_url if backend == "postgresql" else f"sqlite:///{tmp_path / 'schema.sqlite'}"
    engine = make_engine(url)
    migrate(engine)
    for model in (Conversation, Message, Outbox, Promise, RouterOutbox, AgentNotice):
        assert indexes(engine, model.__tablename__) == declared(model), model.__tablename__
    for table, name in DROPPED.items():
        assert name not in indexes(engine, table)

    def move(command_, to: str) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command_(cfg, to)

    assert partial(engine) == PARTIAL

    move(command.downgrade, "0020")
    assert partial(engine) == {}
    move(command.downgrade, "0019")
    for table, name in DROPPED.items():
        assert name in indexes(engine, table)
    move(command.upgrade, "head")
    for table, name in DROPPED.items():
        assert name not in indexes(engine, table)
    assert partial(engine) == PARTIAL
    engine.dispose()


#: 0021's partial indexes: the rows a message writes without a value to find (a pending outbox
#: row's provider id, a notice's customer, a bus event's confirm wait) or no longer looked for (a
#: sent notice) get no entry. Each with the columns it indexes.
PARTIAL = {"ix_outbox_provider_message_id": ["provider_message_id"], "ix_outbox_customer": ["customer_id", "created_at"],
           "ix_router_outbox_pending_since": ["pending_since"], "ix_agent_notices_pending_due": ["not_before"]}


def partial(engine) -> dict[str, list[str]]:
    """The partial indexes of the tables 0021 changed, by name, with their columns."""
    found = {}
    for table in ("outbox", "router_outbox", "agent_notices"):
        for ix in inspect(engine).get_indexes(table):
            where = ix.get("dialect_options", {})
            if where.get("postgresql_where") is not None or where.get("sqlite_where") is not None:
                found[ix["name"]] = ix["column_names"]
    return found

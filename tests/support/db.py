"""Reading the database in tests: what a test asserts about stored state, in one place.

`db_count` and `query` take a URL (end-to-end tests: the services write, the test only reads);
`count` takes the test's own sessions (integration tests)."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import normalise_url


def db_count(url: str, sql: str) -> int:
    """The single number a `SELECT count(*) …` returns."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    """Every row of a query, as plain tuples."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def count(sessions: sessionmaker[Session], model: type) -> int:
    """How many rows a model's table holds."""
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def assert_one_open_conversation_and_owner_each(sessions: sessionmaker[Session], customers: int) -> None:
    """Router replicas racing on the same customers: each customer has exactly one open
    conversation, and each conversation exactly one owner (SPEC §4: claimed atomically)."""
    from services.router.models import Assignment, Conversation

    with sessions() as s:
        per_customer_open = s.execute(select(Conversation.customer_id, func.count()).where(Conversation.status == "open")
                                      .group_by(Conversation.customer_id)).all()
        assert len(per_customer_open) == customers and all(n == 1 for _, n in per_customer_open)
        owners = s.execute(select(Assignment.conversation_id, func.count()).group_by(Assignment.conversation_id)).all()
        assert len(owners) == customers and all(n == 1 for _, n in owners)
        assert s.scalar(select(func.count()).where(Conversation.owner_id.is_(None))) == 0

"""The router's round trips on its commonest paths, counted on PostgreSQL (issue 15: the router's
CPU per message is mostly the statements it sends). A change that adds one to every message fails
here, naming the statements, so it is a decision and not an accident: make it, and change the
count with the reason in the commit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from services.router.handlers import RouterDeps, handle_inbound_batch
from tests.integration.test_router_store import envelope, fake_classify

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 10, tzinfo=UTC)  # a Monday morning: the shop is open
BATCH = 16


@contextmanager
def statements(deps: RouterDeps) -> Iterator[list[str]]:
    """Every statement the router's sessions send meanwhile (SAVEPOINTs included: each is a round trip)."""
    sent: list[str] = []
    engine = deps.sessions.kw["bind"]

    def record(_conn, _cursor, statement, _params, _context, _executemany) -> None:
        sent.append(" ".join(statement.split())[:120])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def deps(example_config, sessions) -> RouterDeps:
    return RouterDeps(config=example_config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: "en")


def routed(deps: RouterDeps, envelopes: list) -> None:
    results = handle_inbound_batch(envelopes, deps)
    assert not [r for r in results if isinstance(r, Exception)], results


def test_statements_per_message_of_a_batch(deps) -> None:
    firsts = [envelope(100 + i, AT, user=f"u{i}") for i in range(BATCH)]
    nexts = [envelope(200 + i, AT + timedelta(seconds=5), user=f"u{i}", text="order 48213") for i in range(BATCH)]

    # New Telegram customers, each opening a conversation: a batch handled at once, its new rows
    # written a table at a time (no savepoint, no statement per message). Per batch: which messages
    # are stored, the senders' identities (with customer and open conversation), which senders were
    # surveyed, the roster, then at the commit one INSERT each of customers, identities,
    # conversations (the one-open index claimed), the day's KPI mark, assignments, messages, outbox
    # (conversation.opened). (Per message before: SAVEPOINT, INSERT customer, identity,
    # conversation, assignment, message, outbox, RELEASE.)
    with statements(deps) as sent:
        routed(deps, firsts)
    assert len(sent) == 11, "\n".join(sent)

    # Their next messages, each joining the open conversation. Per batch: stored, identities,
    # surveyed, then the flood buckets of every sender with an open conversation (one upsert, rows
    # locked in key order), and at the commit one INSERT of the messages, one of the outbox
    # (conversation.message), one UPDATE of the conversations' last message and one of the buckets
    # (executemany, one statement as the listener sees it). Nothing per message (before: SAVEPOINT,
    # UPDATE conversation, INSERT message, upsert buckets, INSERT outbox, UPDATE buckets, RELEASE).
    with statements(deps) as sent:
        routed(deps, nexts)
    assert len(sent) == 8, "\n".join(sent)

    # The same batch redelivered: one look-up of what is stored, then each message's stored events.
    with statements(deps) as sent:
        routed(deps, nexts)
    assert len(sent) == 1 + BATCH, "\n".join(sent)

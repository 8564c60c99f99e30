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

    # New Telegram customers, each opening a conversation. Per batch: which messages are stored,
    # the senders' identities (with customer and open conversation), which senders were surveyed,
    # the roster, the day's KPI mark. Per message: SAVEPOINT, INSERT customer, identity,
    # conversation (the one-open index claimed), assignment, message, outbox (conversation.opened),
    # RELEASE.
    with statements(deps) as sent:
        routed(deps, firsts)
    assert len(sent) == 5 + 8 * BATCH, "\n".join(sent)

    # Their next messages, each joining the open conversation. Per batch: stored, identities,
    # surveyed. Per message: SAVEPOINT, UPDATE the conversation's last message, INSERT message, the
    # flood buckets (one upsert for both), outbox (conversation.message), UPDATE the buckets, RELEASE.
    with statements(deps) as sent:
        routed(deps, nexts)
    assert len(sent) == 3 + 7 * BATCH, "\n".join(sent)

    # The same batch redelivered: one look-up of what is stored, then each message's stored events.
    with statements(deps) as sent:
        routed(deps, nexts)
    assert len(sent) == 1 + 3 * BATCH, "\n".join(sent)

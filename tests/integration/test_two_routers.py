"""Two router replicas on one queue never give a conversation two owners, nor a customer two open
conversations — the database's constraints decide races, the bus retries the loser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.router.models import Message
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.integration.test_router_store import fake_classify
from tests.support.db import assert_one_open_conversation_and_owner_each
from tests.support.routers import router_replicas
from tests.support.wait import until

pytestmark = pytest.mark.integration


def test_two_routers_racing_on_the_same_customers(example_config, rabbit_url, pg_url) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    with connect(rabbit_url) as conn:
        declare(conn)
    customers, per_customer = 12, 5
    at = datetime(2026, 11, 23, 10, tzinfo=UTC)
    sessions = session_factory(engine)

    def stored() -> int:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(Message))

    with router_replicas(example_config, rabbit_url, pg_url, classify=fake_classify, batched=False, prefetch=4):
        pub = Publisher(rabbit_url)
        # Interleaved: each customer's messages sit next to each other, so the two routers race on them.
        for k in range(per_customer):
            for c in range(customers):
                msg = InboundMessage(channel="telegram", external_id=f"1:{c}:{k}",
                                     sender=Identity("telegram", f"c{c}"), reply_to=f"c{c}",
                                     received_at=at + timedelta(seconds=k), text="Where is my parcel?")
                pub.publish(Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id),
                                          correlation_id="x", occurred_at=at))
        until(lambda: stored() == customers * per_customer, timeout=90, interval=0.2, message="every message stored")
    assert_one_open_conversation_and_owner_each(sessions, customers)
    engine.dispose()

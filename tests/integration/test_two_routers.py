"""Two router replicas on one queue never give a conversation two owners, nor a customer two open
conversations — the database's constraints decide races, the bus retries the loser."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import func, select

from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Message
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import ROUTER_INBOUND, declare
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.integration.test_router_store import fake_classify
from tests.support.db import assert_one_open_conversation_and_owner_each
from tests.support.wait import until

pytestmark = pytest.mark.integration


def test_two_routers_racing_on_the_same_customers(example_config, rabbit_url, pg_url) -> None:
    engine = make_engine(pg_url)
    migrate(engine)
    with connect(rabbit_url) as conn:
        declare(conn)
    stop = threading.Event()
    threads = []
    for name in ("router-a", "router-b"):
        # Each replica has its own engine: separate connections, real concurrent transactions.
        deps = RouterDeps(config=example_config, sessions=session_factory(make_engine(pg_url)),
                          classify=fake_classify, detect_language=lambda text, hints: "en")
        worker = Worker(url=rabbit_url, spec=ROUTER_INBOUND, handler=partial(handle_inbound, deps=deps),
                        publisher=Publisher(rabbit_url), prefetch=4, name=name)
        t = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        t.start()
        assert worker.ready.wait(15)
        threads.append(t)

    customers, per_customer = 12, 5
    at = datetime(2026, 11, 23, 10, tzinfo=UTC)
    pub = Publisher(rabbit_url)
    # Interleaved: each customer's messages sit next to each other, so the two routers race on them.
    for k in range(per_customer):
        for c in range(customers):
            msg = InboundMessage(channel="telegram", external_id=f"1:{c}:{k}", sender=Identity("telegram", f"c{c}"),
                                 reply_to=f"c{c}", received_at=at + timedelta(seconds=k), text="Where is my parcel?")
            pub.publish(Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="x",
                                      occurred_at=at))
    sessions = session_factory(engine)

    def stored() -> int:
        with sessions() as s:
            return s.scalar(select(func.count()).select_from(Message))

    try:
        until(lambda: stored() == customers * per_customer, timeout=90, interval=0.2, message="every message stored")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert_one_open_conversation_and_owner_each(sessions, customers)
    engine.dispose()

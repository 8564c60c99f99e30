"""Whom a ringing call goes to, across the bus: the router publishes `ownership.phone`, the gateway's
own consumer keeps phone → owner in its table, and the voice adapter dials from that table alone.
Real RabbitMQ (the router's and the gateway's workers as they run in services mode) and PostgreSQL."""

from __future__ import annotations

import dataclasses
import threading
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from services.gateway import owners
from services.router import operations as ops
from services.router.bootstrap import build_worker as build_router_worker
from services.router.handlers import RouterDeps
from services.router.models import Conversation
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory, transaction
from tests.contract.test_twilio_voice import TEAM_PHONE, adapter, body, form_of, request
from tests.integration.test_router_store import fake_classify
from tests.support.wait import until

pytestmark = pytest.mark.integration

WARSAW = ZoneInfo("Europe/Warsaw")
MONDAY = datetime(2026, 11, 23, 10, 0, tzinfo=WARSAW)  # anna and jonas are on shift (09:00–17:00)
CALLER = "+48601234567"  # the caller in tests/fixtures/phone/call_incoming_in_hours.txt
PHONES = {"anna": "+48600100200", "jonas": "+48600500600"}


@pytest.fixture
def config(example_config):
    agents = dict(example_config.agents)
    for agent_id, phone in PHONES.items():
        agents[agent_id] = dataclasses.replace(agents[agent_id], phone=phone)
    return dataclasses.replace(example_config, agents=agents)


@pytest.fixture
def stack(config, rabbit_url, pg_url):
    """The router's worker and the gateway's owners worker, each with its own engine, on the bus."""
    router_engine = make_engine(pg_url)
    migrate(router_engine)
    gateway_engine = owners.gateway_engine(pg_url)
    with connect(rabbit_url) as conn:
        declare(conn)
    publisher = Publisher(rabbit_url)
    sessions = session_factory(router_engine)
    deps = RouterDeps(config=config, sessions=sessions, classify=fake_classify,
                      detect_language=lambda text, hints: hints[0] if hints else "en")
    workers = [build_router_worker(rabbit_url, deps, publisher),
               owners.build_worker(rabbit_url, lambda: gateway_engine, publisher)]
    stop = threading.Event()
    threads = [threading.Thread(target=partial(w.run, stop), daemon=True) for w in workers]
    for t in threads:
        t.start()
    assert all(w.ready.wait(20) for w in workers)
    yield sessions, publisher, owners.owner_lookup(lambda: gateway_engine)
    stop.set()
    for t in threads:
        t.join(timeout=10)
    publisher.close()
    router_engine.dispose()
    gateway_engine.dispose()


def dialled(config, lookup) -> str:
    voice = adapter(config, "call", owner_lookup=lookup)
    twiml, _ = voice.respond(request("call", form_of(body("call_incoming_in_hours")), MONDAY))
    return twiml.split('timeout="20">', 1)[1].split("</Dial>", 1)[0]


def sms(text: str) -> Envelope:
    msg = InboundMessage(channel="sms", external_id="SM0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", sender=Identity("phone", CALLER),
                         reply_to=CALLER, received_at=MONDAY, text=text, language_hint="pl")
    return Envelope.wrap(msg, message_id=derive_id("sms", msg.external_id), correlation_id="c-sms", occurred_at=MONDAY)


def conversation(sessions) -> Conversation:
    with sessions() as s:
        return s.scalars(select(Conversation)).one()


def test_a_call_rings_the_owner_then_the_new_owner_then_the_team(config, stack) -> None:
    sessions, publisher, lookup = stack
    assert dialled(config, lookup) == TEAM_PHONE  # nobody owns this caller yet
    publisher.publish(sms("Gdzie jest moja paczka?"))
    owner = until(lambda: conversation_owner(sessions), message="the router assigned the conversation")
    assert owner in PHONES  # the router's choice among the agents on shift
    until(lambda: lookup(CALLER) == owner, message="the gateway heard of the owner")
    assert dialled(config, lookup) == PHONES[owner]

    other = next(a for a in PHONES if a != owner)
    with transaction(sessions) as s:
        conv = s.scalars(select(Conversation)).one()
        ops.transfer(s, config, conv, by="anna", agent_id=other, team_id=None, note="she knows this order",
                     at=MONDAY + timedelta(minutes=5))
    ops.relay_pending(sessions, publisher, MONDAY + timedelta(minutes=5), older_than=timedelta(0))
    until(lambda: lookup(CALLER) == other, message="the gateway heard of the transfer")
    assert dialled(config, lookup) == PHONES[other]

    with transaction(sessions) as s:
        conv = s.scalars(select(Conversation)).one()
        ops.resolve(s, config, conv, at=MONDAY + timedelta(minutes=9), correlation_id="c-resolve")
    ops.relay_pending(sessions, publisher, MONDAY + timedelta(minutes=9), older_than=timedelta(0))
    until(lambda: lookup(CALLER) is None, message="the gateway heard of the resolution")
    assert dialled(config, lookup) == TEAM_PHONE


def conversation_owner(sessions) -> str | None:
    with sessions() as s:
        return s.scalar(select(Conversation.owner_id))


def test_a_call_rings_the_team_when_the_gateways_database_is_unreachable(config) -> None:
    # Nothing listens on port 1: the look-up fails fast (connect timeout) and the team's phone rings.
    lookup = owners.owner_lookup(owners.lazy_engine("postgresql://postgres@127.0.0.1:1/switchboard"))
    with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises; the adapter catches all
        lookup(CALLER)
    assert dialled(config, lookup) == TEAM_PHONE

"""The agent API against the real PostgreSQL (and RabbitMQ where events leave): every operation,
every refusal, the notifier's side of a reply, hand-over, queue drain, merge, the OpenAPI document.

Conversations are made the way production makes them, by the router's own handler.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from kombu import Connection, Queue
from sqlalchemy import func, select

from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import Outbox
from services.notifier.senders import Registry
from services.notifier.senders.sandbox import SandboxSender
from services.router import operations as ops
from services.router.api import ApiDeps, build_api
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import (
    AgentAvailability,
    Assignment,
    CategoryCorrection,
    Conversation,
    Customer,
    Identity,
    Message,
    RouterOutbox,
)
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import NOTIFIER_EVENTS, PLUMBING, declare
from shared.contracts import (
    ConversationReply,
    ConversationResolved,
    Envelope,
    InboundMessage,
    decode,
    derive_id,
)
from shared.contracts import Identity as Ident
from shared.db import make_engine, migrate, session_factory, transaction
from shared.web import install_json_errors
from tests.support.classify import Verdict
from tests.support.wait import until

pytestmark = pytest.mark.integration

WARSAW = ZoneInfo("Europe/Warsaw")
# A Wednesday morning: anna (pl en ru), jonas (lt en de) and maria (bg en de ru) are on shift, taras
# (uk ru en pl) starts at 12:00.
WED = datetime(2026, 11, 25, 10, 0, tzinfo=WARSAW)


def classify(text, subject, language, channel) -> Verdict:
    return Verdict("returns" if "return" in text.lower() else "delivery")


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@dataclass
class Env:
    sessions: object
    client: object
    app: Flask
    clock: Clock
    tokens: dict[str, str]
    n: list = field(default_factory=lambda: [0])

    def auth(self, agent: str) -> dict:
        return {"Authorization": f"Bearer {self.tokens[agent]}"}

    def inbound(self, text: str, *, lang: str, user: str = "42", channel: str = "telegram", kind: str = "telegram",
                at: datetime | None = None, linked: tuple = ()) -> str:
        """A customer's message through the router's handler; returns the conversation id."""
        self.n[0] += 1
        at = at or self.clock()
        msg = InboundMessage(channel=channel, external_id=f"x:{self.n[0]}", sender=Ident(kind, user), reply_to=user,
                             received_at=at, text=text, sender_name="Piotr", language_hint=lang,
                             linked_identities=linked)
        env = Envelope.wrap(msg, message_id=derive_id(channel, msg.external_id), correlation_id=f"c{self.n[0]}",
                            occurred_at=at)
        deps = RouterDeps(config=self.app.config["SB"], sessions=self.sessions, classify=classify,
                          detect_language=lambda text, hints: hints[0])
        handle_inbound(env, deps)
        with self.sessions() as s:
            return s.scalar(select(Message.conversation_id).where(Message.id == env.message_id))

    def conv(self, conv_id: str) -> Conversation:
        with self.sessions() as s:
            return s.get(Conversation, conv_id)

    def count(self, model, *where) -> int:
        with self.sessions() as s:
            return s.scalar(select(func.count()).select_from(model).where(*where))


def make_env(config, pg_url: str, broker_url: str) -> tuple[Env, object]:
    engine = make_engine(pg_url)
    migrate(engine)
    sessions = session_factory(engine)
    clock = Clock(WED)
    learned: list = []
    app = Flask("test")
    install_json_errors(app)
    app.config["SB"] = config
    app.config["LEARNED"] = learned
    app.register_blueprint(build_api(ApiDeps(config=config, sessions=sessions, publisher=Publisher(broker_url),
                                             clock=clock, learn=lambda *a: learned.append(a))))
    with transaction(sessions) as s:
        tokens = {a: ops.issue_token(s, a, WED) for a in config.agents}
    return Env(sessions=sessions, client=app.test_client(), app=app, clock=clock, tokens=tokens), engine


def make_inbox_env(config, pg_url: str, broker_url: str) -> tuple[Env, object]:
    """make_env with the topology declared and the inbox's blueprints on the same app: what the
    inbox tests share."""
    from services.router.inbox import build_inbox

    with connect(broker_url) as conn:
        declare(conn)
    e, engine = make_env(config, pg_url, broker_url)
    for bp in build_inbox(ApiDeps(config=config, sessions=e.sessions, publisher=Publisher(broker_url), clock=e.clock)):
        e.app.register_blueprint(bp)
    e.broker_url = broker_url
    return e, engine


@pytest.fixture
def env(example_config, pg_url, rabbit_url):
    with connect(rabbit_url) as conn:
        declare(conn)
    e, engine = make_env(example_config, pg_url, rabbit_url)
    e.broker_url = rabbit_url
    yield e
    engine.dispose()


def bus_messages(url: str) -> list[Envelope]:
    got = []
    with Connection(url) as conn:
        q = Queue(NOTIFIER_EVENTS.name, exchange=PLUMBING, routing_key=NOTIFIER_EVENTS.name, no_declare=True)
        with conn.SimpleQueue(q) as sq:
            while True:
                try:
                    m = sq.get(timeout=0.3)
                except Exception:  # noqa: BLE001 - kombu's Empty
                    return got
                got.append(decode(m.payload))
                m.ack()


# --- refusals ------------------------------------------------------------------------------------


def test_every_refusal_is_a_json_error_and_changes_nothing(env) -> None:
    maria_conv = env.inbound("Where is my parcel?", lang="bg")
    assert env.conv(maria_conv).owner_id == "maria"
    url = f"/api/v1/conversations/{maria_conv}"
    before = (env.count(Message), env.count(RouterOutbox), env.count(Assignment))

    r = env.client.get(url)
    assert r.status_code == 401 and r.json["error"] == "unauthenticated" and "Bearer" in r.headers["WWW-Authenticate"]
    assert env.client.get(url, headers={"Authorization": "Bearer sb_not-a-token"}).status_code == 401
    assert env.client.get(url, headers={"Authorization": "Basic " + env.tokens["maria"]}).status_code == 401

    r = env.client.post(url + "/reply", json={"text": "Hello"}, headers=env.auth("jonas"))
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    assert env.client.get(url, headers=env.auth("jonas")).status_code == 403
    assert env.client.post(url + "/resolve", headers=env.auth("taras")).status_code == 403

    r = env.client.get("/api/v1/conversations/no-such-id", headers=env.auth("maria"))
    assert r.status_code == 404 and r.json["error"] == "not_found"

    r = env.client.post(url + "/reply", data="not json", headers=env.auth("maria"))
    assert r.status_code == 400 and r.json["error"] == "malformed"
    r = env.client.post(url + "/reply", json={"txt": "typo"}, headers=env.auth("maria"))
    assert r.status_code == 422 and "text" in r.json["details"] and "txt" in r.json["details"]
    assert env.client.post(url + "/reply", json={"text": ""}, headers=env.auth("maria")).status_code == 422
    r = env.client.post(url + "/transfer", json={"agent_id": "anna", "team_id": "support", "note": "x"},
                        headers=env.auth("maria"))
    assert r.status_code == 422
    assert env.client.post(url + "/transfer", json={"agent_id": "ghost", "note": "x"},
                           headers=env.auth("maria")).status_code == 422
    assert env.client.post(url + "/category", json={"category": "weather"},
                           headers=env.auth("maria")).status_code == 422
    assert env.client.get("/api/v1/conversations?status=maybe", headers=env.auth("maria")).status_code == 422
    assert env.client.put("/api/v1/agents/me/availability", json={"status": "asleep"},
                          headers=env.auth("maria")).status_code == 422

    # A revoked token stops working: a new one replaces it.
    old = env.tokens["maria"]
    with transaction(env.sessions) as s:
        env.tokens["maria"] = ops.issue_token(s, "maria", WED)
    assert env.client.get(url, headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert env.client.get(url, headers=env.auth("maria")).status_code == 200

    assert (env.count(Message), env.count(RouterOutbox), env.count(Assignment)) == before
    assert bus_messages(env.broker_url) == []


# --- reading ------------------------------------------------------------------------------------


def test_an_agent_sees_their_own_a_lead_the_team_with_filters(env) -> None:
    bg = env.inbound("Where is my parcel?", lang="bg", user="1")
    lt = env.inbound("I want to return it", lang="lt", user="2")
    pl = env.inbound("Gdzie paczka?", lang="pl", user="3")
    owners = {c: env.conv(c).owner_id for c in (bg, lt, pl)}
    assert owners == {bg: "maria", lt: "jonas", pl: "anna"}

    def ids(agent: str, query: str = "") -> set[str]:
        r = env.client.get(f"/api/v1/conversations{query}", headers=env.auth(agent))
        assert r.status_code == 200, r.json
        return {c["id"] for c in r.json["conversations"]}

    assert ids("maria") == {bg}
    assert ids("jonas") == {lt}
    assert ids("taras") == set()
    assert ids("anna") == {bg, lt, pl}  # the lead of "support"
    assert ids("anna", "?category=returns") == {lt}
    assert ids("anna", "?channel=sms") == set()
    assert ids("anna", "?status=resolved") == set()
    due = env.conv(lt).promise_due  # returns: 8 business hours, delivery: 4
    assert ids("anna", "?promise_due_before=" + due.isoformat().replace("+", "%2B")) == {bg, pl}

    # A page at a time, newest activity first: the cursor of one page gives the next, never a row twice.
    seen, cursor = [], None
    while True:
        r = env.client.get("/api/v1/conversations?limit=2" + (f"&cursor={cursor}" if cursor else ""),
                           headers=env.auth("anna"))
        assert r.status_code == 200, r.json
        seen += [c["id"] for c in r.json["conversations"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted([bg, lt, pl]) and len(seen) == 3
    r = env.client.get("/api/v1/conversations?cursor=not-ours", headers=env.auth("anna"))
    assert r.status_code == 422 and "cursor" in r.json["details"]


def test_a_conversation_comes_with_the_customers_whole_cross_channel_history(env) -> None:
    first = env.inbound("Where is my parcel?", lang="bg", user="500", linked=(Ident("phone", "+359888000111"),))
    env.clock.at = WED + timedelta(minutes=1)
    assert env.client.post(f"/api/v1/conversations/{first}/reply", json={"text": "It left today."},
                           headers=env.auth("maria")).status_code == 201
    assert env.client.post(f"/api/v1/conversations/{first}/resolve", headers=env.auth("maria")).status_code == 200
    env.clock.at = WED + timedelta(days=14)  # beyond the reopen window: a new conversation
    second = env.inbound("Return please", lang="bg", user="+359888000111", channel="sms", kind="phone",
                         at=env.clock.at)
    assert second != first
    r = env.client.get(f"/api/v1/conversations/{second}", headers=env.auth("anna"))
    assert r.status_code == 200
    body = r.json
    assert body["id"] == second and body["customer"]["name"] == "Piotr"
    assert {(i["kind"], i["value"]) for i in body["customer"]["identities"]} == {
        ("telegram", "500"), ("phone", "+359888000111")}
    assert [(m["channel"], m["direction"], m["text"], m["conversation_id"]) for m in body["history"]] == [
        ("telegram", "in", "Where is my parcel?", first),
        ("telegram", "out", "It left today.", first),
        ("sms", "in", "Return please", second),
    ]


# --- reply -------------------------------------------------------------------------------------


def test_a_reply_is_stored_published_and_sent_once_even_when_redelivered(env, example_config) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg", user="777")
    env.clock.at = WED + timedelta(minutes=20)
    r = env.client.post(f"/api/v1/conversations/{conv}/reply", json={"text": "Здравейте, пратката е на път."},
                        headers={**env.auth("maria"), "X-Correlation-Id": "corr-7"})
    assert r.status_code == 201
    reply_id = r.json["reply_id"]
    assert datetime.fromisoformat(r.json["conversation"]["first_response_at"]) == WED + timedelta(minutes=20)
    env.clock.at = WED + timedelta(minutes=30)
    assert env.client.post(f"/api/v1/conversations/{conv}/reply", json={"text": "P.S."},
                           headers=env.auth("maria")).status_code == 201
    assert env.conv(conv).first_response_at == WED + timedelta(minutes=20)  # the first one counts
    with env.sessions() as s:
        stored = s.get(Message, reply_id)
        assert (stored.direction, stored.channel, stored.sender_value) == ("out", "telegram", "maria")
        assert s.scalar(select(func.count()).select_from(RouterOutbox)
                        .where(RouterOutbox.pending_since.is_not(None))) == 0  # confirmed, not pending

    events = bus_messages(env.broker_url)
    replies = [e for e in events if e.type == ConversationReply.TYPE]
    assert [e.payload.text for e in replies] == ["Здравейте, пратката е на път.", "P.S."]
    first = replies[0]
    assert first.correlation_id == "corr-7"
    assert (first.payload.reply_id, first.payload.reply_to, first.payload.agent_id, first.payload.language) == (
        reply_id, "777", "maria", "bg")

    # The notifier's side: the same event delivered twice → one outbox row, one message sent.
    sender = SandboxSender("telegram", out=open("/dev/null", "w"))
    deps = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({"telegram": sender}),
                        compose_ack=lambda ev, at: "", clock=env.clock)
    handle_event(first, deps)
    handle_event(first, deps)
    assert [(x.address, x.text) for x in sender.sent] == [("777", "Здравейте, пратката е на път.")]
    with env.sessions() as s:
        [row] = s.scalars(select(Outbox).where(Outbox.idempotency_key == f"reply:{reply_id}")).all()
        assert row.status == "sent" and row.kind == "reply"


def test_a_reply_the_broker_did_not_confirm_is_published_later(env, example_config) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg", user="778")
    # The API's publisher points at a dead broker: the reply is accepted and kept pending.
    dead = Flask("dead")
    install_json_errors(dead)
    dead.register_blueprint(build_api(ApiDeps(config=example_config, sessions=env.sessions,
                                              publisher=Publisher("amqp://guest:guest@127.0.0.1:1//",
                                                                  confirm_timeout=1),
                                              clock=env.clock)))
    r = dead.test_client().post(f"/api/v1/conversations/{conv}/reply", json={"text": "On its way"},
                                headers=env.auth("maria"))
    assert r.status_code == 201
    assert env.count(RouterOutbox, RouterOutbox.pending_since.is_not(None)) == 1
    assert bus_messages(env.broker_url) == []
    # The router's relay publishes it once the broker answers (and the row is old enough).
    env.clock.at = WED + timedelta(minutes=1)
    stop = threading.Event()
    relay = threading.Thread(target=ops.run_relay, args=(env.sessions, Publisher(env.broker_url), env.clock, stop),
                             kwargs={"interval": 0.05})
    relay.start()
    try:
        until(lambda: env.count(RouterOutbox, RouterOutbox.pending_since.is_not(None)) == 0, timeout=20,
              message="the pending reply relayed")
    finally:
        stop.set()
        relay.join(timeout=10)
    [event] = bus_messages(env.broker_url)
    assert event.type == "conversation.reply" and event.payload.text == "On its way"
    # Any request of a working API also relays what is pending.
    dead.test_client().post(f"/api/v1/conversations/{conv}/reply", json={"text": "Tracking: 123"},
                            headers=env.auth("maria"))
    env.clock.at = WED + timedelta(minutes=2)
    assert env.client.post(f"/api/v1/conversations/{conv}/resolve", headers=env.auth("maria")).status_code == 200
    assert sorted(e.type for e in bus_messages(env.broker_url)) == ["conversation.reply", "conversation.resolved"]
    assert env.count(RouterOutbox, RouterOutbox.pending_since.is_not(None)) == 0


# --- resolve, reopen ----------------------------------------------------------------------------


def test_resolve_publishes_resolved_and_reopen_opens_again(env, example_config) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg", user="900")
    url = f"/api/v1/conversations/{conv}"
    r = env.client.post(url + "/resolve", headers=env.auth("maria"))
    assert r.status_code == 200 and r.json["conversation"]["status"] == "resolved"
    assert env.conv(conv).resolved_at == WED
    assert env.client.post(url + "/resolve", headers=env.auth("maria")).status_code == 409
    [event] = bus_messages(env.broker_url)
    assert event.type == ConversationResolved.TYPE
    assert (event.payload.owner_id, event.payload.human_replied, event.payload.reply_to) == ("maria", False, "900")
    # When the customer last wrote: WhatsApp's 24-hour window for the survey counts from it.
    assert event.payload.last_customer_message_at == WED  # the time of "Where is my parcel?"
    # The notifier accepts it (nothing to send yet: the survey comes later).
    sender = SandboxSender("telegram", out=open("/dev/null", "w"))
    deps = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({"telegram": sender}),
                        compose_ack=lambda ev, at: "", clock=env.clock)
    assert handle_event(event, deps) == [] and sender.sent == []

    # Resolved conversations are still the owner's to see and reopen.
    r = env.client.get("/api/v1/conversations?status=resolved", headers=env.auth("maria"))
    assert [c["id"] for c in r.json["conversations"]] == [conv]
    r = env.client.post(url + "/reopen", headers=env.auth("maria"))
    assert r.status_code == 200 and r.json["conversation"]["status"] == "open"
    assert env.conv(conv).resolved_at is None
    assert env.client.post(url + "/reopen", headers=env.auth("maria")).status_code == 409

    # A human reply before resolving is what makes the customer eligible for a survey.
    env.client.post(url + "/reply", json={"text": "Done"}, headers=env.auth("maria"))
    env.client.post(url + "/resolve", headers=env.auth("maria"))
    resolved = [e for e in bus_messages(env.broker_url) if e.type == ConversationResolved.TYPE]
    assert [e.payload.human_replied for e in resolved] == [True]


def test_reopen_is_refused_while_the_customer_has_another_open_conversation(env) -> None:
    old = env.inbound("Where is my parcel?", lang="bg", user="901")
    env.client.post(f"/api/v1/conversations/{old}/resolve", headers=env.auth("maria"))
    env.clock.at = WED + timedelta(days=10)
    new = env.inbound("Another parcel", lang="bg", user="901", at=env.clock.at)
    assert new != old
    r = env.client.post(f"/api/v1/conversations/{old}/reopen", headers=env.auth("maria"))
    assert r.status_code == 409 and env.conv(old).status == "resolved"


# --- transfer -----------------------------------------------------------------------------------


def test_transfer_to_an_agent_or_a_team_stores_the_note(env) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg", user="300")
    url = f"/api/v1/conversations/{conv}/transfer"
    r = env.client.post(url, json={"agent_id": "jonas", "note": "speaks German with this customer"},
                        headers=env.auth("maria"))
    assert r.status_code == 200 and r.json["conversation"]["owner_id"] == "jonas"
    with env.sessions() as s:
        last = s.scalars(select(Assignment).where(Assignment.conversation_id == conv).order_by(Assignment.id)).all()[-1]
    assert last.agent_id == "jonas" and "speaks German with this customer" in last.reason and "maria" in last.reason
    # No longer maria's: she cannot act on it any more.
    assert env.client.post(url, json={"agent_id": "maria", "note": "back"}, headers=env.auth("maria")).status_code == 403

    # To the team: queued, and the queue drains at once to whoever has room.
    r = env.client.post(url, json={"team_id": "support", "note": "anyone free?"}, headers=env.auth("jonas"))
    assert r.status_code == 200
    with env.sessions() as s:
        reasons = [a.reason for a in s.scalars(select(Assignment).where(Assignment.conversation_id == conv)
                                                .order_by(Assignment.id))]
    assert reasons[-2].startswith("transfer:") and "anyone free?" in reasons[-2]
    assert reasons[-1].startswith("queue_drain:")
    assert env.conv(conv).owner_id is not None


# --- availability: hand-over and queue drain -----------------------------------------------------


def test_going_off_shift_hands_over_open_conversations_by_the_rules(env) -> None:
    first = env.inbound("Kur mano siuntinys?", lang="lt", user="10")
    second = env.inbound("Kur mano grąžinimas?", lang="lt", user="11")
    assert {env.conv(first).owner_id, env.conv(second).owner_id} == {"jonas"}
    r = env.client.put("/api/v1/agents/me/availability", json={"status": "off"}, headers=env.auth("jonas"))
    assert r.status_code == 200 and r.json["moved"] == [first, second]
    # Nobody else reads Lithuanian, so any skilled agent on shift; the first hand-over counts in
    # the load, so the two do not pile onto one person.
    assert {env.conv(first).owner_id, env.conv(second).owner_id} == {"anna", "maria"}
    with env.sessions() as s:
        reason = s.scalars(select(Assignment.reason).where(Assignment.conversation_id == first)
                           .order_by(Assignment.id)).all()[-1]
    assert reason.startswith("least_loaded: handover from jonas")
    # While off, new Lithuanian messages do not go to jonas either.
    assert env.conv(env.inbound("Labas, kur siuntinys?", lang="lt", user="12")).owner_id != "jonas"
    assert env.client.get("/api/v1/conversations?status=open", headers=env.auth("jonas")).json["conversations"] == []


def test_the_team_queue_drains_oldest_first_when_an_agent_comes_back(env) -> None:
    for agent in ("anna", "jonas", "maria", "taras"):
        assert env.client.put("/api/v1/agents/me/availability", json={"status": "on_leave"},
                              headers=env.auth(agent)).status_code == 200
    older = env.inbound("Where is my parcel?", lang="bg", user="20")
    env.clock.at = WED + timedelta(minutes=5)
    newer = env.inbound("Where is my other parcel?", lang="bg", user="21", at=env.clock.at)
    assert env.conv(older).owner_id is None and env.conv(older).team_id == "support"  # queued
    assert env.conv(newer).owner_id is None
    # The lead sees the queue.
    r = env.client.get("/api/v1/conversations", headers=env.auth("anna"))
    assert {c["id"] for c in r.json["conversations"]} == {older, newer}

    r = env.client.put("/api/v1/agents/me/availability", json={"status": "on_shift"}, headers=env.auth("maria"))
    assert r.status_code == 200 and r.json["moved"] == [older, newer]
    assert env.conv(older).owner_id == "maria" and env.conv(newer).owner_id == "maria"
    assert env.conv(older).assignment_reason.startswith("oldest queued conversation of team support")


def test_a_freed_slot_takes_the_oldest_queued_conversation(env, example_config) -> None:
    """Capacity frees on resolve: exactly one queued conversation per free slot, the oldest."""
    for agent in ("anna", "jonas", "taras"):
        env.client.put("/api/v1/agents/me/availability", json={"status": "off"}, headers=env.auth(agent))
    maria_capacity = example_config.agents["maria"].capacity
    mine = [env.inbound("Where is my parcel?", lang="bg", user=f"m{i}") for i in range(maria_capacity)]
    assert {env.conv(c).owner_id for c in mine} == {"maria"}
    queued = []
    for i in range(2):
        env.clock.at += timedelta(minutes=1)
        queued.append(env.inbound("Where is my parcel?", lang="bg", user=f"q{i}", at=env.clock.at))
    assert [env.conv(c).owner_id for c in queued] == [None, None]
    assert env.client.post(f"/api/v1/conversations/{mine[0]}/resolve", headers=env.auth("maria")).status_code == 200
    assert [env.conv(c).owner_id for c in queued] == ["maria", None]


def test_two_drains_at_once_never_give_one_conversation_two_owners(env, example_config) -> None:
    for agent in ("anna", "jonas", "maria", "taras"):
        env.client.put("/api/v1/agents/me/availability", json={"status": "off"}, headers=env.auth(agent))
    queued = [env.inbound("Where is my parcel?", lang="en", user=f"d{i}") for i in range(6)]
    with transaction(env.sessions) as s:
        for agent in ("anna", "maria"):
            s.merge(AgentAvailability(agent_id=agent, status="on_shift", changed_at=WED))
    barrier = threading.Barrier(2)
    results: dict[str, list[str]] = {}

    def drain(agent: str) -> None:
        barrier.wait()
        with transaction(env.sessions) as s:
            results[agent] = ops.drain_queue(s, example_config, agent, WED)

    threads = [threading.Thread(target=drain, args=(a,)) for a in ("anna", "maria")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    taken = results["anna"] + results["maria"]
    assert sorted(taken) == sorted(queued) and len(set(taken)) == len(taken)
    with env.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Assignment)
                        .where(Assignment.reason.like("queue_drain:%"))) == len(queued)


# --- merge ---------------------------------------------------------------------------------------


def test_merging_customers_moves_identities_and_conversations(env) -> None:
    a = env.inbound("Where is my parcel?", lang="bg", user="600")
    b = env.inbound("Return please", lang="bg", user="+359888000222", channel="sms", kind="phone")
    ca, cb = env.conv(a).customer_id, env.conv(b).customer_id
    assert ca != cb
    body = {"from": cb, "into": ca}
    assert env.client.post("/api/v1/customers/merge", json=body, headers=env.auth("jonas")).status_code == 403
    assert env.client.post("/api/v1/customers/merge", json={"from": "nobody", "into": ca},
                           headers=env.auth("anna")).status_code == 404
    assert env.client.post("/api/v1/customers/merge", json={"from": ca, "into": ca},
                           headers=env.auth("anna")).status_code == 422
    r = env.client.post("/api/v1/customers/merge", json=body, headers=env.auth("maria"))
    assert r.status_code == 409  # both open: one customer cannot have two open conversations
    env.client.post(f"/api/v1/conversations/{b}/resolve", headers=env.auth("maria"))
    r = env.client.post("/api/v1/customers/merge", json=body, headers=env.auth("maria"))
    assert r.status_code == 200 and r.json == {"customer_id": ca, "merged": cb, "conversations": [b]}
    with env.sessions() as s:
        assert s.get(Customer, cb).merged_into == ca
        assert set(s.scalars(select(Identity.value).where(Identity.customer_id == ca))) == {"600", "+359888000222"}
    history = env.client.get(f"/api/v1/conversations/{a}", headers=env.auth("maria")).json["history"]
    assert {m["channel"] for m in history} == {"telegram", "sms"}
    # The customer's next SMS now joins the open Telegram conversation.
    assert env.inbound("and where is the parcel?", lang="bg", user="+359888000222", channel="sms", kind="phone") == a


# --- category corrections -----------------------------------------------------------------------


def test_a_category_correction_is_kept_as_training_data(env) -> None:
    conv = env.inbound("My zipper broke after one day", lang="bg", user="700")
    assert env.conv(conv).category == "delivery"
    r = env.client.post(f"/api/v1/conversations/{conv}/category", json={"category": "product"},
                        headers=env.auth("maria"))
    assert r.status_code == 200 and r.json["conversation"]["category"] == "product"
    with env.sessions() as s:
        [c] = s.scalars(select(CategoryCorrection)).all()
    assert (c.old_category, c.new_category, c.agent_id, c.text) == (
        "delivery", "product", "maria", "My zipper broke after one day")
    assert env.app.config["LEARNED"] == [("My zipper broke after one day", "product", "bg")]


# --- OpenAPI ------------------------------------------------------------------------------------


def test_the_openapi_document_lists_every_path_and_method(env) -> None:
    r = env.client.get("/api/v1/openapi.json")
    assert r.status_code == 200
    doc = r.json
    assert doc["openapi"].startswith("3.")
    served = set()
    for rule in env.app.url_map.iter_rules():
        if rule.rule.startswith("/api/v1/") and not rule.rule.endswith("openapi.json"):
            path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
            served |= {(path, m.lower()) for m in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(p, m) for p, ops_ in doc["paths"].items() for m in ops_}
    assert served == documented and len(served) == 14  # with GET /macros, GET /kpis, the call-backs, reply-to/confirm
    reply = doc["paths"]["/api/v1/conversations/{conversation_id}/reply"]["post"]
    assert "requestBody" in reply and {"201", "401", "403", "404", "422"} <= set(reply["responses"])
    assert "ReplyRequest" in doc["components"]["schemas"]
    listing = doc["paths"]["/api/v1/conversations"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"status", "channel", "category", "promise_due_before"}

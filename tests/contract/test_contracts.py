"""Message contracts: what a producer encodes, a consumer decodes to the same value; anything
else is refused as a ContractError (poison), never half-read."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shared.contracts import (
    PAYLOAD_TYPES,
    ContractError,
    ConversationOpened,
    Envelope,
    Identity,
    InboundMessage,
    SurveyAnswer,
    decode,
    derive_id,
    encode,
    load,
)
from tests.contract.bus_samples import envelopes

AT = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)


def inbound(**kw) -> InboundMessage:
    base = dict(channel="telegram", external_id="123456:1", sender=Identity("telegram", "42"), reply_to="42",
                received_at=AT, text="Where is my parcel?", sender_name="Anna", language_hint="en")
    return InboundMessage(**{**base, **kw})


def test_inbound_round_trip_is_exact() -> None:
    msg = inbound(linked_identities=(Identity("phone", "+48601234567"),), meta={"message_id": 7})
    env = Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="c-1", occurred_at=AT)
    body = encode(env)
    assert body["type"] == "inbound.message" and body["version"] == 1
    assert decode(body) == env


def test_a_stored_event_is_published_as_stored_and_one_envelope_has_one_wire_form() -> None:
    # The router stores an event's wire form in its outbox row and publishes the row later: what
    # goes on the bus is the row, byte for byte, not a second dump that could differ from it.
    msg = inbound(meta={"message_id": 7, "nested": {"a": [1, 2]}})
    env = Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id="c-1", occurred_at=AT)
    row = json.loads(json.dumps(encode(env)))  # as the JSON column gives it back
    assert encode(env) == row
    relayed = decode(row)
    assert json.dumps(encode(relayed)) == json.dumps(row)
    # The payload's own values are not shared with the wire form (the dump walks them).
    assert encode(env)["payload"]["meta"] == {"message_id": 7, "nested": {"a": [1, 2]}}
    assert encode(env)["payload"]["meta"]["nested"] is not msg.meta["nested"]


def test_conversation_opened_round_trip() -> None:
    ev = ConversationOpened(
        conversation_id="c1", opening=1, reference="SB-ABCDEFGHIJ", customer_id="u1", customer_name="Anna",
        channel="telegram", reply_to="42", language="pl", category="delivery", owner_id="anna",
        owner_name="Anna Kowalska", assignment_reason="least_loaded", received_at=AT,
        promise_due=AT + timedelta(hours=4), inbound_message_id="m1", acknowledge=True, excerpt="Gdzie paczka?",
    )
    env = Envelope.wrap(ev, message_id="e1", correlation_id="c-1", occurred_at=AT)
    assert decode(encode(env)) == env


def test_called_back_round_trip() -> None:
    from shared.contracts import ConversationCalledBack

    ev = ConversationCalledBack(conversation_id="c1", agent_id="anna", phone="+48601234567", called_at=AT)
    env = Envelope.wrap(ev, message_id="e2", correlation_id="c-2", occurred_at=AT)
    body = encode(env)
    assert body["type"] == "conversation.called_back" and decode(body) == env


def test_mail_report_and_suppression_round_trip_and_route_to_their_queues() -> None:
    from shared.bus.topology import NOTIFIER_EVENTS, ROUTER_INBOUND
    from shared.contracts import AddressSuppressed, MailReport

    report = MailReport(original_message_id="177313050.9.ack@support.northwind.example", kind="bounce", permanent=True,
                        reason="bounce (permanent) 5.1.1 User unknown", occurred_at=AT, recipient="jan@exmaple.pl")
    back = AddressSuppressed(channel="email", address="jan@exmaple.pl", reason="bounced: 5.1.1", suppressed_at=AT,
                             conversation_id="c1")
    for ev, queue in ((report, NOTIFIER_EVENTS), (back, ROUTER_INBOUND)):
        env = Envelope.wrap(ev, message_id="e3", correlation_id="c-3", occurred_at=AT)
        assert decode(encode(env)) == env
        # The routing key is the type: the topic binding of the consuming service's queue takes it.
        assert any(ev.TYPE.split(".")[0] == key.split(".")[0] for key in queue.bindings)
    with pytest.raises(ContractError):
        decode({**encode(Envelope.wrap(report, message_id="e4", correlation_id="c", occurred_at=AT)),
                "payload": {**json.loads(json.dumps(encode(Envelope.wrap(report, message_id="e4", correlation_id="c",
                                                                          occurred_at=AT))["payload"])),
                            "kind": "read-receipt"}})


def test_same_provider_id_same_message_id() -> None:
    assert derive_id("telegram", "1:2") == derive_id("telegram", "1:2") != derive_id("telegram", "1:3")


def test_derived_ids_stay_the_uuid5_ids_already_stored() -> None:
    # Stored messages, outbox rows and dead letters carry ids derived before: a redelivery must
    # get the very same id, or it would be handled a second time.
    assert derive_id("telegram", "1:2") == "e95037a9-2bd1-5a03-90c2-300292cd3bf0"
    assert derive_id("event", "conversation.opened", "zażółć 😀") == "a5747074-519f-5102-91ad-afa2cecaaecd"
    namespace = uuid.UUID("6b1f3c9e-6f5e-4d2a-9a8e-5b9c0e8e7a11")
    for parts in [("",), ("a", ""), ("x" * 300, "\x1f", "ß")] + [("event", str(n)) for n in range(200)]:
        assert derive_id(*parts) == str(uuid.uuid5(namespace, "\x1f".join(parts)))


@pytest.mark.parametrize("body, problem", [
    ("not a dict", "not a JSON object"),
    ({"type": "inbound.message", "version": 9, "message_id": "m", "correlation_id": "c",
      "occurred_at": AT.isoformat(), "payload": {}}, "unknown message type"),
    ({"type": "inbound.message", "version": 1, "message_id": "m", "correlation_id": "c",
      "occurred_at": AT.isoformat(), "payload": {"channel": "fax"}}, "contract"),
    ({"type": "inbound.message", "version": 1, "message_id": "m", "correlation_id": "c",
      "occurred_at": "yesterday", "payload": {}}, "contract"),
])
def test_bad_bodies_are_contract_errors(body, problem) -> None:
    with pytest.raises(ContractError, match=problem):
        decode(body)


def test_producer_cannot_encode_what_consumer_would_reject() -> None:
    env = Envelope.wrap(inbound(channel="fax"), message_id="m", correlation_id="c", occurred_at=AT)
    with pytest.raises(ContractError):
        encode(env)


def test_what_postgresql_cannot_store_never_reaches_the_bus() -> None:
    """NUL and lone surrogates (fuzzing found them in Telegram and Meta text) would make the
    router's insert fail and the customer's message end in the dead-letter queue."""
    msg = InboundMessage(channel="telegram", external_id="1:9", sender=Identity("telegram", "9"), reply_to="9",
                         received_at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC), text="Where\x00 is my\ud800 parcel?",
                         sender_name="Ol\x00ena", meta={"caption": ["a\x00b"]})
    assert (msg.text, msg.sender_name, msg.meta) == ("Where is my parcel?", "Olena", {"caption": ["ab"]})
    envelope = Envelope.wrap(msg, message_id="m", correlation_id="c", occurred_at=msg.received_at)
    assert decode(json.loads(json.dumps(encode(envelope)))).payload == msg


def test_a_body_from_the_bus_is_stored_without_nul_or_lone_surrogates_wherever_they_are() -> None:
    """What another producer (or an older gateway) put on the bus is cleaned on the way in too,
    in the text, deep in meta and in meta's keys; a customer's literal backslash-u0000 is text."""
    body = {"type": "inbound.message", "version": 1, "message_id": "m", "correlation_id": "c",
            "occurred_at": AT.isoformat(), "payload": {
                "channel": "telegram", "external_id": "1:9", "sender": {"kind": "telegram", "value": "9"},
                "reply_to": "9", "received_at": AT.isoformat(), "text": "Where\x00 is my\ud800 parcel? \\u0000",
                "meta": {"caption": ["a\x00b", {"k\udc00ey": "v"}], "plain": "ok"}}}
    payload = decode(json.loads(json.dumps(body))).payload
    assert payload.text == "Where is my parcel? \\u0000"
    assert payload.meta == {"caption": ["ab", {"key": "v"}], "plain": "ok"}


# --- the wire form is pinned, and the schemas are the dataclasses' ------------------------------

WIRE = Path(__file__).resolve().parent.parent / "fixtures" / "bus" / "wire.json"


def test_every_message_type_has_a_pinned_wire_form() -> None:
    assert {env.type for env in envelopes()} == {event_type for event_type, _version in PAYLOAD_TYPES}
    assert [f"{env.message_id} {env.type}" for env in envelopes()] == list(json.loads(WIRE.read_text()))


@pytest.mark.parametrize("envelope", envelopes(), ids=lambda env: f"{env.message_id} {env.type}")
def test_the_wire_form_is_byte_for_byte_the_pinned_one(envelope) -> None:
    # wire.json was written by the marshmallow schemas the dataclass-made ones replaced: stored
    # outbox rows, dead letters and other versions' consumers read the same bytes as before.
    pinned = json.loads(WIRE.read_text())[f"{envelope.message_id} {envelope.type}"]
    assert json.dumps(encode(envelope), ensure_ascii=False) == json.dumps(pinned, ensure_ascii=False)
    assert decode(pinned) == envelope


def test_a_body_may_leave_out_what_may_be_none_but_not_what_is_required() -> None:
    body = encode(Envelope.wrap(inbound(), message_id="m", correlation_id="c", occurred_at=AT))
    opened = json.loads(WIRE.read_text())["m3 conversation.opened"]
    lean = {k: v for k, v in opened["payload"].items() if v is not None and k != "excerpt"}
    assert decode({**opened, "payload": lean}).payload.owner_id is None  # a nullable field without a default
    with pytest.raises(ContractError, match=r"payload\.sender: Field required"):
        decode({**body, "payload": {k: v for k, v in body["payload"].items() if k != "sender"}})


@pytest.mark.parametrize("change, problem", [
    ({"extra": 1}, r"payload\.extra: Unknown field"),
    ({"sender": {"kind": "telegram", "value": "42", "x": 1}}, r"payload\.sender\.x: Unknown field"),
    ({"sender": {"kind": "fax", "value": "42"}}, r"payload\.sender\.kind: Must be one of"),
    ({"external_id": "x" * 256}, r"payload\.external_id: Length must be between 1 and 255"),
    ({"received_at": 1764000000}, r"payload\.received_at: Not a valid datetime"),
    ({"attachments": [{"url": "https://x"}]}, r"payload\.attachments\.0\.content_type: Field required"),
    ({"thread_refs": "<a@b>"}, r"payload\.thread_refs"),
])
def test_each_problem_is_named_by_its_place(change, problem) -> None:
    body = json.loads(json.dumps(encode(Envelope.wrap(inbound(), message_id="m", correlation_id="c",
                                                      occurred_at=AT))))
    with pytest.raises(ContractError, match=problem):
        decode({**body, "payload": {**body["payload"], **change}})


def test_load_checks_one_payload_against_its_dataclass() -> None:
    answer = load(SurveyAnswer, {"channel": "sms", "external_id": "SM1", "token": "abcdefgh12",
                                 "received_at": "2026-11-20T16:55:00"})
    assert answer == SurveyAnswer(channel="sms", external_id="SM1", token="abcdefgh12", received_at=AT.replace(second=0))
    with pytest.raises(ContractError, match="token: is not a survey token"):
        load(SurveyAnswer, {"channel": "sms", "external_id": "SM1", "token": "short", "received_at": AT.isoformat()})
    # A comment is a customer's words: a lone surrogate in it counts as one character, not a reason to refuse.
    assert load(SurveyAnswer, {"channel": "sms", "external_id": "SM1", "token": "abcdefgh12",
                               "received_at": AT.isoformat(), "comment": "ok \ud800"}).comment == "ok \ud800"

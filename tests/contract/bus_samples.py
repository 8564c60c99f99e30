"""One message of every type on the bus, each field set, and one with only what it must have:
the wire form of each is pinned in tests/fixtures/bus/wire.json (written by the marshmallow
schemas that preceded the dataclass-made ones, so the wire form did not change with them)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

from shared import contracts as c

AT = datetime(2026, 11, 20, 16, 55, 1, 123456, tzinfo=UTC)
AT2 = datetime(2026, 11, 21, 9, 0, tzinfo=timezone(timedelta(hours=1)))


def payloads() -> Iterator[object]:
    ident = c.Identity
    yield c.InboundMessage(
        channel="telegram", external_id="123456:1", sender=ident("telegram", "42"), reply_to="42",
        received_at=AT, text="Where is my parcel? ąę", sender_name="Anna", subject="Re: x", language_hint="en",
        attachments=(c.Attachment("image/jpeg", url="https://x/y", name="a.jpg", size=12), c.Attachment("text/plain")),
        linked_identities=(ident("phone", "+48601234567"),), automatic=True, thread_refs=("<a@b>", "<c@d>"),
        meta={"message_id": 7, "nested": {"a": [1, 2.5, None, True]}, "s": "ü"}, sent_at=AT2)
    yield c.InboundMessage(channel="email", external_id="x", sender=ident("email", "a@b.c"), reply_to="a@b.c",
                           received_at=AT)
    yield c.ConversationOpened(
        conversation_id="c1", opening=1, reference="SB-ABCDEFGHIJ", customer_id="u1", customer_name="Anna",
        channel="telegram", reply_to="42", language="pl", category="delivery", owner_id="anna", owner_name="Anna K",
        assignment_reason="least_loaded", received_at=AT, promise_due=AT2, inbound_message_id="m1", acknowledge=True,
        excerpt="Gdzie?", reply_from="+481", subject="s", in_reply_to="<x@y>", team_id="t1")
    yield c.ConversationOpened(
        conversation_id="c1", opening=2, reference="R", customer_id="u1", customer_name=None, channel="sms",
        reply_to="42", language="pl", category="other", owner_id=None, owner_name=None, assignment_reason="queue",
        received_at=AT, promise_due=AT, inbound_message_id="m1", acknowledge=False)
    yield c.Redirected(channel="sms", reply_to="+48", language="en", received_at=AT, inbound_message_id="m",
                       reply_from="+1")
    yield c.DeliveryStatus(channel="sms", provider_message_id="SM1", status="failed", occurred_at=AT,
                           error_code="30003", error_message="Unreachable")
    yield c.DeliveryStatus(channel="sms", provider_message_id="SM1", status="sent", occurred_at=AT)
    yield c.ConversationReply(reply_id="r1", conversation_id="c1", channel="whatsapp", reply_to="48", reply_from=None,
                              text="Hello", agent_id="a", language="pl", last_customer_message_at=AT)
    yield c.ConversationResolved(
        conversation_id="c", customer_id="u", channel="email", reply_to="a@b", language="en", owner_id="o",
        resolved_at=AT, human_replied=True, opening=3, reply_from="s@x", customer_name="N",
        last_customer_message_at=AT2)
    yield c.ConversationResolved(conversation_id="c", customer_id="u", channel="email", reply_to="a@b",
                                 language="en", owner_id=None, resolved_at=AT, human_replied=False)
    yield c.ConversationCalledBack(conversation_id="c", agent_id="a", phone="+48", called_at=AT)
    yield c.SurveyResult(conversation_id="c", opening=1, kind="nps", sent_at=AT, score=9, answered_at=AT2,
                         channel="sms", address="+48", token="abcdefgh12", commented=True)
    yield c.SurveyResult(conversation_id="c", opening=1, kind="csat", sent_at=AT)
    yield c.SurveyAnswer(channel="sms", external_id="SM1", token="abcdefgh12", received_at=AT, score=0,
                         comment="meh")
    yield c.SurveyOptOut(channel="sms", external_id="SM1", address="+48", received_at=AT, customer_id="u",
                         token="abcdefgh12")
    yield c.SurveyOptOut(channel="email", external_id="l", address=None, received_at=AT)
    yield c.ConversationMessage(conversation_id="c", owner_id="o", channel="sms", excerpt="e", received_at=AT,
                                inbound_message_id="m", reference="R", customer_name="N", promise_due=AT2)
    yield c.ConversationAssigned(
        conversation_id="c", opening=1, owner_id=None, team_id="t", previous_owner_id="p", reason="transfer",
        assigned_at=AT, channel="sms", category="x", reference="R", customer_name="N", promise_due=AT)
    yield c.MailReport(original_message_id="1.ack@x", kind="complaint", permanent=False, reason="", occurred_at=AT,
                       recipient="a@b")
    yield c.AddressSuppressed(channel="email", address="a@b", reason="bounced", suppressed_at=AT,
                              conversation_id="c")
    yield c.PhoneOwnership(conversation_id="c", phones=("+48601234567", "+1"), owner_id="o", open=True, sequence=0,
                           changed_at=AT)


def envelopes() -> list[c.Envelope]:
    return [c.Envelope.wrap(p, message_id=f"m{i}", correlation_id="corr", occurred_at=AT2)
            for i, p in enumerate(payloads())]

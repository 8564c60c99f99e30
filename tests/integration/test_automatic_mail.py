"""Automatic mail through the router's and the notifier's own handlers, against the real PostgreSQL:
a bounce of a mail we sent is stored under the "automatic" filter, marks our outbox row failed,
suppresses the address and leaves a note agents see; a vacation reply and spam open nothing, send
nothing and count in no KPI; the API shows them only under their filter, with a counter by kind.
Real fixtures from tests/fixtures/email/automatic/ (see its SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.gateway.channels.email import parse_mime
from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import Outbox, Suppression
from services.notifier.senders import Registry
from services.notifier.senders.sandbox import SandboxSender
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Conversation, Message, RouterOutbox
from shared.bus.publisher import connect
from shared.bus.topology import declare
from shared.contracts import AddressSuppressed, Envelope, MailReport, derive_id
from shared.db import transaction
from tests.integration.test_agent_api import WED, classify, make_env

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email" / "automatic"
OURS = {"support.northwind.example"}
#: What bounce_postfix_dsn_dmarc.eml quotes and names: we play the sender of that message.
QUOTED_ID = "20201113004243.AF578C0196A@smtp.example.jp"
BOUNCED = "kijitora@google.example.com"


@pytest.fixture
def env(example_config, pg_url, rabbit_url):
    with connect(rabbit_url) as conn:
        declare(conn)
    e, engine = make_env(example_config, pg_url, rabbit_url)
    yield e
    engine.dispose()


def router_deps(env) -> RouterDeps:
    return RouterDeps(config=env.app.config["SB"], sessions=env.sessions, classify=classify,
                      detect_language=lambda text, hints: "en")


def route_mail(env, name: str) -> tuple[Envelope, list[Envelope]]:
    msg = parse_mime((FIXTURES / f"{name}.eml").read_bytes(), received_at=WED, our_domains=OURS)
    envelope = Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id=f"c-{name}",
                             occurred_at=WED)
    return envelope, handle_inbound(envelope, router_deps(env))


def test_a_bounce_of_our_mail_fails_the_outbox_row_suppresses_the_address_and_agents_see_it(env, example_config):
    # The customer wrote; we acknowledged by mail (the notifier's outbox row, sent, with our Message-ID).
    customer_conv = env.inbound("Where is my parcel?", lang="en", user=BOUNCED, channel="email", kind="email")
    with transaction(env.sessions) as s:
        s.add(Outbox(idempotency_key=f"ack:{customer_conv}:1", kind="ack", conversation_id=customer_conv,
                     channel="email", address=BOUNCED, body="Thank you", status="sent", attempts=1,
                     provider_message_id=QUOTED_ID, correlation_id="c0", source_message_id="m0", created_at=WED,
                     sent_at=WED))

    envelope, events = route_mail(env, "bounce_postfix_dsn_dmarc")
    # Stored on its own, no owner, no promise event; the only event is the report to the notifier.
    assert [e.type for e in events] == [MailReport.TYPE]
    report: MailReport = events[0].payload
    assert (report.original_message_id, report.kind, report.permanent) == (QUOTED_ID, "bounce", True)
    with env.sessions() as s:
        conv = s.get(Conversation, s.scalar(select(Message.conversation_id).where(Message.id == envelope.message_id)))
        assert (conv.status, conv.owner_id, conv.category_reason["automatic"]) == ("automatic", None, "bounce")
        assert s.get(Conversation, customer_conv).status == "open"  # the customer's own conversation untouched

    sender = SandboxSender("email", out=open("/dev/null", "w"))
    notifier = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({"email": sender}),
                            compose_ack=lambda ev: "", clock=env.clock)
    back = handle_event(events[0], notifier)
    assert [e.type for e in back] == [AddressSuppressed.TYPE] and sender.sent == []
    with env.sessions() as s:
        row = s.scalar(select(Outbox).where(Outbox.provider_message_id == QUOTED_ID))
        assert row.delivery_status == "failed" and "5.7.26" in row.delivery_error
        suppression = s.scalar(select(Suppression).where(Suppression.address == BOUNCED))
        assert suppression is not None and suppression.reason.startswith("bounced: bounce (permanent) 5.7.26")

    # The router keeps the suppression as a note in the customer's conversation: the agent sees it.
    assert handle_inbound(back[0], router_deps(env)) == []
    handle_inbound(back[0], router_deps(env))  # a redelivery adds nothing
    with env.sessions() as s:
        notes = s.scalars(select(Message).where(Message.conversation_id == customer_conv,
                                                Message.direction == "note")).all()
        assert [n.text.split(":")[0] for n in notes] == [f"No more messages are sent to {BOUNCED}"]
    detail = env.client.get(f"/api/v1/conversations/{customer_conv}", headers=env.auth("anna")).json
    assert any("No more messages are sent to" in m["text"] for m in detail["history"])

    # A redelivered bounce re-publishes the same report; the notifier changes nothing and the next
    # acknowledgement to that address would be skipped (the suppression is what _claim reads).
    _, again = route_mail(env, "bounce_postfix_dsn_dmarc")
    assert [e.message_id for e in again] == [events[0].message_id]
    assert [e.message_id for e in handle_event(again[0], notifier)] == [back[0].message_id]
    with env.sessions() as s:
        assert len(s.scalars(select(Suppression).where(Suppression.address == BOUNCED)).all()) == 1


def test_a_bounce_quoting_a_message_that_is_not_ours_suppresses_nothing(env, example_config):
    _, events = route_mail(env, "bounce_yandex_dsn_ru")
    notifier = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({}),
                            compose_ack=lambda ev: "", clock=env.clock)
    assert handle_event(events[0], notifier) == []
    with env.sessions() as s:
        assert s.scalars(select(Suppression)).all() == []


def test_vacation_spam_and_receipts_open_nothing_and_show_only_under_their_filter(env):
    for name in ("vacation_exchange_automatic_reply", "spam_spamassassin_status_yes_vger",
                 "read_receipt_rfc_mdn_mimekit", "vacation_icloud_x_apple_action"):
        _, events = route_mail(env, name)
        assert events == [], name  # no acknowledgement, no promise, no agent notice: no event at all
    with env.sessions() as s:
        assert s.scalars(select(RouterOutbox)).all() == []
        assert {c.status for c in s.scalars(select(Conversation))} == {"automatic"}

    # A plain agent sees automatic mail only under its filter; never in the default list.
    default = env.client.get("/api/v1/conversations", headers=env.auth("jonas")).json["conversations"]
    assert default == []
    listed = env.client.get("/api/v1/conversations?status=automatic", headers=env.auth("jonas")).json
    assert len(listed["conversations"]) == 4 and all(c["owner_id"] is None for c in listed["conversations"])
    some = listed["conversations"][0]["id"]
    assert env.client.post(f"/api/v1/conversations/{some}/reply", json={"text": "Hello"},
                           headers=env.auth("jonas")).status_code == 409
    assert env.client.post(f"/api/v1/conversations/{some}/reopen", headers=env.auth("jonas")).status_code == 409

    # Outside the KPIs, counted on their own.
    kpis = env.client.get("/api/v1/kpis?from=2026-11-24&to=2026-11-26", headers=env.auth("anna")).json
    assert kpis["conversations"] == 0
    assert kpis["automatic_mail"] == {"total": 4, "by_kind": {"read-receipt": 1, "spam": 1, "vacation": 2}}


def test_a_customers_real_mail_after_their_vacation_reply_opens_a_normal_conversation(env):
    route_mail(env, "vacation_exchange_automatic_reply")
    conv = env.inbound("Where is my parcel?", lang="en", user="nekonyaan@example.org", channel="email", kind="email")
    assert env.conv(conv).status == "open" and env.conv(conv).owner_id is not None


def test_a_temporary_failure_marks_the_message_failed_but_suppresses_nothing(env, example_config):
    with transaction(env.sessions) as s:
        s.add(Outbox(idempotency_key="ack:c9:1", kind="ack", conversation_id=None, channel="email", address=BOUNCED,
                     body="Thank you", status="sent", attempts=1, provider_message_id=QUOTED_ID,
                     correlation_id="c0", source_message_id="m0", created_at=WED, sent_at=WED))
    report = MailReport(original_message_id=QUOTED_ID, kind="bounce", permanent=False,
                        reason="bounce (temporary) 4.2.2 mailbox full", occurred_at=WED, recipient=BOUNCED)
    notifier = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({}),
                            compose_ack=lambda ev: "", clock=env.clock)
    assert handle_event(Envelope.wrap(report, message_id="r1", correlation_id="c", occurred_at=WED), notifier) == []
    with env.sessions() as s:
        row = s.scalar(select(Outbox).where(Outbox.provider_message_id == QUOTED_ID))
        assert (row.delivery_status, row.delivery_error) == ("failed", "bounce (temporary) 4.2.2 mailbox full")
        assert s.scalars(select(Suppression)).all() == []


class OptedOutSms:
    """Twilio's answer to a number that texted STOP (error 21610), as the SMS sender raises it."""

    def send(self, address, text, options=None):
        from services.notifier.senders.twilio_sms import OptedOut

        raise OptedOut("Attempt to send to unsubscribed recipient (21610)")


def test_an_sms_opt_out_met_by_a_reply_is_shown_to_agents_like_a_bounce(env, example_config):
    from shared.contracts import ConversationReply

    conv = env.inbound("Gdzie jest moja paczka?", lang="pl", user="+48600100200", channel="sms", kind="phone")
    reply = ConversationReply(reply_id="r-1", conversation_id=conv, channel="sms", reply_to="+48600100200",
                              reply_from=None, text="Paczka jest w drodze.", agent_id="anna", language="pl")
    notifier = NotifierDeps(config=example_config, sessions=env.sessions, senders=Registry({"sms": OptedOutSms()}),
                            compose_ack=lambda ev, at: "", clock=env.clock)
    out = handle_event(Envelope.wrap(reply, message_id="e-r-1", correlation_id="c", occurred_at=WED), notifier)
    assert [e.type for e in out] == [AddressSuppressed.TYPE] and out[0].payload.conversation_id == conv
    handle_inbound(out[0], router_deps(env))
    detail = env.client.get(f"/api/v1/conversations/{conv}", headers=env.auth("anna")).json
    assert any(m["text"].startswith("No more messages are sent to +48600100200: opted out")
               for m in detail["history"])

"""E-mail threading and redirect mode, through the router's and the notifier's real handlers on
PostgreSQL: a reply finds its conversation by the [SB-…] token or by In-Reply-To; the
acknowledgement of a mail is a threaded, loop-safe answer; a redirect-mode channel opens no
conversation and gets one redirect note per address."""

from __future__ import annotations

import io
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import Outbox
from services.notifier.senders import Registry
from services.notifier.senders.sandbox import SandboxSender
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Conversation, Message
from shared.config import Channel
from shared.contracts import Envelope, Identity, InboundMessage, derive_id

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday, open


class Verdict:
    category, confidence, reason = "delivery", 0.9, {"rule": "parcel"}


def router_deps(config, sessions) -> RouterDeps:
    return RouterDeps(config=config, sessions=sessions, classify=lambda *a: Verdict(),
                      detect_language=lambda text, hints: "en")


def mail(n: int, at: datetime, *, sender: str = "piotr@example.pl", subject: str = "Parcel 4471",
         refs: tuple[str, ...] = (), reference: str | None = None, verified: bool = True,
         reply_to: str | None = None, text: str = "Where is my parcel?") -> Envelope:
    """A mail as the gateway hands it over; `verified`: our mail server's verdict on the From."""
    meta: dict = {"reference": reference} if reference else {}
    meta["sender_auth"] = ({"verified": True, "method": "dmarc", "reason": "dmarc=pass for example.pl"} if verified
                           else {"verified": False, "method": None, "reason": "dmarc=fail for example.pl"})
    msg = InboundMessage(channel="email", external_id=f"m{n}@example.pl", sender=Identity("email", sender),
                         reply_to=reply_to or sender, received_at=at, text=text, subject=subject,
                         sender_name="Piotr", thread_refs=refs, meta=meta)
    return Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id=f"c{n}", occurred_at=at)


def resolve(sessions, conversation_id: str, at: datetime) -> None:
    with sessions.begin() as s:
        conv = s.get(Conversation, conversation_id)
        conv.status, conv.resolved_at = "resolved", at


def conversation_of(sessions, external_id: str) -> str:
    with sessions() as s:
        return s.scalar(select(Message.conversation_id).where(Message.external_id == external_id))


def test_a_mail_acknowledgement_carries_the_subject_and_the_message_id_it_answers(example_config, sessions) -> None:
    [event] = handle_inbound(mail(1, AT), router_deps(example_config, sessions))
    assert event.payload.subject == "Parcel 4471" and event.payload.in_reply_to == "m1@example.pl"

    sender = SandboxSender("email", out=io.StringIO())
    deps = NotifierDeps(config=example_config, sessions=sessions, senders=Registry({"email": sender}),
                        compose_ack=lambda ev, at: "Thank you", clock=lambda: AT)
    handle_event(event, deps)
    handle_event(event, deps)
    # The owner's assignment notice goes by e-mail too (services/notifier/promises.py); this is the customer's.
    [sent] = [m for m in sender.sent if m.address == "piotr@example.pl"]
    assert sent.options == {"subject": "Re: Parcel 4471", "reference": event.payload.reference,
                            "automatic": True, "in_reply_to": "m1@example.pl"}


def test_the_customer_answering_with_the_reference_joins_the_conversation(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    ref = opened.payload.reference
    events = handle_inbound(mail(2, AT + timedelta(minutes=5), subject=f"Re: Parcel 4471 [{ref}]", reference=ref),
                            deps)
    # Joined, not a new conversation: no second acknowledgement, only the owner's notice.
    assert [e.type for e in events] == ["conversation.message"]
    assert conversation_of(sessions, "m2@example.pl") == opened.payload.conversation_id


def test_a_reply_to_an_old_resolved_thread_reopens_it_with_the_same_owner(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    conv_id = opened.payload.conversation_id
    resolve(sessions, conv_id, AT + timedelta(hours=1))
    later = AT + timedelta(days=30)  # well past the 7-day reopen window
    [reopened] = handle_inbound(mail(2, later, subject="Re: Parcel 4471", refs=("m1@example.pl",)), deps)
    assert reopened.payload.conversation_id == conv_id and reopened.payload.opening == 2
    assert reopened.payload.owner_id == opened.payload.owner_id


def test_a_new_mail_after_the_window_without_a_thread_opens_a_new_conversation(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    resolve(sessions, opened.payload.conversation_id, AT + timedelta(hours=1))
    [fresh] = handle_inbound(mail(2, AT + timedelta(days=30), subject="Another question"), deps)
    assert fresh.payload.conversation_id != opened.payload.conversation_id and fresh.payload.opening == 1


def instagram(n: int, user: str = "17841400000000001") -> Envelope:
    msg = InboundMessage(channel="instagram", external_id=f"ig-mid-{n}", sender=Identity("igsid", user),
                         reply_to=user, received_at=AT, text="Hi, is the jacket in stock?")
    return Envelope.wrap(msg, message_id=derive_id("instagram", msg.external_id), correlation_id=f"ig{n}",
                         occurred_at=AT)


def test_a_redirect_mode_channel_opens_no_conversation_and_is_told_once_where_to_write(
        example_config, sessions) -> None:
    assert example_config.channel_mode("instagram") == "redirect"
    deps = router_deps(example_config, sessions)
    first = handle_inbound(instagram(1), deps)
    again = handle_inbound(instagram(1), deps)  # the provider's redelivery
    second = handle_inbound(instagram(2), deps)  # the same customer writes again
    assert [e.type for e in first] == ["conversation.redirected"] and first == again
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Conversation)) == 0

    sender = SandboxSender("instagram", out=io.StringIO())
    ndeps = NotifierDeps(config=example_config, sessions=sessions, senders=Registry({"instagram": sender}),
                         compose_ack=lambda ev, at: "never used", clock=lambda: AT)
    for event in first + again + second:
        handle_event(event, ndeps)
    [note] = sender.sent
    assert note.address == "17841400000000001"
    assert "https://m.me/northwind" in note.text and "support@northwind.example" in note.text
    with sessions() as s:
        assert s.scalar(select(Outbox.kind)) == "redirect"


def test_an_active_channel_is_not_redirected(example_config, sessions) -> None:
    config = replace(example_config, channels={**example_config.channels, "instagram": Channel(mode="active")})
    [event] = handle_inbound(instagram(1), router_deps(config, sessions))
    assert event.type == "conversation.opened" and event.payload.acknowledge is True


def test_an_agents_mail_reply_continues_the_acknowledgements_thread_as_a_human(example_config, sessions) -> None:
    from shared.contracts import ConversationReply

    [opened] = handle_inbound(mail(1, AT), router_deps(example_config, sessions))
    sender = SandboxSender("email", out=io.StringIO())
    deps = NotifierDeps(config=example_config, sessions=sessions, senders=Registry({"email": sender}),
                        compose_ack=lambda ev, at: "Thank you", clock=lambda: AT)
    handle_event(opened, deps)
    reply = ConversationReply(reply_id="r-1", conversation_id=opened.payload.conversation_id, channel="email",
                              reply_to="piotr@example.pl", reply_from=None, text="Your parcel left today.",
                              agent_id="anna", language="en", last_customer_message_at=AT)
    handle_event(Envelope.wrap(reply, message_id="reply-event-1", correlation_id="c", occurred_at=AT), deps)
    ack, answer = [m for m in sender.sent if m.address == "piotr@example.pl"]  # not the owner's notice
    assert answer.text == "Your parcel left today."
    assert answer.options == {"subject": "Re: Parcel 4471", "reference": opened.payload.reference,
                              "in_reply_to": "m1@example.pl", "references": ["sandbox-email-1"]}
    assert "automatic" not in answer.options  # a person's answer: autoresponders may answer it


def test_an_agent_answering_a_notice_by_mail_leaves_a_note_not_a_customer_message(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    ref = opened.payload.reference
    # anna's notices go to anna@northwind.example; the notice's subject carries the [SB-…] token.
    answer = mail(2, AT + timedelta(minutes=3), sender="Anna@Northwind.example",
                  subject=f"Re: New conversation from Piotr [{ref}]", reference=ref)
    assert handle_inbound(answer, deps) == []  # no acknowledgement, no notice to herself
    assert handle_inbound(answer, deps) == []  # a redelivery is the same note
    with sessions() as s:
        rows = s.scalars(select(Message).where(Message.external_id == "m2@example.pl")).all()
        assert [(m.direction, m.sender_kind, m.sender_value, m.conversation_id) for m in rows] == [
            ("note", "agent", "anna", opened.payload.conversation_id)]
        # Not a customer of ours, and the conversation is still the customer's one.
        assert s.scalar(select(func.count()).select_from(Conversation)) == 1
    # Mail from her address that answers nothing is an ordinary message (she may be trying us out).
    [own] = handle_inbound(mail(3, AT + timedelta(minutes=4), sender="anna@northwind.example",
                                subject="Testing the support address"), deps)
    assert own.type == "conversation.opened" and own.payload.conversation_id != opened.payload.conversation_id

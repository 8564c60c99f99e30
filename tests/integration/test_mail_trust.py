"""Nobody writes into another customer's conversation, and a forged From gets no answer (issue 13).

The router's real handler on PostgreSQL: a thread (reference, In-Reply-To) joins only the sender's
own customer's conversation; mail our mail server did not vouch for never lands in the conversation
of the customer who owns that address; a Reply-To that is none of the customer's addresses waits
for an agent; agents' notes by mail are marked when unverified; references cannot be computed.
"""

from __future__ import annotations

import base64
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from services.router.handlers import handle_inbound
from services.router.models import Conversation, Customer, Identity, Message
from shared.contracts import derive_id
from shared.reference import find_in_subject
from tests.integration.test_email_threads_and_redirect import AT, mail, resolve, router_deps

pytestmark = pytest.mark.integration


def stored(sessions, external_id: str) -> tuple[Message, Conversation]:
    with sessions() as s:
        msg = s.scalar(select(Message).where(Message.external_id == external_id))
        conv = s.get(Conversation, msg.conversation_id)
        s.expunge_all()
        return msg, conv


def conversations(sessions) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(Conversation))


def test_quoting_someone_elses_reference_opens_the_senders_own_conversation(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [victim] = handle_inbound(mail(1, AT), deps)
    ref = victim.payload.reference
    # Somebody else (authenticated, even) puts Piotr's reference in the subject.
    [event] = handle_inbound(mail(2, AT + timedelta(minutes=5), sender="mallory@example.org",
                                  subject=f"Re: Parcel 4471 [{ref}]", reference=ref), deps)
    assert event.type == "conversation.opened"
    assert event.payload.conversation_id != victim.payload.conversation_id
    msg, conv = stored(sessions, "m2@example.pl")
    assert conv.customer_id != victim.payload.customer_id
    # The agent sees that it quoted another conversation.
    assert msg.details["quoted_reference"] == ref
    # Piotr's conversation got nothing and its owner no notice.
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Message)
                        .where(Message.conversation_id == victim.payload.conversation_id)) == 1


def test_in_reply_to_someone_elses_mail_does_not_join_it(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [victim] = handle_inbound(mail(1, AT), deps)
    [event] = handle_inbound(mail(2, AT + timedelta(minutes=1), sender="mallory@example.org",
                                  refs=("m1@example.pl",)), deps)
    assert event.type == "conversation.opened" and event.payload.conversation_id != victim.payload.conversation_id
    msg, _ = stored(sessions, "m2@example.pl")
    assert msg.details["quoted_reference"] == victim.payload.reference


def test_a_guessed_reference_that_matches_nothing_is_shown_too(example_config, sessions) -> None:
    [event] = handle_inbound(mail(1, AT, subject="Re: order [SB-AAAAAAAAAA]", reference="SB-AAAAAAAAAA"),
                             router_deps(example_config, sessions))
    assert event.type == "conversation.opened"
    msg, _ = stored(sessions, "m1@example.pl")
    assert msg.details["quoted_reference"] == "SB-AAAAAAAAAA"


def test_a_forged_from_does_not_reach_the_address_owners_conversation(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [victim] = handle_inbound(mail(1, AT), deps)
    ref = victim.payload.reference
    # From: piotr@…, but our mail server did not vouch for it; it even quotes his reference.
    [forged] = handle_inbound(mail(2, AT + timedelta(minutes=2), verified=False, subject=f"Re: [{ref}]",
                                   reference=ref, text="Please send the invoice to my new address"), deps)
    assert forged.type == "conversation.opened"
    assert forged.payload.conversation_id != victim.payload.conversation_id
    assert forged.payload.reply_to == "piotr@example.pl"  # the acknowledgement goes to the real address
    msg, conv = stored(sessions, "m2@example.pl")
    assert (msg.sender_kind, msg.details["sender_verified"], conv.unverified_sender) == (
        "email-unverified", False, True)
    with sessions() as s:
        kinds = {(i.kind, i.value): i.customer_id for i in s.scalars(select(Identity))}
    assert kinds == {("email", "piotr@example.pl"): victim.payload.customer_id,
                     ("email-unverified", "piotr@example.pl"): conv.customer_id}
    # The next unverified mail from that address joins the unverified one, not Piotr's.
    [joined] = handle_inbound(mail(3, AT + timedelta(minutes=3), verified=False), deps)
    assert joined.type == "conversation.message" and joined.payload.conversation_id == conv.id
    # And authenticated mail from Piotr still joins his own.
    [his] = handle_inbound(mail(4, AT + timedelta(minutes=4)), deps)
    assert his.type == "conversation.message" and his.payload.conversation_id == victim.payload.conversation_id
    _, his_conv = stored(sessions, "m4@example.pl")
    assert his_conv.unverified_sender is False


def test_a_forged_from_with_the_thiefs_reply_to_answers_the_address_owner_only(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    handle_inbound(mail(1, AT), deps)
    [forged] = handle_inbound(mail(2, AT + timedelta(minutes=2), verified=False, reply_to="thief@evil.example"), deps)
    assert forged.payload.reply_to == "piotr@example.pl"
    _, conv = stored(sessions, "m2@example.pl")
    assert (conv.reply_to, conv.reply_to_pending) == ("piotr@example.pl", "thief@evil.example")


def test_a_reply_to_among_the_customers_addresses_is_used_at_once(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [first] = handle_inbound(mail(1, AT, sender="office@example.pl"), deps)
    [second] = handle_inbound(mail(2, AT, sender="piotr@example.pl"), deps)
    # An agent merges the two addresses into one customer (what the API's merge does).
    with sessions.begin() as s:
        for ident in s.scalars(select(Identity).where(Identity.customer_id == second.payload.customer_id)):
            ident.customer_id = first.payload.customer_id
        s.get(Customer, second.payload.customer_id).merged_into = first.payload.customer_id
        for conv in s.scalars(select(Conversation)):
            conv.status, conv.resolved_at = "resolved", AT
    [event] = handle_inbound(mail(3, AT + timedelta(days=10), sender="office@example.pl",
                                  reply_to="piotr@example.pl", subject="New order"), deps)
    assert event.payload.reply_to == "piotr@example.pl"
    _, conv = stored(sessions, "m3@example.pl")
    assert conv.reply_to_pending is None


def test_a_new_reply_to_in_an_open_conversation_waits_for_an_agent(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    handle_inbound(mail(2, AT + timedelta(minutes=1), reply_to="piotr.private@example.com"), deps)
    _, conv = stored(sessions, "m2@example.pl")
    assert conv.id == opened.payload.conversation_id
    assert (conv.reply_to, conv.reply_to_pending) == ("piotr@example.pl", "piotr.private@example.com")


def test_an_unverified_note_from_an_agents_address_is_kept_but_marked(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    ref = opened.payload.reference
    forged = mail(2, AT + timedelta(minutes=3), sender="anna@northwind.example", verified=False,
                  subject=f"Re: New conversation [{ref}]", reference=ref, text="Refund approved, send it to IBAN X")
    genuine = mail(3, AT + timedelta(minutes=4), sender="anna@northwind.example",
                   subject=f"Re: New conversation [{ref}]", reference=ref, text="Called him, all sorted")
    assert handle_inbound(forged, deps) == [] and handle_inbound(genuine, deps) == []
    notes = {}
    for external_id in ("m2@example.pl", "m3@example.pl"):
        msg, conv = stored(sessions, external_id)
        notes[external_id] = (msg.direction, msg.sender_value, conv.id, msg.details["sender_verified"])
    assert notes == {"m2@example.pl": ("note", "anna", opened.payload.conversation_id, False),
                     "m3@example.pl": ("note", "anna", opened.payload.conversation_id, True)}


def test_references_cannot_be_computed_from_the_message(example_config, sessions) -> None:
    envelope = mail(1, AT)
    [opened] = handle_inbound(envelope, router_deps(example_config, sessions))
    ref = opened.payload.reference
    # The format the gateway recognises in a subject…
    assert find_in_subject(f"Re: order [{ref.lower()}]") == ref and re.fullmatch(r"SB-[A-Z2-7]{10}", ref)
    # …but no longer the one anybody could derive from the (public) provider id, as before.
    derived = "SB-" + base64.b32encode(uuid.UUID(derive_id("reference", envelope.message_id)).bytes).decode()[:10]
    assert ref != derived


def test_a_stored_reference_of_the_old_kind_keeps_working(example_config, sessions) -> None:
    deps = router_deps(example_config, sessions)
    [opened] = handle_inbound(mail(1, AT), deps)
    with sessions.begin() as s:
        s.get(Conversation, opened.payload.conversation_id).reference = "SB-OLDREF2345"
    resolve(sessions, opened.payload.conversation_id, AT + timedelta(hours=1))
    [reopened] = handle_inbound(mail(2, AT + timedelta(days=40), subject="Re: [SB-OLDREF2345]",
                                     reference="SB-OLDREF2345"), deps)
    assert reopened.payload.conversation_id == opened.payload.conversation_id and reopened.payload.opening == 2
    assert conversations(sessions) == 1

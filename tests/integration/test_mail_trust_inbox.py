"""What the agent sees of mail trust, and the one way a Reply-To gets the answers: the agent confirms
it (issue 13). The inbox pages and the agent API against the real PostgreSQL and RabbitMQ;
conversations made by the router's own handler."""

from __future__ import annotations

from datetime import datetime

import pytest

from services.router.handlers import RouterDeps, handle_inbound
from shared.contracts import ConversationReply, Envelope, Identity, InboundMessage, derive_id
from tests.integration.test_agent_api import bus_messages, classify
from tests.integration.test_inbox import csrf, env, login_with_token  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration


def mail(e, n: int, *, sender: str, verified: bool, reply_to: str | None = None, reference: str | None = None,
         at: datetime | None = None) -> Envelope:
    at = at or e.clock()
    meta: dict = {"sender_auth": {"verified": verified, "method": "dmarc" if verified else None,
                                  "reason": "dmarc=pass" if verified else "dmarc=fail for example.pl"}}
    if reference:
        meta["reference"] = reference
    msg = InboundMessage(channel="email", external_id=f"t{n}@example.pl", sender=Identity("email", sender),
                         reply_to=reply_to or sender, received_at=at, text="Please send the invoice again",
                         subject=f"Invoice [{reference}]" if reference else "Invoice", sender_name="Piotr", meta=meta)
    envelope = Envelope.wrap(msg, message_id=derive_id("email", msg.external_id), correlation_id=f"t{n}",
                             occurred_at=at)
    deps = RouterDeps(config=e.app.config["SB"], sessions=e.sessions, classify=classify,
                      detect_language=lambda text, hints: "pl")
    [event] = handle_inbound(envelope, deps)
    return event


def test_the_agent_sees_an_unverified_sender_and_confirms_a_reply_to_before_it_is_used(env) -> None:  # noqa: F811
    victim = mail(env, 1, sender="piotr@example.pl", verified=True)
    forged = mail(env, 2, sender="piotr@example.pl", verified=False, reply_to="thief@evil.example")
    conv_id = forged.payload.conversation_id
    assert conv_id != victim.payload.conversation_id
    # Somebody else quotes Piotr's reference: their own conversation, the quote shown.
    quoting = mail(env, 3, sender="mallory@example.org", verified=True, reference=victim.payload.reference)

    anna = env.app.test_client()
    login_with_token(env, "anna", anna)  # the lead sees the whole team's
    listing = anna.get("/inbox/").text
    row = listing[listing.index(f"/inbox/c/{conv_id}"):]
    row = row[:row.index("</tr>")]
    assert "unverified sender" in row and "Reply-To to confirm" in row

    page = anna.get(f"/inbox/c/{conv_id}").text
    assert "Unverified sender" in page and "sender not verified" in page
    assert "thief@evil.example" in page and 'id="confirm-reply-to"' in page
    quoted_page = anna.get(f"/inbox/c/{quoting.payload.conversation_id}").text
    assert f"quoted {victim.payload.reference}, not this customer's: not joined" in quoted_page

    api = env.client.get(f"/api/v1/conversations/{conv_id}", headers=env.auth("anna")).json
    assert (api["reply_to"], api["reply_to_pending"], api["unverified_sender"]) == (
        "piotr@example.pl", "thief@evil.example", True)
    [message] = [m for m in api["history"] if m["direction"] == "in"]
    assert (message["sender_kind"], message["sender_verified"], message["reply_to"]) == (
        "email-unverified", False, "thief@evil.example")
    other = env.client.get(f"/api/v1/conversations/{quoting.payload.conversation_id}", headers=env.auth("anna")).json
    assert [m["quoted_reference"] for m in other["history"]] == [victim.payload.reference]

    # An answer now goes to the From address, not the Reply-To.
    r = env.client.post(f"/api/v1/conversations/{conv_id}/reply", json={"text": "Which invoice?"},
                        headers=env.auth("anna"))
    assert r.status_code == 201
    # Confirming an address other than the waiting one changes nothing.
    r = env.client.post(f"/api/v1/conversations/{conv_id}/reply-to/confirm", json={"address": "other@evil.example"},
                        headers=env.auth("anna"))
    assert r.status_code == 409 and r.json["error"] == "conflict"
    # The agent confirms it from the page: from now on answers go there.
    r = anna.post(f"/inbox/c/{conv_id}/reply-to/confirm",
                  data={"csrf_token": csrf(page), "address": "thief@evil.example"})
    assert r.status_code == 302 and "done=reply_to_confirmed" in r.headers["Location"]
    assert "Answers now go to thief@evil.example" in anna.get(r.headers["Location"]).text
    r = env.client.post(f"/api/v1/conversations/{conv_id}/reply", json={"text": "Sent again."},
                        headers=env.auth("anna"))
    assert r.json["conversation"]["reply_to"] == "thief@evil.example"
    assert r.json["conversation"]["reply_to_pending"] is None

    replies = [e.payload for e in bus_messages(env.broker_url) if isinstance(e.payload, ConversationReply)]
    assert [(e.text, e.reply_to) for e in replies] == [("Which invoice?", "piotr@example.pl"),
                                                       ("Sent again.", "thief@evil.example")]
    # Nothing is left to confirm.
    r = env.client.post(f"/api/v1/conversations/{conv_id}/reply-to/confirm", json={"address": "thief@evil.example"},
                        headers=env.auth("anna"))
    assert r.status_code == 409


def test_confirming_needs_the_csrf_token_and_a_conversation_of_ones_own(env) -> None:  # noqa: F811
    forged = mail(env, 1, sender="piotr@example.pl", verified=False, reply_to="thief@evil.example")
    conv_id = forged.payload.conversation_id
    owner = env.conv(conv_id).owner_id
    other = next(a for a in ("maria", "jonas", "taras") if a != owner and a != "anna")
    assert env.client.post(f"/api/v1/conversations/{conv_id}/reply-to/confirm",
                           json={"address": "thief@evil.example"}, headers=env.auth(other)).status_code == 403
    anna = env.app.test_client()
    login_with_token(env, "anna", anna)
    assert anna.post(f"/inbox/c/{conv_id}/reply-to/confirm",
                     data={"address": "thief@evil.example"}).status_code in (400, 403)
    assert env.conv(conv_id).reply_to == "piotr@example.pl"

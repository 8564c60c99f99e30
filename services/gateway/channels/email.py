"""E-mail → InboundMessage: the relay webhook and `parse_mime`, which puts together what the mail
modules beside it read: mail_mime (structure and headers), mail_body (text and attachments; HTML
through mail_html), mail_tolerance (sloppy mail), mail_auth (whether the From is authenticated),
loops (RFC 3834 loop safety); the customer's new words by shared.text's one quote stripper.

Two ways in share `parse_mime`: the IMAP poller (services.gateway.imap_poller) and a mail relay that
POSTs the raw MIME to `/webhooks/email` with the shared secret in `X-Switchboard-Relay-Secret`
(`EmailRelayAdapter`).

Dedupe key: the Message-ID without its angle brackets (a hash of the raw bytes when there is none), so
the same mail fetched twice (a crash between accepting and moving it) or relayed twice gets the same
external_id and the router drops the copy.

What the router gets:
- `text`: the customer's new words only — quoted replies ("On … wrote:", "… napisał(a):", Outlook's
  "-----Original Message-----" and From:/Sent: blocks, ">" lines) and signatures are cut, because an
  old quoted thread or a signature full of "delivery"/"payment" words skews categorisation;
- `meta["full_text"]`: the whole decoded body, for agents;
- `automatic` + `meta["automatic_reason"]`: auto-replies, bounces, list mail, our own mail coming back:
  routed, never acknowledged (RFC 3834); `meta["bounced_recipient"]` for a failed-delivery report;
- `thread_refs` (In-Reply-To, then References) and `meta["reference"]` (an "[SB-…]" token in the
  subject) for threading; `meta["to"]`: which of our addresses it was written to.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid
from typing import Any

from services.gateway.channels import (
    Malformed,
    RawRequest,
    Sample,
    SimulatedRequest,
    Simulation,
    Unauthenticated,
    Webhook,
    loops,
    mail_body,
    mail_mime,
)
from services.gateway.channels.mail_auth import verdict_for
from services.gateway.channels.mail_tolerance import repair_headers
from shared.contracts import Attachment, Identity, InboundMessage
from shared.reference import find_in_subject
from shared.text import strip_quotes_and_signature

SECRET_HEADER = "X-Switchboard-Relay-Secret"

#: Bodies beyond this are cut: a 5 MB HTML newsletter must not become a 5 MB bus message.
MAX_TEXT_CHARS = 100_000

_MAX_EXTERNAL_ID = 255


# --- the relay webhook ----------------------------------------------------------------------------


class EmailRelayAdapter:
    """`POST /webhooks/email`: a mail relay (Postfix pipe, a provider's inbound-parse hook) posts
    the raw message; the shared secret in X-Switchboard-Relay-Secret proves it is ours."""

    channel_family = "email"
    # Raw RFC 5322 bytes from a mail relay; the shared secret header is the signature.
    webhook = Webhook("/webhooks/email", "email")
    simulation = Simulation(("email",), "EMAIL_RELAY_SECRET", lambda channel, sample: simulated_mail(sample))

    def __init__(self, secret: str | None, our_domains: Iterable[str], authserv_ids: Iterable[str] = ()):
        self.secret = secret
        self.our_domains = frozenset(d.lower() for d in our_domains)
        self.authserv_ids = tuple(authserv_ids)

    def verify(self, request: RawRequest) -> None:
        got = request.header(SECRET_HEADER)
        # No configured secret means nothing can be verified: refuse everything rather than trust.
        if not self.secret or not hmac.compare_digest(got.encode(), self.secret.encode()):
            raise Unauthenticated(f"missing or wrong {SECRET_HEADER}")

    def parse(self, request: RawRequest) -> list[InboundMessage]:
        return [parse_mime(request.body, received_at=request.received_at, our_domains=self.our_domains,
                           authserv_ids=self.authserv_ids)]


# --- parsing ----------------------------------------------------------------------------------------


def parse_mime(raw: bytes, *, received_at: datetime, our_domains: Iterable[str],
               authserv_ids: Iterable[str] = ()) -> InboundMessage:
    """Raw RFC 5322 bytes → InboundMessage. Pure; raises Malformed when there is no usable message.

    `meta["sender_auth"]` is our mail servers' verdict on the From address (services.gateway.channels.
    mail_auth; `authserv_ids` names them): the router trusts a From, and a Reply-To, only by it."""
    if not raw or not raw.strip():
        raise Malformed("the message is empty")
    msg = mail_mime.parse_bounded(repair_headers(raw))
    if not list(msg.raw_items()):
        raise Malformed("not a MIME message: no header fields")
    hint = mail_body.charset_hint(msg)
    sender_addr, sender_name = mail_mime.first_address(msg, "From", hint)
    for fallback in ("Sender", "Reply-To"):  # a From a client could not read: who else wrote it
        if not sender_addr:
            sender_addr, sender_name = mail_mime.first_address(msg, fallback, hint)
    if not sender_addr:
        raise Malformed("no sender address in the From, Sender or Reply-To header")
    reply_addr, _ = mail_mime.first_address(msg, "Reply-To", hint)
    domains = frozenset(d.lower() for d in our_domains)

    message_id = mail_mime.message_id(msg)
    external_id = message_id or "sha256-" + hashlib.sha256(raw).hexdigest()
    if len(external_id) > _MAX_EXTERNAL_ID:
        external_id = "sha256-" + hashlib.sha256(external_id.encode()).hexdigest()

    subject = mail_mime.header_text(msg, "Subject", hint)
    full_text = mail_body.body_text(msg).replace("\x00", "")
    truncated = len(full_text) > MAX_TEXT_CHARS
    full_text = full_text[:MAX_TEXT_CHARS]
    text = strip_quotes_and_signature(full_text)

    meta: dict[str, Any] = {"full_text": full_text, "to": mail_mime.addresses(msg, "To", hint),
                            "sender_auth": verdict_for(msg, sender_addr, tuple(authserv_ids)).as_meta()}
    if truncated:
        meta["truncated"] = True
    if reference := find_in_subject(subject):
        meta["reference"] = reference
    verdict = loops.classify(msg, domains)
    reason = verdict.reason if verdict else None
    if verdict:
        meta["automatic_reason"] = _no_nul(verdict.reason)
        meta["automatic_kind"] = verdict.kind
        if verdict.kind in ("bounce", "complaint", "read-receipt"):
            meta["report"] = verdict.as_meta()
        if verdict.kind == "bounce" and verdict.failed and verdict.recipient:
            meta["bounced_recipient"] = verdict.recipient

    return InboundMessage(
        channel="email",
        external_id=external_id,
        sender=Identity("email", sender_addr),
        sender_name=_no_nul(sender_name),
        reply_to=reply_addr or sender_addr,
        # Arrival is ours (a mail polled days late still gets an honest promise); the Date header,
        # when believable, is the mail's own time, for display and ordering.
        received_at=received_at,
        sent_at=mail_mime.sent_at(msg, received_at),
        text=text,
        subject=_no_nul(subject),
        attachments=tuple(Attachment(a.content_type, a.url, _no_nul(a.name), a.size) for a in mail_body.attachments(msg, hint)),
        automatic=reason is not None,
        thread_refs=mail_mime.thread_refs(msg),
        meta=meta,
    )


def _no_nul(text: str | None) -> str | None:
    """NUL is legal in a Python string but not in PostgreSQL text or jsonb, where the router stores it."""
    if text is None:
        return None
    return text.replace("\x00", "") or None


def simulated_mail(sample: Sample) -> SimulatedRequest:
    """A plain-text mail to support as the relay posts it, with the relay's shared secret."""
    mail = EmailMessage()
    mail["From"] = formataddr((sample.name, sample.sender or "alex.customer@example.com"))
    mail["To"] = "support@northwind.example"
    mail["Subject"] = sample.subject or sample.text[:60]
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = make_msgid(domain="example.com")
    mail.set_content(sample.text)
    return SimulatedRequest(EmailRelayAdapter.webhook.path, mail.as_bytes(), {
        "Content-Type": "message/rfc822", "X-Switchboard-Relay-Secret": sample.secret})

"""Automatic mail: what it is (vacation, bounce, complaint, read receipt, spam, list, other
automatic) and, for a bounce or complaint, which message of ours it is about.

A support mailbox gets this every day. None of it is a customer asking something: it must never be
acknowledged (an answer to an autoresponder is a mail loop; an answer to spam is backscatter), never
open a promise, never notify an agent. A bounce or a complaint also tells the notifier that one of
our messages failed and, when permanent, that the address must not be written to again
(`Verdict.original_message_id`, `recipient`, `permanent`).

Pure: `classify(msg, our_domains)` reads a parsed `email.message.Message` and nothing else. Every
regular expression here runs in linear time (no nested or adjacent unbounded quantifiers over the
same characters) and only ever sees a bounded slice of the body: the input is hostile.

What is recognised, most specific first (the first that matches names the kind):
1. our own Message-ID domain: our mail came back (`loop`);
2. `multipart/report` (RFC 6522) by report-type: `delivery-status` (RFC 3464, a bounce or a delay),
   `feedback-report` (RFC 5965 ARF, a complaint), `disposition-notification` (RFC 8098, a read
   receipt); a bare `message/feedback-report` or `message/disposition-notification` part as well;
3. the non-standard bounces of the big servers (qmail, Exim, Postfix without DSN, Exchange and
   Outlook NDRs, Gmail, Yahoo...): a mailer-daemon/postmaster sender or an empty Return-Path or
   `X-Failed-Recipients`, with a delivery-failure subject;
4. spam tagged by the receiving server (`X-Spam-Flag: YES`, `X-Spam-Status: Yes, ...`, `X-Spam: Yes`);
5. vacation and other auto-replies: `X-Autoreply`, `X-Autorespond`, `X-Apple-Action: vacation`,
   `Precedence: auto_reply`, `Auto-Submitted: auto-replied`, or an auto-reply subject in the
   business's languages (en, de, pl, ru, uk, bg, lt) at the start of the subject;
6. other automatic mail (`auto`, `list`): `X-Auto-Response-Suppress` (Exchange puts it on its
   out-of-office replies, CRMs on their notifications), `Auto-Submitted` other than `no`,
   `Precedence: bulk|junk|list`, `List-Id`, `List-Unsubscribe`, an empty Return-Path, a role sender
   (mailer-daemon, no-reply, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import message_from_bytes, message_from_string, policy
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses

from services.gateway.channels.mail_tolerance import decode_bytes
from shared.text import clean_subject

#: The kinds, as stored in an InboundMessage's meta["automatic_kind"] and shown to agents.
KINDS = ("loop", "bounce", "complaint", "read-receipt", "spam", "vacation", "list", "auto")

#: How much of a body is searched for a status code, a failed recipient or a quoted Message-ID:
#: enough for every bounce seen; a 25 MB "bounce" is not read to the end.
MAX_SCAN = 64_000


@dataclass(frozen=True)
class Verdict:
    """Why a mail is automatic, and for a bounce or complaint what it is about."""

    kind: str
    reason: str
    #: The Message-ID (without brackets) of the message this bounce/complaint is about, if quoted.
    original_message_id: str | None = None
    #: The address that failed (bounce) or complained (complaint, when the report names it).
    recipient: str | None = None
    #: A bounce: True for a permanent failure (5.x.x, "permanent error"), False for a temporary one
    #: that was given up (4.x.x with Action: failed) or a delay notice. A complaint: True.
    permanent: bool | None = None
    #: A bounce: False for a delay notice ("Action: delayed"): nothing failed yet.
    failed: bool = False
    status: str | None = None  # the enhanced status code, "5.1.1"
    diagnostic: str | None = None  # the server's words, shortened

    def as_meta(self) -> dict:
        meta: dict = {"kind": self.kind}
        for key in ("original_message_id", "recipient", "permanent", "status", "diagnostic"):
            value = getattr(self, key)
            if value is not None:
                meta[key] = value
        if self.kind == "bounce":
            meta["failed"] = self.failed
        return meta


# --- headers -------------------------------------------------------------------------------------


def _header(msg: Message, name: str) -> str | None:
    """The first such header, unfolded, as text; None when absent. Never raises."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return " ".join(text.split())
    return None


def _decoded_header(msg: Message, name: str) -> str:
    raw = _header(msg, name)
    if raw is None:
        return ""
    if "=?" in raw:
        from email.header import decode_header, make_header

        try:
            raw = str(make_header(decode_header(raw)))
        except Exception:  # noqa: BLE001 - an undecodable encoded word: match the raw text
            pass
    return " ".join(raw.split())


def _address(value: str | None) -> str | None:
    if not value:
        return None
    for _, addr in getaddresses([value[:2000]]):
        addr = addr.strip().strip("<>").lower()
        if _plausible(addr):
            return addr
    return None


def _plausible(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return bool(at and local and "." in domain) and len(addr) <= 320 and not any(c.isspace() for c in addr)


_ID_RE = re.compile(r"<([^<>\s]{1,250})>")


def _first_id(value: str | None) -> str | None:
    if not value:
        return None
    found = _ID_RE.search(value)
    if found:
        return found.group(1)
    for token in value.split():
        if "@" in token:
            return token.strip("<>")
    return None


def _ids(value: str | None) -> list[str]:
    return _ID_RE.findall(value or "")


# --- the body ------------------------------------------------------------------------------------


def _text(part: Message) -> str:
    """A leaf's decoded text (bounded); "" when it has none. Never raises."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - a broken transfer encoding: nothing to read
        return ""
    if not isinstance(payload, bytes):
        return ""
    # One charset reader for the gateway's mail: a label no codec knows, or one with a NUL in it
    # (codecs.lookup raises ValueError there, not LookupError), falls back instead of raising.
    return decode_bytes(payload[:MAX_SCAN], part.get_content_charset(), fallback="utf-8")


def _leaves(msg: Message) -> list[Message]:
    try:
        return [p for p in msg.walk() if not p.is_multipart()]
    except Exception:  # noqa: BLE001 - a MIME tree the package cannot walk
        return [msg]


def _body(msg: Message) -> str:
    """The human-readable text of the report (text parts outside attached messages), bounded."""
    out: list[str] = []
    size = 0
    for part in _leaves(msg):
        if part.get_content_maintype() == "text" and part.get_content_subtype() in ("plain", "html"):
            chunk = _text(part)
            out.append(chunk)
            size += len(chunk)
            if size >= MAX_SCAN:
                break
    if not out and msg.get_content_maintype() == "multipart" and isinstance(payload := msg.get_payload(), str):
        # A multipart whose boundary never appears (old sendmail reports): its text is all there is.
        out.append(payload[:MAX_SCAN])
    return "\n".join(out)[:MAX_SCAN]


def _attached_headers(msg: Message) -> Message | None:
    """The headers of the message a report is about: its message/rfc822 or text/rfc822-headers part."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
            if isinstance(payload, str) and payload.strip():
                return message_from_string(payload[:MAX_SCAN], policy=policy.compat32)
        if ctype in ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers"):
            raw = part.get_payload(decode=True)
            if isinstance(raw, bytes):
                return HeaderParser(policy=policy.compat32).parsestr(raw[:MAX_SCAN].decode("utf-8", "replace"))
    return None


def _report_fields(msg: Message, ctype: str) -> list[Message]:
    """The header blocks of a message/delivery-status, feedback-report or disposition-notification part."""
    blocks: list[Message] = []
    for part in msg.walk():
        if part.get_content_type() != ctype:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):  # the email package parses delivery-status into header blocks
            blocks += [b for b in payload if isinstance(b, Message)]
        elif isinstance(payload, str):
            text = payload
            if (part.get("Content-Transfer-Encoding") or "").lower() in ("base64", "quoted-printable"):
                raw = part.get_payload(decode=True)
                text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else payload
            text = text[:MAX_SCAN].replace("\r\n", "\n")
            blocks += [HeaderParser(policy=policy.compat32).parsestr(chunk)
                       for chunk in text.split("\n\n") if chunk.strip()]
    return blocks


# Enhanced status codes (RFC 3463): class 2/4/5, subject and detail of up to three digits each.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
_SMTP_REPLY = re.compile(r"(?<!\d)([45])\d\d(?=[ -])")
_PERMANENT_WORDS = re.compile(r"permanent(?:ly)? (?:error|failure|fatal)|failed permanently|permanent fatal"
                              r"|user unknown|no such user|does not exist|unknown user|unknown recipient|mailbox unavailable"
                              r"|name is not recognized",
                              re.IGNORECASE)
_QUOTED_ID = re.compile(r"^[ \t>]*message-id:[ \t]*<([^<>\s]{1,250})>", re.IGNORECASE | re.MULTILINE)
_ANGLE_ADDR = re.compile(r"<([^<>\s@]{1,64}@[^<>\s@]{1,255})>")
_BARE_ADDR = re.compile(r"(?<![\w.+-])([\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8})(?![\w-])")


def _status(text: str) -> str | None:
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else None


def _is_permanent(status: str | None, text: str) -> bool:
    if status:
        return status.startswith("5")
    reply = _SMTP_REPLY.search(text)
    if reply:
        return reply.group(1) == "5"
    return bool(_PERMANENT_WORDS.search(text))


def _short(text: str | None, limit: int = 300) -> str | None:
    if not text:
        return None
    return " ".join(text.split())[:limit] or None


# --- reports -------------------------------------------------------------------------------------


def _quoted_message_id(msg: Message, body: str) -> str | None:
    """The Message-ID of the message a report is about: its attached headers, else In-Reply-To or
    References (Exchange and some Postfix set them), else a Message-ID line quoted in the body."""
    attached = _attached_headers(msg)
    if attached is not None:
        found = _first_id(_header(attached, "Message-ID"))
        if found:
            return found
    for name in ("In-Reply-To", "References"):
        ids = _ids(_header(msg, name))
        if ids:
            return ids[0] if name == "In-Reply-To" else ids[-1]
    found_in_body = _QUOTED_ID.search(body)
    return found_in_body.group(1) if found_in_body else None


def _dsn(msg: Message, body: str) -> Verdict:
    """RFC 3464: the first recipient block that failed (or, failing that, was delayed)."""
    chosen: Message | None = None
    delayed = False
    for block in _report_fields(msg, "message/delivery-status"):
        action = (_header(block, "Action") or "").lower()
        if not (_header(block, "Final-Recipient") or _header(block, "Original-Recipient")):
            continue
        if action.startswith("failed"):
            chosen, delayed = block, False
            break
        if chosen is None and action.startswith("delayed"):
            chosen, delayed = block, True
    if chosen is None:
        return _text_bounce(msg, body, "delivery-status report (bounce)")
    recipient_field = _header(chosen, "Final-Recipient") or _header(chosen, "Original-Recipient") or ""
    recipient = _address(recipient_field.split(";", 1)[-1])
    diagnostic = _header(chosen, "Diagnostic-Code")
    status = _status(_header(chosen, "Status") or "") or _status(diagnostic or "")
    permanent = (not delayed) and _is_permanent(status, diagnostic or "")
    return Verdict("bounce", "delivery-status report (bounce)" if not delayed else "delivery-status report (delayed)",
                   original_message_id=_quoted_message_id(msg, body), recipient=recipient, permanent=permanent,
                   failed=not delayed, status=status,
                   diagnostic=_short(diagnostic.split(";", 1)[-1] if diagnostic else None))


_FAILED_LIST = re.compile(
    r"(?:following (?:address(?:\(es\))?|recipients?)[^\n]{0,80}(?:failed|could not be delivered)[^\n]{0,40}"
    r"|failed permanently:|delivery has failed to these recipients or (?:distribution )?(?:lists|groups):"
    r"|wasn't able to deliver your message to the following addresses\.|could not be delivered to[^\n]{0,60}"
    r"|not able to be delivered to[^\n]{0,60}|undeliverable to|did not reach the following recipient\(s\):"
    r"|unable to deliver your message to the following address(?:es)?\."
    r"|following addresses had permanent fatal errors)",
    re.IGNORECASE,
)


def _text_bounce(msg: Message, body: str, reason: str) -> Verdict:
    """A bounce in words only: qmail, Exim, Gmail, Yahoo, old Exchange. The failed recipient is
    X-Failed-Recipients (Exim, Gmail), else the first address after the server's "failed to these
    recipients" sentence; the status the first enhanced code (or SMTP reply) in the text."""
    recipient = _address(_header(msg, "X-Failed-Recipients"))
    original = _quoted_message_id(msg, body)
    head = body
    cut = body.lower().find("message-id:")
    if cut > 0:
        head = body[:cut]  # the server's words, not the quoted message's headers
    if recipient is None:
        intro = _FAILED_LIST.search(head)
        if intro:
            after = head[intro.end():intro.end() + 2000]
            found = _ANGLE_ADDR.search(after) or _BARE_ADDR.search(after)
            if found:
                recipient = _address(found.group(1))
    status = _status(head)
    return Verdict("bounce", reason, original_message_id=original, recipient=recipient,
                   permanent=_is_permanent(status, head), failed=True, status=status,
                   diagnostic=_short(_diagnostic_line(head)))


_DIAGNOSTIC_LINE = re.compile(r"^[^\n]{0,400}\b[45]\d\d[ -][^\n]{0,300}$", re.MULTILINE)


def _diagnostic_line(text: str) -> str | None:
    found = _DIAGNOSTIC_LINE.search(text)
    return found.group(0) if found else None


def _complaint(msg: Message, body: str) -> Verdict:
    """RFC 5965 ARF: who complained (Original-Rcpt-To, else the attached message's To) about which message."""
    fields = _report_fields(msg, "message/feedback-report")
    feedback_type = next((v.lower() for b in fields if (v := _header(b, "Feedback-Type"))), "abuse")
    recipient = next((a for b in fields if (a := _address(_header(b, "Original-Rcpt-To")))), None)
    attached = _attached_headers(msg)
    if recipient is None and attached is not None:
        recipient = _address(_header(attached, "To"))
    return Verdict("complaint", f"feedback report (ARF): {feedback_type}",
                   original_message_id=_quoted_message_id(msg, body), recipient=recipient, permanent=True)


def _receipt(msg: Message, body: str) -> Verdict:
    fields = _report_fields(msg, "message/disposition-notification")
    disposition = next((v for b in fields if (v := _header(b, "Disposition"))), "")
    original = next((i for b in fields if (i := _first_id(_header(b, "Original-Message-ID")))), None)
    return Verdict("read-receipt", f"disposition notification (read receipt){': ' + disposition if disposition else ''}",
                   original_message_id=original or _quoted_message_id(msg, body))


def _param(msg: Message, name: str) -> str:
    value = msg.get_param(name)
    if isinstance(value, tuple):
        value = value[2]
    return str(value or "").strip().lower()


def _has_part(msg: Message, ctype: str) -> bool:
    return any(p.get_content_type() == ctype for p in msg.walk())


# --- non-standard bounces, spam, vacation --------------------------------------------------------

_ROLE_SENDER = re.compile(
    r"^(?:mailer-daemon|postmaster|owner-.+|.+-request|no[-_.]?reply(?:[-+_.].*)?|do[-_.]?not[-_.]?reply"
    r"(?:[-+_.].*)?|bounces?(?:[-+].*)?)$",
    re.IGNORECASE,
)
_DAEMON = re.compile(r"^(?:mailer-daemon|postmaster|mail-daemon|mailerdaemon)$", re.IGNORECASE)

#: Delivery-failure subjects of the big servers, at the start (after an optional "Fw:"/"[SPAM]").
_BOUNCE_SUBJECT = re.compile(
    r"^(?:failure notice|delivery status notification|undeliver(?:ed|able)|undelivered mail"
    r"|mail delivery (?:failed|failure|system|subsystem)|returned mail|delivery failure|delivery failed"
    r"|non[- ]?delivery|nondeliverable|message not delivered|delivery notification: delivery has failed"
    r"|could not send message|mail system error|warning: could not send message"
    r"|unzustellbar|nicht zustellbar|niedostarczalne|nie dostarczono|не доставлено|недоставлен"
    r"|не можа да бъде доставено|nepristatytas)",
    re.IGNORECASE,
)
#: The opening words of bounces whose subject says nothing ("E", a translated word): Exchange 5.5's
#: "did not reach the following recipient(s)", qmail's "wasn't able to deliver", ...
_BOUNCE_BODY = re.compile(
    r"did not reach the following recipient|could not be delivered to one or more|wasn't able to deliver"
    r"|unable to deliver your message|delivery to the following recipients? failed|delivery has failed to"
    r"|this is a permanent error|message could not be delivered|undeliverable message",
    re.IGNORECASE,
)
#: Auto-reply subjects in the business's languages, anchored at the subject's start and followed by
#: the end, a colon, a dash or a bracket — "Out of office chairs in stock?" is a customer's question.
_VACATION_SUBJECT = re.compile(
    r"^(?:auto(?:matic)?[ -]?(?:reply|response|answer)|autoreply|auto:|out of (?:the )?office|ooo"
    r"|vacation(?: reply| notice)?|on vacation|away from (?:the )?office|i am out of (?:the )?office"
    r"|abwesenheitsnotiz|automatische antwort|abwesend|abwesenheit|urlaub"
    r"|automatyczna odpowied[źz]|odpowied[źz] automatyczna|autoodpowied[źz]|poza biurem|nieobecno[śs][ćc]"
    r"|urlop"
    r"|автоответ|автоматический ответ|автоматичний відповідь|автоматична відповідь|автовідповідь"
    r"|вне офиса|нет на месте|в отпуске|отпуск|поза офісом|у відпустці|відпустка"
    r"|автоматичен отговор|автоотговор|извън офиса|в отпуск"
    r"|automatinis atsakymas|automatinis atsakas|ne biure|atostogos|atostogose)"
    r"[ \t]*(?:$|[:\-–—(\[])",
    re.IGNORECASE,
)

_SUPPRESS = frozenset({"all", "autoreply", "oof"})
_SPAM_HEADERS = ("X-Spam-Flag", "X-Spam-Status", "X-Spam", "X-Spam-Verdict")


def _subject(msg: Message) -> str:
    return _decoded_header(msg, "Subject")[:500]


def _spam(msg: Message) -> str | None:
    for name in _SPAM_HEADERS:
        value = (_header(msg, name) or "").lower()
        if value.startswith(("yes", "true", "spam")):
            return f"{name}: {value.split(',')[0].split()[0]}"
    return None


def _vacation(msg: Message, subject: str) -> str | None:
    for name in ("X-Autoreply", "X-Autorespond", "X-Mail-Autoreply", "X-Vacation"):
        value = _header(msg, name)
        if value is not None and value.strip().lower() not in ("no", "false", "0"):
            return f"{name} present: an autoresponder"
    if (_header(msg, "X-Apple-Action") or "").strip().lower().startswith("vacation"):
        return "X-Apple-Action: vacation"
    if (_header(msg, "Precedence") or "").strip().lower() == "auto_reply":
        return "Precedence: auto_reply"
    auto = (_header(msg, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto == "auto-replied":
        return "Auto-Submitted: auto-replied"
    if subject and _VACATION_SUBJECT.match(clean_subject(subject, server_tags=True)):
        return f"auto-reply subject: {subject[:80]}"
    return None


# --- the whole -----------------------------------------------------------------------------------


def classify(msg: Message, our_domains: Iterable[str]) -> Verdict | None:
    """What kind of automatic mail this is, or None for a person's mail. Pure; never raises on
    what a parsed message can hold."""
    domains = {d.lower() for d in our_domains}
    message_id = _first_id(_header(msg, "Message-ID"))
    if message_id and message_id.rpartition("@")[2].lower() in domains:
        return Verdict("loop", f"our own Message-ID ({message_id.rpartition('@')[2].lower()}): our mail came back")

    ctype = msg.get_content_type()
    report_type = _param(msg, "report-type") if ctype == "multipart/report" else ""
    body = ""
    if report_type or ctype.startswith("multipart/") or ctype.startswith("text/"):
        body = _body(msg)
    if report_type == "delivery-status" or (ctype == "multipart/report" and _has_part(msg, "message/delivery-status")):
        return _dsn(msg, body)
    if report_type == "feedback-report" or _has_part(msg, "message/feedback-report"):
        return _complaint(msg, body)
    if report_type == "disposition-notification" or _has_part(msg, "message/disposition-notification"):
        return _receipt(msg, body)

    subject = _subject(msg)
    sender = _address(_header(msg, "From")) or ""
    local = sender.rpartition("@")[0]
    return_path = _header(msg, "Return-Path")
    empty_return_path = return_path is not None and return_path.strip() in ("<>", "")
    failed_header = _header(msg, "X-Failed-Recipients") is not None
    bounce_subject = bool(subject) and bool(_BOUNCE_SUBJECT.match(clean_subject(subject, server_tags=True)))
    from_server = bool(_DAEMON.match(local)) or empty_return_path or not sender
    if failed_header or (from_server and (bounce_subject or _BOUNCE_BODY.search(body[:4000]))):
        return _text_bounce(msg, body, f"non-standard bounce from {sender or 'an unnamed sender'}")

    if spam := _spam(msg):
        return Verdict("spam", f"tagged as spam by the receiving server ({spam})")
    if vacation := _vacation(msg, subject):
        return Verdict("vacation", vacation)

    # Exchange puts this on its own out-of-office replies and CRMs on their notifications: either
    # way a program wrote it (a vacation subject or header above has already said which kind).
    suppress = {v.strip().lower() for v in (_header(msg, "X-Auto-Response-Suppress") or "").split(",")}
    if hit := sorted(suppress & _SUPPRESS):
        return Verdict("auto", f"X-Auto-Response-Suppress: {', '.join(hit)}")
    auto = (_header(msg, "Auto-Submitted") or "").split(";")[0].strip().lower()
    if auto and auto != "no":
        return Verdict("auto", f"Auto-Submitted: {auto}")
    precedence = (_header(msg, "Precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return Verdict("list", f"Precedence: {precedence}")
    for name in ("List-Id", "List-Unsubscribe"):
        if _header(msg, name) is not None:
            return Verdict("list", f"{name} present: list mail")
    if empty_return_path:
        return Verdict("auto", "empty Return-Path: a bounce or notification")
    if sender and _ROLE_SENDER.match(local):
        return Verdict("auto", f"automated sender {sender}")
    return None


def classify_bytes(raw: bytes, our_domains: Iterable[str]) -> Verdict | None:
    """`classify` of raw RFC 5322 bytes (tests, tools)."""
    return classify(message_from_bytes(raw, policy=policy.default), our_domains)


def is_automatic(msg: Message, our_domains: Iterable[str]) -> str | None:
    """Why this mail must never be acknowledged, or None (the reason of `classify`)."""
    verdict = classify(msg, our_domains)
    return verdict.reason if verdict else None


def bounced_recipient(msg: Message) -> str | None:
    """The address a failed-delivery report is about; None for anything else, or a delay notice."""
    verdict = classify(msg, ())
    if verdict is None or verdict.kind != "bounce" or not verdict.failed:
        return None
    return verdict.recipient


__all__ = ["KINDS", "MAX_SCAN", "Verdict", "classify", "classify_bytes", "is_automatic", "bounced_recipient"]

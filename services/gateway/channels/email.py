"""E-mail → InboundMessage: MIME parsing, quote/signature stripping, RFC 3834 loop safety, relay webhook.

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
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from email import policy
from email.feedparser import BytesFeedParser
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value, getaddresses
from html.parser import HTMLParser
from typing import Any

from services.gateway.channels import Malformed, RawRequest, Unauthenticated, loops
from services.gateway.channels.mail_auth import verdict_for
from services.gateway.channels.mail_tolerance import (
    codec,
    decode_bytes,
    decode_words,
    lenient_mailbox,
    mostly_utf8,
    repair_headers,
)
from shared.contracts import Attachment, Identity, InboundMessage
from shared.text import strip_quotes_and_signature

SECRET_HEADER = "X-Switchboard-Relay-Secret"

#: The router's conversation reference ("SB-" + 10 base32 characters, services.router.handlers).
REFERENCE_RE = re.compile(r"\[\s*(SB-[A-Z2-7]{10})\s*\]", re.IGNORECASE)

#: A Date header older than this (relative to when we received the mail) is a wrong clock, not a
#: backlog: the promise would be computed from a made-up time.
MAX_DATE_AGE = timedelta(days=7)

#: Bodies beyond this are cut: a 5 MB HTML newsletter must not become a 5 MB bus message.
MAX_TEXT_CHARS = 100_000

#: Thread references kept per message; References headers of very long threads grow without bound.
MAX_THREAD_REFS = 100

#: Addresses kept in meta["to"]: enough to see which of our mailboxes was written to.
MAX_RECIPIENTS = 100

#: Parts inside parts: a forward of a forward of a reply is a handful of levels, and no mail client
#: shows hundreds. Deeper mail is refused (400 at the relay, quarantine over IMAP) rather than walked
#: by code that recurses once per level.
MAX_MIME_DEPTH = 100

_MAX_ADDRESS = 320  # the contract's limit for an identity (RFC 5321: 64 + 1 + 255)
_MAX_EXTERNAL_ID = 255
_MAX_MAILBOX_HEADER = 2_000  # a From/Reply-To with one mailbox: address (320) and a long display name
_MAX_ADDRESS_LIST_HEADER = 20_000  # To: room for MAX_RECIPIENTS addresses with names


# --- the relay webhook ----------------------------------------------------------------------------


class EmailRelayAdapter:
    """`POST /webhooks/email`: a mail relay (Postfix pipe, a provider's inbound-parse hook) posts
    the raw message; the shared secret in X-Switchboard-Relay-Secret proves it is ours."""

    channel_family = "email"

    def __init__(self, secret: str | None, our_domains: Iterable[str], authserv_ids: Iterable[str] = ()):
        self.secret = secret
        self.our_domains = frozenset(d.lower() for d in our_domains)
        self.authserv_ids = tuple(authserv_ids)

    def verify(self, request: RawRequest) -> None:
        got = request.headers.get(SECRET_HEADER, "")
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
    msg = _parse_bounded(repair_headers(raw))
    if not list(msg.raw_items()):
        raise Malformed("not a MIME message: no header fields")
    hint = _charset_hint(msg)
    sender_addr, sender_name = _first_address(msg, "From", hint)
    for fallback in ("Sender", "Reply-To"):  # a From a client could not read: who else wrote it
        if not sender_addr:
            sender_addr, sender_name = _first_address(msg, fallback, hint)
    if not sender_addr:
        raise Malformed("no sender address in the From, Sender or Reply-To header")
    reply_addr, _ = _first_address(msg, "Reply-To", hint)
    domains = frozenset(d.lower() for d in our_domains)

    message_id = _message_id(msg)
    external_id = message_id or "sha256-" + hashlib.sha256(raw).hexdigest()
    if len(external_id) > _MAX_EXTERNAL_ID:
        external_id = "sha256-" + hashlib.sha256(external_id.encode()).hexdigest()

    subject = _header_text(msg, "Subject", hint)
    full_text = body_text(msg).replace("\x00", "")
    truncated = len(full_text) > MAX_TEXT_CHARS
    full_text = full_text[:MAX_TEXT_CHARS]
    text = strip_quotes_and_signature(full_text)

    meta: dict[str, Any] = {"full_text": full_text, "to": _addresses(msg, "To", hint),
                            "sender_auth": verdict_for(msg, sender_addr, tuple(authserv_ids)).as_meta()}
    if truncated:
        meta["truncated"] = True
    if subject and (ref := REFERENCE_RE.search(subject)):
        meta["reference"] = ref.group(1).upper()
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
        sent_at=_sent_at(msg, received_at),
        text=text,
        subject=_no_nul(subject),
        attachments=tuple(Attachment(a.content_type, a.url, _no_nul(a.name), a.size) for a in attachments(msg, hint)),
        automatic=reason is not None,
        thread_refs=thread_refs(msg),
        meta=meta,
    )


_TOO_DEEP = f"the MIME structure is nested too deeply (over {MAX_MIME_DEPTH} levels)"
_FEED_CHUNK = 8192


def _parse_bounded(raw: bytes) -> Message:
    """policy.default's parse, refused as soon as the parts nest deeper than MAX_MIME_DEPTH.

    The stdlib parser recurses once per level and matches every line against every open boundary:
    3,000 levels cost seconds and then exhausted the stack (a 500). Fed in chunks, its stack of open
    parts is looked at as it grows; the RecursionError guard and the walk afterwards hold even if
    that private attribute goes away.
    """
    parser = BytesFeedParser(policy=policy.default)
    try:
        for start in range(0, len(raw), _FEED_CHUNK):
            parser.feed(raw[start:start + _FEED_CHUNK])
            if len(getattr(parser, "_msgstack", ())) > MAX_MIME_DEPTH:
                raise Malformed(_TOO_DEEP)
        msg = parser.close()
    except RecursionError:
        raise Malformed(_TOO_DEEP) from None
    if _mime_depth(msg) > MAX_MIME_DEPTH:
        raise Malformed(_TOO_DEEP)
    return msg


def _mime_depth(msg: Message) -> int:
    """How deeply parts nest (1 for a single-part mail), without recursion."""
    deepest = 0
    stack = [(msg, 1)]
    while stack:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_MIME_DEPTH:
            break
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((sub, depth + 1) for sub in payload if isinstance(sub, Message))
    return deepest


def _no_nul(text: str | None) -> str | None:
    """NUL is legal in a Python string but not in PostgreSQL text or jsonb, where the router stores it."""
    if text is None:
        return None
    return text.replace("\x00", "") or None


def _charset_hint(msg: Message) -> str:
    """The charset the sender's program used, to read raw 8-bit bytes in headers (old mailers send
    koi8-r or windows-1251 Subject lines unencoded). The first declared non-ASCII text charset."""
    for part in _leaves(msg):
        charset = codec(part.get_content_charset())
        if charset and charset not in ("us-ascii", "ascii"):
            return charset
    return "cp1252"


def _fix_8bit(text: str, hint: str) -> str:
    """Undo the parser's surrogate escapes of raw 8-bit header bytes: UTF-8 if they are, else the hint."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    utf8 = mostly_utf8(data)  # UTF-8, also with a stray bad byte (a name cut mid-character)
    return utf8 if utf8 is not None else data.decode(hint, errors="replace")


def _raw_header(msg: Message, name: str, hint: str = "utf-8") -> str | None:
    """The first such header as sent (unfolded, 8-bit bytes decoded, encoded words left alone), or None."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return " ".join(_fix_8bit(str(value), hint).split())
    return None


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words → text, each charset read as its superset; undecodable words kept."""
    return decode_words(text)


def _header_text(msg: Message, name: str, hint: str) -> str | None:
    raw = _raw_header(msg, name, hint)
    if raw is None:
        return None
    # Encoded words decoded here rather than by policy.default, which reads each label literally:
    # a GB2312 subject written by a GBK program, or Windows-1252 quotes labelled ISO-8859-1.
    value = " ".join(_decode_words(raw).split())
    return value or None


def _first_address(msg: Message, name: str, hint: str) -> tuple[str | None, str | None]:
    """(lower-cased address, display name) of the first mailbox in an address header.

    Every header of that name is tried in turn (a junk From above the real one). The RFC reading
    (policy.default) comes first; where it finds no address, or no name, or a name it could not
    decode, the header is read as people write it: `addr (Name)`, `Name addr` without angle
    brackets, encoded words in a mislabelled charset (services.gateway.channels.mail_tolerance)."""
    raws = _raw_headers(msg, name, hint)
    try:
        # policy.default's address parser is quadratic in the header's length (20 k characters took
        # seconds): a header longer than one mailbox can be goes to the bounded reading only.
        structured = list(msg.get_all(name) or ()) if all(len(r) <= _MAX_MAILBOX_HEADER for r in raws) else []
    except Exception:  # noqa: BLE001 - a header the RFC parser rejects: read it leniently below
        structured = []
    for index, raw in enumerate(raws):
        addr = display = None
        try:
            addresses = list(getattr(structured[index], "addresses", ()) or ()) if index < len(structured) else []
        except Exception:  # noqa: BLE001 - as above
            addresses = []
        for address in addresses:
            candidate = _fix_8bit(address.addr_spec or "", hint).strip().lower()
            if _plausible_address(candidate):
                addr = candidate
                display = " ".join(_fix_8bit(address.display_name or "", hint).split()) or None
                break
        # policy.default reads an encoded word's label literally (GB2312 for GBK text): decode such a
        # name ourselves, and take the lenient reading where the RFC one found no address or name.
        if addr is None or display is None or not _readable(display) or "=?" in raw:
            lenient_addr, lenient_name = lenient_mailbox(raw)
            if addr is None and lenient_addr is not None and _plausible_address(lenient_addr):
                addr, display = lenient_addr, lenient_name
            elif addr is not None and lenient_addr == addr and lenient_name and _readable(lenient_name):
                display = lenient_name
        if addr is not None:
            return addr, display if display and _readable(display) else None
    return None, None


def _readable(text: str) -> bool:
    """No replacement character, C1 control or undecoded encoded word: what a person can read."""
    return "\ufffd" not in text and "=?" not in text and not any("\x80" <= ch <= "\x9f" for ch in text)


def _raw_headers(msg: Message, name: str, hint: str) -> list[str]:
    """Every such header as sent (unfolded, 8-bit bytes decoded, encoded words left alone)."""
    return [" ".join(_fix_8bit(str(value), hint).split()) for key, value in msg.raw_items()
            if key.lower() == name.lower()]


def _plausible_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return (bool(at and local and domain) and len(addr) <= _MAX_ADDRESS
            and not any(c.isspace() or c == "\x00" for c in addr))


def _addresses(msg: Message, name: str, hint: str) -> list[str]:
    raw = _raw_header(msg, name, hint)
    if raw is None:
        return []
    found: dict[str, None] = {}  # ordered and deduplicated in linear time, whatever a header holds
    try:
        pairs = getaddresses([raw[:_MAX_ADDRESS_LIST_HEADER]])
    except RecursionError:  # group syntax nested by a hostile header: the stdlib parser recurses
        return []
    for _, addr in pairs:
        addr = addr.strip().lower()
        if _plausible_address(addr):
            found[addr] = None
    return list(found)[:MAX_RECIPIENTS]


_ID_RE = re.compile(r"<([^<>\s]+)>")


def _ids(value: str | None) -> list[str]:
    """Message-IDs in a header, angle brackets stripped; a bare id without brackets is accepted too."""
    if not value:
        return []
    value = value.replace("\x00", "")
    found = _ID_RE.findall(value)
    if not found:
        found = [t.strip("<>") for t in value.split() if "@" in t]
    return found


def _message_id(msg: Message) -> str | None:
    ids = _ids(_raw_header(msg, "Message-ID"))
    return ids[0] if ids else None


def thread_refs(msg: Message) -> tuple[str, ...]:
    """In-Reply-To (the parent) first, then References in header order; duplicates dropped."""
    refs: dict[str, None] = {}
    for name in ("In-Reply-To", "References"):
        for ref in _ids(_raw_header(msg, name)):
            refs[ref] = None
    return tuple(refs)[:MAX_THREAD_REFS]


def _sent_at(msg: Message, received_at: datetime) -> datetime | None:
    """The Date header when it is believable, else None (unknown).

    A mail cannot have been written after we received it, and a date far in the past is a wrong
    clock: neither is shown as the mail's time. (Promises never start from it: see received_at.)
    """
    try:
        header = msg.get("Date")
        sent = getattr(header, "datetime", None)
    except Exception:  # noqa: BLE001 - an unparseable Date is simply not used
        sent = None
    if sent is None:
        return None
    if sent.tzinfo is None:  # "-0000": RFC 5322 says the time is UTC, the local zone unknown
        sent = sent.replace(tzinfo=UTC)
    if received_at - MAX_DATE_AGE <= sent <= received_at:
        return sent.astimezone(UTC)
    return None


# --- the body ----------------------------------------------------------------------------------------


def body_text(msg: Message) -> str:
    """The readable body: text/plain preferred, else HTML turned into text; "" when there is none."""
    part = _body_part(msg)
    if part is None:
        return ""
    text = _decode(part)
    if part.get_content_subtype() == "plain" and not text.strip():
        # An empty text/plain beside a written HTML part (some web mailers): the client shows the HTML.
        html = _html_alternative(msg)
        if html is not None:
            part, text = html, _decode(html)
    if part.get_content_subtype() == "html":
        text = html_to_text(text)
    elif _param(part, "format") == "flowed":
        text = _unflow(text, delsp=_param(part, "delsp") == "yes")
    return _normalise_newlines(text).strip()


def _html_alternative(msg: Message) -> Message | None:
    part: Message | None
    try:
        # policy.default makes every part an EmailMessage; get_body is only there.
        part = msg.get_body(preferencelist=("html",)) if isinstance(msg, EmailMessage) else None
    except Exception:  # noqa: BLE001 - a broken MIME tree: look for an HTML leaf ourselves
        part = None
    if part is None:
        part = next((leaf for leaf in _leaves(msg)
                     if leaf.get_content_type() == "text/html" and not leaf.get_filename()), None)
    return part


def _param(part: Message, name: str) -> str:
    """A Content-Type parameter, lower-cased; RFC 2231 values collapsed; "" when absent."""
    value = part.get_param(name)
    return collapse_rfc2231_value(value).lower() if value else ""


def _body_part(msg: Message) -> Message | None:
    part: Message | None
    try:
        part = msg.get_body(preferencelist=("plain", "html")) if isinstance(msg, EmailMessage) else None
    except Exception:  # noqa: BLE001 - a broken MIME tree: look for any text part ourselves
        part = None
    if part is None:
        for candidate in _leaves(msg):
            if candidate.get_content_type() in ("text/plain", "text/html") and not candidate.get_filename():
                return candidate
    return part


def _decode(part: Message) -> str:
    """Transfer-decode, then charset-decode; mislabeled or unknown charsets degrade, never raise."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    # A label is read as its superset (GB2312 → GB18030, Shift_JIS → CP932, ISO-8859-1 → CP1252);
    # 8-bit bytes labelled ASCII, unknown-8bit or an unknown charset are nearly always UTF-8 today.
    return decode_bytes(payload, part.get_content_charset(), fallback="utf-8")


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _unflow(text: str, *, delsp: bool) -> str:
    """RFC 3676 format=flowed: a line ending in a space continues on the next line."""
    out: list[str] = []
    buf = ""
    for line in _normalise_newlines(text).split("\n"):
        if line.startswith(">") or line == "-- ":
            if buf:
                out.append(buf)
                buf = ""
            out.append(line)
            continue
        line = line[1:] if line.startswith(" ") else line  # space-stuffing
        if line.endswith(" "):
            buf += line[:-1] if delsp else line
        else:
            out.append(buf + line)
            buf = ""
    if buf:
        out.append(buf)
    return "\n".join(out)


def _leaves(part: Message) -> Iterable[Message]:
    """Leaf parts, not descending into attached messages (message/rfc822 is one attachment)."""
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaves(sub)
    else:
        yield part


_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")


def attachments(msg: Message, hint: str = "utf-8") -> list[Attachment]:
    """Attachment metadata only (type, file name, decoded size) — the bytes never leave the gateway."""
    body = _body_part(msg)
    found: list[Attachment] = []

    def visit(part: Message, parent: str) -> None:
        ctype = part.get_content_type()
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            subs = [s for s in part.get_payload() if isinstance(s, Message)]
            if ctype == "multipart/report":
                # Only the human-readable first part; the machine report and the returned copy of our
                # own mail are not the sender's files.
                subs = subs[:1]
            for sub in subs:
                visit(sub, ctype)
            return
        if part is body:
            return
        filename = _fix_8bit(part.get_filename() or "", hint).strip()
        if part.get_content_disposition() != "attachment":
            if part.get_content_maintype() == "text" and not filename:
                return  # the other alternative of the body, or a list footer: not a file
            if part.get("Content-ID") and parent == "multipart/related":
                return  # an image embedded in the HTML (logos, signature pictures)
        if not _MIME_TYPE.match(ctype):
            ctype = "application/octet-stream"  # a mangled header: say what we know, nothing made up
        found.append(Attachment(content_type=ctype, name=filename or None, size=_size(part)))

    visit(msg, "")
    return found


def _size(part: Message) -> int | None:
    try:
        if part.get_content_maintype() == "message":
            inner = part.get_payload(0)
            return len(inner.as_bytes()) if isinstance(inner, Message) else None
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001 - an undecodable part still counts as an attachment, size unknown
        return None
    return len(payload) if isinstance(payload, bytes) else None


# --- HTML → text ---------------------------------------------------------------------------------------


class _HtmlText(HTMLParser):
    """Readable text from mail HTML: paragraphs and line breaks kept, links as "text (url)", quoted
    blocks as "> " lines (so the quote stripper treats them like plain-text quotes), no tags."""

    PARAGRAPH = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "pre", "hr",
                           "blockquote", "dl", "address", "figure"})
    LINE = frozenset({"div", "section", "article", "header", "footer", "tr", "li", "dt", "dd", "center",
                      "form", "main", "nav", "aside", "caption", "tbody", "thead", "tfoot"})
    SKIP = frozenset({"script", "style", "head", "title", "template", "noscript", "object", "svg"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.pre = 0
        self.quote = 0
        self.lists: list[list[Any]] = []  # [kind, counter] per open ul/ol
        self.link: tuple[str, list[str]] | None = None
        # Whether the current line has text and ends in a space, kept as we go: joining the line on
        # every chunk would be quadratic on HTML with thousands of inline tags in one block.
        self.has_text = False
        self.trailing_space = False

    def _add(self, chunk: str) -> None:
        if chunk:
            self.current.append(chunk)
            self.has_text = self.has_text or bool(chunk.strip())
            self.trailing_space = chunk[-1].isspace()

    # lines ------------------------------------------------------------------------------------------
    def _end_line(self) -> None:
        line = "".join(self.current).rstrip()
        self.current = []
        self.has_text = self.trailing_space = False
        if line:
            self.lines.append("> " * self.quote + line)

    def _break(self) -> None:  # <br>: an empty line is a real blank line
        line = "".join(self.current).rstrip()
        self.current = []
        self.has_text = self.trailing_space = False
        self.lines.append("> " * self.quote + line if line else "")

    def _paragraph(self) -> None:
        self._end_line()
        if self.lines and self.lines[-1] != "":
            self.lines.append("")

    # parser callbacks ---------------------------------------------------------------------------------
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self.skip += 1
            return
        if tag == "body":
            self.skip = 0  # mail HTML often never closes <head>; the body starts here all the same
        if tag == "br":
            self._break()
        elif tag in self.PARAGRAPH:
            self._paragraph()
        elif tag in self.LINE:
            self._end_line()
        if tag == "blockquote":
            self.quote += 1
        elif tag == "pre":
            self.pre += 1
        elif tag in ("ul", "ol"):
            self.lists.append([tag, 0])
        elif tag == "li":
            if self.lists and self.lists[-1][0] == "ol":
                self.lists[-1][1] += 1
                self._add(f"{self.lists[-1][1]}. ")
            else:
                self._add("- ")
        elif tag in ("td", "th") and self.has_text:
            self._add(" ")
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.link = (href.strip(), [])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag == "a" and self.link is not None:
            href, words = self.link
            self.link = None
            label = " ".join("".join(words).split())
            target = href[7:] if href.lower().startswith("mailto:") else href
            if href.lower().startswith(("http://", "https://", "mailto:")) and target and target not in label:
                self._add(f" ({target})" if label else target)
        elif tag in self.PARAGRAPH:
            self._paragraph()
        elif tag in self.LINE:
            self._end_line()
        if tag == "blockquote":
            self.quote = max(0, self.quote - 1)
        elif tag == "pre":
            self.pre = max(0, self.pre - 1)
        elif tag in ("ul", "ol") and self.lists:
            self.lists.pop()

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        if self.pre:
            for i, chunk in enumerate(data.split("\n")):
                if i:
                    self._break()
                self._add(chunk)
        else:
            data = re.sub(r"\s+", " ", data)
            if not self.current or self.trailing_space:
                data = data.lstrip()
            self._add(data)
        if self.link is not None:
            self.link[1].append(data)

    def text(self) -> str:
        self._end_line()
        out: list[str] = []
        for line in self.lines:
            if line == "" and (not out or out[-1] == ""):
                continue
            out.append(line)
        return "\n".join(out).strip()


#: HTML beyond this is not converted: the text is cut at MAX_TEXT_CHARS anyway, and html.parser is
#: pure Python — a 25 MB newsletter must not hold the poller or a gateway worker for seconds.
MAX_HTML_CHARS = 2_000_000


def html_to_text(html: str) -> str:
    parser = _HtmlText()
    parser.feed(html[:MAX_HTML_CHARS])
    parser.close()
    return parser.text()


# --- quoted replies and signatures: shared.text (one stripper for the gateway and the router) ----


# --- loop safety (RFC 3834): services.gateway.channels.loops ----------------------------------------


def is_automatic(msg: Message, our_domains: Iterable[str]) -> str | None:
    """Why this mail must never be acknowledged, or None (the reason of `loops.classify`)."""
    verdict = loops.classify(msg, our_domains)
    return verdict.reason if verdict else None


def bounced_recipient(msg: Message) -> str | None:
    """The address a failed-delivery report is about; None for anything else, or a delay notice."""
    verdict = loops.classify(msg, ())
    if verdict is None or verdict.kind != "bounce" or not verdict.failed:
        return None
    return verdict.recipient


__all__ = [
    "SECRET_HEADER", "EmailRelayAdapter", "parse_mime", "is_automatic", "bounced_recipient", "body_text",
    "attachments", "thread_refs", "html_to_text", "strip_quotes_and_signature",
]

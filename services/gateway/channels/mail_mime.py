"""A raw mail's structure and headers, read as people's mail programs actually write them.

The e-mail adapter (services.gateway.channels.email) assembles an InboundMessage from what this
reads: the MIME tree parsed with its depth bounded, the sender and recipients, the Message-ID and the
thread references, and a believable Date. Every reader is total: a header the RFC parser rejects is
read leniently (services.gateway.channels.mail_tolerance) or not at all, never an exception.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.feedparser import BytesFeedParser
from email.message import Message
from email.utils import getaddresses

from services.gateway.channels import Malformed
from services.gateway.channels.mail_tolerance import decode_words, fix_8bit, lenient_mailbox

#: A Date header older than this (relative to when we received the mail) is a wrong clock, not a
#: backlog: the promise would be computed from a made-up time.
MAX_DATE_AGE = timedelta(days=7)

#: Thread references kept per message; References headers of very long threads grow without bound.
MAX_THREAD_REFS = 100

#: Addresses kept in meta["to"]: enough to see which of our mailboxes was written to.
MAX_RECIPIENTS = 100

#: Parts inside parts: a forward of a forward of a reply is a handful of levels, and no mail client
#: shows hundreds. Deeper mail is refused (400 at the relay, quarantine over IMAP) rather than walked
#: by code that recurses once per level.
MAX_MIME_DEPTH = 100

_MAX_ADDRESS = 320  # the contract's limit for an identity (RFC 5321: 64 + 1 + 255)
_MAX_MAILBOX_HEADER = 2_000  # a From/Reply-To with one mailbox: address (320) and a long display name
_MAX_ADDRESS_LIST_HEADER = 20_000  # To: room for MAX_RECIPIENTS addresses with names


_TOO_DEEP = f"the MIME structure is nested too deeply (over {MAX_MIME_DEPTH} levels)"
_FEED_CHUNK = 8192


def parse_bounded(raw: bytes) -> Message:
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


def _raw_header(msg: Message, name: str, hint: str = "utf-8") -> str | None:
    """The first such header as sent (unfolded, 8-bit bytes decoded, encoded words left alone), or None."""
    for key, value in msg.raw_items():
        if key.lower() == name.lower():
            return " ".join(fix_8bit(str(value), hint).split())
    return None


def header_text(msg: Message, name: str, hint: str) -> str | None:
    raw = _raw_header(msg, name, hint)
    if raw is None:
        return None
    # Encoded words decoded here rather than by policy.default, which reads each label literally:
    # a GB2312 subject written by a GBK program, or Windows-1252 quotes labelled ISO-8859-1.
    value = " ".join(decode_words(raw).split())
    return value or None


def first_address(msg: Message, name: str, hint: str) -> tuple[str | None, str | None]:
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
            candidate = fix_8bit(address.addr_spec or "", hint).strip().lower()
            if _plausible_address(candidate):
                addr = candidate
                display = " ".join(fix_8bit(address.display_name or "", hint).split()) or None
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
    return [" ".join(fix_8bit(str(value), hint).split()) for key, value in msg.raw_items()
            if key.lower() == name.lower()]


def _plausible_address(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return (bool(at and local and domain) and len(addr) <= _MAX_ADDRESS
            and not any(c.isspace() or c == "\x00" for c in addr))


def addresses(msg: Message, name: str, hint: str) -> list[str]:
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


def message_id(msg: Message) -> str | None:
    ids = _ids(_raw_header(msg, "Message-ID"))
    return ids[0] if ids else None


def thread_refs(msg: Message) -> tuple[str, ...]:
    """In-Reply-To (the parent) first, then References in header order; duplicates dropped."""
    refs: dict[str, None] = {}
    for name in ("In-Reply-To", "References"):
        for ref in _ids(_raw_header(msg, name)):
            refs[ref] = None
    return tuple(refs)[:MAX_THREAD_REFS]


def sent_at(msg: Message, received_at: datetime) -> datetime | None:
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

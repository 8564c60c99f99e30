"""A mail's body and attachments: the readable text (text/plain preferred, else the HTML as text,
format=flowed joined) and the attachments' metadata. The bytes of an attachment never leave the
gateway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.message import EmailMessage, Message
from email.utils import collapse_rfc2231_value

from services.gateway.channels.mail_html import html_to_text
from services.gateway.channels.mail_tolerance import codec, decode_bytes, fix_8bit
from shared.contracts import Attachment
from shared.text import normalise_newlines


def charset_hint(msg: Message) -> str:
    """The charset the sender's program used, to read raw 8-bit bytes in headers (old mailers send
    koi8-r or windows-1251 Subject lines unencoded). The first declared non-ASCII text charset."""
    for part in _leaves(msg):
        charset = codec(part.get_content_charset())
        if charset and charset not in ("us-ascii", "ascii"):
            return charset
    return "cp1252"


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
    return normalise_newlines(text).strip()


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


def _unflow(text: str, *, delsp: bool) -> str:
    """RFC 3676 format=flowed: a line ending in a space continues on the next line."""
    out: list[str] = []
    buf = ""
    for line in normalise_newlines(text).split("\n"):
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
        filename = fix_8bit(part.get_filename() or "", hint).strip()
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

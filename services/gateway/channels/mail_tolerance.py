"""What mail clients forgive and the email package does not: mislabelled charsets, sloppy address
headers, headers folded without whitespace, junk before the headers.

The rule (issue 12): a message a person can read in a mail client is stored readable, with a name
when the mail has one. So, as the WHATWG Encoding Standard that browsers and mail clients follow:
a label is read as the superset the sending programs really use (GB2312 → GB18030, Shift_JIS →
Windows-31J, ISO-8859-1 → Windows-1252, EUC-KR → Windows-949); UTF-8 with a stray bad byte is still
UTF-8; and an address header is read the way people write it when the RFC form fails.
Everything here is linear in its input and pure.
"""

from __future__ import annotations

import codecs
from email.header import decode_header, make_header
from email.utils import getaddresses

#: Labels → the codec of what is really sent under them (WHATWG Encoding Standard, "index" tables).
_SUPERSET = {
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030", "cp936": "gb18030",
    "chinese": "gb18030", "csgb2312": "gb18030", "gb_2312-80": "gb18030", "iso-ir-58": "gb18030",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ms_kanji": "cp932",
    "csshiftjis": "cp932", "windows-31j": "cp932",
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "l1": "cp1252",
    "iso_8859-1": "cp1252", "iso-ir-100": "cp1252", "cp819": "cp1252", "ibm819": "cp1252",
    "iso-8859-9": "cp1254", "latin5": "cp1254", "iso-8859-11": "cp874", "tis-620": "cp874",
    "euc-kr": "cp949", "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "korean": "cp949",
}

#: Header bytes beyond this are not read for a mailbox (a name and an address are never longer).
MAX_MAILBOX_CHARS = 2_000


def codec(label: str | None) -> str | None:
    """The Python codec to read text labelled `label` with, or None when there is none."""
    name = (label or "").strip().strip('"').lower()
    if not name:
        return None
    name = _SUPERSET.get(name, name)
    try:
        codecs.lookup(name)
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        if name.startswith("x-"):
            return codec(name[2:])  # x-mac-cyrillic → mac-cyrillic
        return None
    return name


def mostly_utf8(data: bytes) -> str | None:
    """`data` as UTF-8 when it is UTF-8 but for a stray bad byte or two (a name cut mid-character by
    some gateway): the bad bytes are dropped. None when it does not look like UTF-8 at all."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = data.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F and ch != "\ufffd")
    if good >= 2 and bad <= max(1, good // 8):
        return text.replace("\ufffd", "")
    return None


def fix_8bit(text: str, hint: str) -> str:
    """Undo the parser's surrogate escapes of raw 8-bit header bytes: UTF-8 if they are, else the hint."""
    if not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    data = text.encode("utf-8", "surrogateescape")
    utf8 = mostly_utf8(data)  # UTF-8, also with a stray bad byte (a name cut mid-character)
    return utf8 if utf8 is not None else data.decode(hint, errors="replace")


def decode_bytes(data: bytes, label: str | None, fallback: str = "cp1252") -> str:
    """Bytes in a declared charset → text, never raising: the label's superset, then UTF-8 (a client
    that labelled UTF-8 as its legacy charset), then the fallback with replacement."""
    name = codec(label)
    if name is not None and name not in ("ascii", "us-ascii"):
        try:
            return data.decode(name)
        except UnicodeDecodeError:
            pass
    utf8 = mostly_utf8(data)
    if utf8 is not None:
        return utf8
    return data.decode(name or codec(fallback) or "cp1252", errors="replace")


def decode_words(text: str) -> str:
    """RFC 2047 encoded words → text, each word's charset read as its superset; a word that cannot be
    decoded is kept as it was."""
    if "=?" not in text:
        return text
    try:
        pieces = decode_header(text)
    except Exception:  # noqa: BLE001 - a header decode_header cannot split: keep it as it is
        return text
    parts: list[tuple[str, str | None]] = []
    for chunk, charset in pieces:
        if isinstance(chunk, bytes):
            chunk = decode_bytes(chunk, charset, fallback="utf-8") if charset else chunk.decode("ascii", "replace")
        parts.append((chunk, "utf-8"))
    try:
        return str(make_header(parts))
    except Exception:  # noqa: BLE001 - never: the chunks are text now; keep what we have all the same
        return " ".join(chunk for chunk, _ in parts)


def _plausible(addr: str) -> bool:
    local, at, domain = addr.rpartition("@")
    return bool(at and local and domain and "." in domain) and len(addr) <= 320 and not any(
        c.isspace() or c in '<>()",;:\\\x00' for c in addr)


def lenient_mailbox(raw: str) -> tuple[str | None, str | None]:
    """(address, display name) of the first mailbox in a header as people write it:
    `Name <addr>`, `addr (Name)` (the comment is the name), or `Name addr` without angle brackets."""
    raw = raw[:MAX_MAILBOX_CHARS]
    try:
        pairs = getaddresses([raw])
    except RecursionError:  # group syntax nested by a hostile header: the stdlib parser recurses
        pairs = []
    for name, addr in pairs:
        addr = addr.strip().lower()
        if _plausible(addr):
            return addr, _clean_name(name)
    # No RFC form: the first word with an "@" is the address, the words before it the name.
    words = raw.replace("<", " ").replace(">", " ").split()
    for i, word in enumerate(words):
        addr = word.strip('"\'<>(),;:[]').lower()
        if "@" in addr and _plausible(addr):
            return addr, _clean_name(" ".join(words[:i]))
    return None, None


def _clean_name(name: str) -> str | None:
    name = decode_words(name.strip().strip('"').strip("'").strip())
    name = " ".join(name.split())
    return name or None


# --- the header block --------------------------------------------------------------------------------


def _is_field(line: bytes) -> bool:
    """Whether a line starts a header field: a name of printable ASCII without spaces, then ":"."""
    name, colon, _ = line.partition(b":")
    return bool(colon) and 0 < len(name) <= 76 and all(33 <= b <= 126 for b in name)


#: Lines of junk (a forwarded-mail banner, an mbox "From " line) skipped before the first header.
MAX_LEADING_JUNK = 10


def repair_headers(raw: bytes) -> bytes:
    """The mail with its header blocks as a client reads them: leading junk lines before the first
    header dropped, and a line inside a header block that is neither a field nor indented (a fold
    whose whitespace was lost) joined to the field above it. Part headers after a MIME boundary line
    are treated the same way. Unchanged when there is nothing to repair."""
    lines = raw.splitlines(keepends=True)
    start = 0
    while start < min(len(lines), MAX_LEADING_JUNK) and not _is_field(lines[start].lstrip()):
        start += 1
    if start == min(len(lines), MAX_LEADING_JUNK) or not lines:
        start = 0  # no header within reach: leave it to the parser to refuse
    delimiters = {b"--" + b for b in _boundaries(raw)}
    out: list[bytes] = []
    in_header = True
    changed = start > 0
    for index in range(start, len(lines)):
        line = lines[index]
        bare = line.rstrip(b"\r\n")
        if in_header:
            if not bare.strip():
                in_header = False
            elif index == start and bare[:1] in (b" ", b"\t") and _is_field(bare.lstrip()):
                line = line.lstrip(b" \t")  # the first field indented: nothing to continue
                changed = True
            elif bare[:1] not in (b" ", b"\t") and not _is_field(bare) and _field_follows(lines, index + 1):
                line = b" " + line  # a fold without its whitespace
                changed = True
        elif bare.rstrip() in delimiters:
            in_header = True  # a part's own header block follows its boundary line
        out.append(line)
    return b"".join(out) if changed else raw


def _field_follows(lines: list[bytes], start: int) -> bool:
    """Whether another header field comes before the end of this header block."""
    for line in lines[start:start + 20]:
        bare = line.rstrip(b"\r\n")
        if not bare.strip():
            return False
        if _is_field(bare):
            return True
    return False


#: Multipart containers looked at for their boundaries; more is no mail anyone writes.
MAX_BOUNDARIES = 200


def _boundaries(raw: bytes) -> set[bytes]:
    """The boundary parameters declared anywhere in the mail (quoted or not)."""
    found: set[bytes] = set()
    lower = raw.lower()
    at = lower.find(b"boundary=")
    while at != -1 and len(found) < MAX_BOUNDARIES:
        value = raw[at + 9:at + 9 + 200]
        if value[:1] == b'"':
            value = value[1:].partition(b'"')[0]
        else:
            value = value.split(b";", 1)[0].split(None, 1)[0] if value.strip() else b""
        if value:
            found.add(value.strip())
        at = lower.find(b"boundary=", at + 9)
    return found

"""E-mail: parse_mime on arbitrary bytes, on MIME-shaped messages made of hostile headers and
parts, and on the real fixtures mutated byte by byte. Either an InboundMessage that passes the
contract (and is storable: no NUL, PostgreSQL refuses it) or Malformed."""

from __future__ import annotations

from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway.channels import Malformed
from services.gateway.channels.email import MAX_TEXT_CHARS, parse_mime
from services.gateway.channels.mail_mime import MAX_MIME_DEPTH
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW, assert_publishable, parsed_or_malformed

FIXTURES = sorted((Path(__file__).resolve().parent.parent / "fixtures" / "email").glob("**/*.eml"))
OURS = ["northwind.example"]


def check(raw: bytes) -> None:
    msg = parsed_or_malformed(lambda: parse_mime(raw, received_at=NOW, our_domains=OURS))
    if msg is None:
        return
    assert_publishable([msg])
    for text in (msg.text, msg.subject, msg.sender_name, msg.sender.value, msg.reply_to, msg.meta["full_text"]):
        assert text is None or "\x00" not in text


@fuzz(300)
@given(st.binary(max_size=600))
@example(b"From: a@b.c\r\n\r\n\x00")
@example(b"From: =?x-unknown?q?a?= <a@b.c>\r\nSubject: =?utf-8?b?AAA=?=\r\n\r\nhi")
def test_arbitrary_bytes_are_parsed_or_malformed(raw: bytes) -> None:
    check(raw)


header_names = st.sampled_from(["From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "In-Reply-To",
                                "References", "Content-Type", "Content-Transfer-Encoding", "Auto-Submitted",
                                "Precedence", "List-Id", "Return-Path", "MIME-Version", "X-Weird"])
header_values = st.one_of(
    st.text(max_size=60).map(lambda t: t.replace("\r", " ").replace("\n", " ")),
    st.sampled_from(["=?koi8-r?B?8NLJ18XU?=", "=?utf-8?q?=FF=FE?=", "=?nope?q?x?=", '"A, B" <a@b.example>',
                     "<>", "<a@b>, <c@d>", "undisclosed-recipients:;", "Mon, 99 Feb 2026 25:61:00 +9999",
                     "Thu, 01 Jan 1970 00:00:00 +0000", "Fri, 31 Dec 9999 23:59:59 -1200",
                     'multipart/mixed; boundary="b"', "multipart/alternative", "text/plain; charset=x-nope",
                     "text/html; charset=koi8-r", "text/plain; charset*=utf-8''%FF", "message/delivery-status",
                     "base64", "quoted-printable", "8bit", "x-uuencode", "auto-replied", "bulk",
                     "a" * 400 + "@example.com", "<" + "x" * 400 + "@example.com>"]),
)
bodies = st.one_of(
    st.binary(max_size=200),
    st.sampled_from([b"--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n",
                     b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hi<br>there</p><script>x\r\n--b--",
                     b"--b\r\nContent-Type: application/pdf; name=\"=?utf-8?q?=00.pdf?=\"\r\n"
                     b"Content-Disposition: attachment; filename*=utf-8''%00\r\n"
                     b"Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n--b--",
                     b"--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: x@y\r\n\r\n--b--",
                     b"On Mon, X wrote:\r\n> quoted\r\n-- \r\nsig", b"=C3=28=\r\n=XY", b"\x00\x01\xff"]),
)


@fuzz(400)
@given(st.lists(st.tuples(header_names, header_values), max_size=10), bodies,
       st.sampled_from([b"From: Customer <c@example.com>\r\n", b""]))
def test_mime_shaped_messages_are_parsed_or_malformed(headers, body: bytes, sender: bytes) -> None:
    head = b"".join(f"{name}: {value}\r\n".encode("utf-8", "surrogatepass") for name, value in headers)
    check(sender + head + b"\r\n" + body)


@fuzz(300)
@given(st.sampled_from(FIXTURES), st.data())
def test_a_real_message_mutated_is_parsed_or_malformed(path: Path, data) -> None:
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        if not raw:
            break
        at = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        if op == "replace":
            raw[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=20))
        elif op == "delete":
            del raw[at:at + data.draw(st.integers(1, 40))]
        else:
            del raw[at:]
    check(bytes(raw))


# --- nesting and size (issue 13: 3,000 nested parts answered 500) ------------------------------------

containers = st.sampled_from(["multipart/mixed", "multipart/alternative", "multipart/related", "message/rfc822",
                              "multipart/report"])
hostile_units = st.sampled_from(["Where is my parcel? ", " ", "\t", "-", "_", ">", "> ", "Thanks,\n", "=", "\r\n",
                                 "On Mon wrote:\n", "--b0\r\n", "\xa0", "й"])


@st.composite
def nested_mail(draw) -> tuple[bytes, int]:
    """A mail of `depth` containers one inside the other, each with an optional sibling part, and a
    leaf text of up to 150 k characters made of one hostile unit; returns (bytes, depth)."""
    depth = draw(st.one_of(st.integers(0, 12), st.integers(90, 110), st.sampled_from([500, 3_000])))
    kinds = [draw(containers) for _ in range(min(depth, 20))]
    size = draw(st.one_of(st.integers(0, 200), st.integers(50_000, 150_000)))
    unit = draw(hostile_units)
    leaf_text = (unit * (size // len(unit) + 1))[:size]
    head = [b"From: Ann <ann@example.com>\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"]
    tail: list[bytes] = []
    for level in range(depth):
        kind = kinds[level % len(kinds)]
        if kind == "message/rfc822":
            head.append(b"Content-Type: message/rfc822\r\n\r\nFrom: b@example.com\r\n")
        else:
            head.append(f'Content-Type: {kind}; boundary="b{level}"\r\n\r\n--b{level}\r\n'.encode())
            sibling = b"--b%d\r\nContent-Type: text/html\r\n\r\n<p>x</p>\r\n" % level if draw(st.booleans()) else b""
            tail.append(b"\r\n" + sibling + b"--b%d--\r\n" % level)
    head.append(b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + leaf_text.encode())
    return b"".join(head) + b"".join(reversed(tail)), depth


@fuzz(40)
@given(nested_mail())
def test_nested_and_large_mime_is_parsed_or_refused_by_name(mail: tuple[bytes, int]) -> None:
    raw, depth = mail
    try:
        msg = parse_mime(raw, received_at=NOW, our_domains=OURS)
    except Malformed as exc:
        # Only too deep a structure is a reason to refuse this mail, and the refusal says so.
        assert depth > MAX_MIME_DEPTH - 1 and "nested too deeply" in str(exc), (depth, exc)
        return
    assert depth <= MAX_MIME_DEPTH
    assert_publishable([msg])
    assert len(msg.meta["full_text"]) <= MAX_TEXT_CHARS

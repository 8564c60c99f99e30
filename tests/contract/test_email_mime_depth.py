"""A mail nested thousands of levels deep (issue 13: it answered 500) is refused with a 400 that
names the problem, and nothing is handed on; a mail nested as deep as real mail gets is read."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.email import EmailRelayAdapter
from services.gateway.channels.mail_mime import MAX_MIME_DEPTH

SECRET = "relay-s3cret"
NOW = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)


def nested(depth: int, kind: str = "multipart/mixed") -> bytes:
    """`depth` containers one inside the other (multipart, or forwarded messages), text at the bottom."""
    out = [b"From: Ann <ann@example.com>\r\nSubject: deep\r\nMessage-ID: <deep@example.com>\r\nMIME-Version: 1.0\r\n"]
    for level in range(depth):
        if kind == "message/rfc822":
            out.append(b"Content-Type: message/rfc822\r\n\r\nFrom: b@example.com\r\nSubject: fwd\r\n")
        else:
            out.append(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (level, level))
    out.append(b"Content-Type: text/plain; charset=utf-8\r\n\r\nWhere is my parcel?\r\n")
    if kind != "message/rfc822":
        out.extend(b"--b%d--\r\n" % level for level in reversed(range(depth)))
    return b"".join(out)


@pytest.fixture
def client(example_config, intake):
    deps = GatewayDeps(config=example_config, intake=intake,
                       adapters={"email": EmailRelayAdapter(SECRET, ["northwind.example"])},
                       public_base_url="https://support.example", max_body_bytes=1024 * 1024, clock=lambda: NOW)
    return create_app(deps).test_client()


def relay(client, raw: bytes):
    return client.post("/webhooks/email", data=raw, headers={"X-Switchboard-Relay-Secret": SECRET},
                       content_type="message/rfc822")


@pytest.mark.parametrize("kind", ["multipart/mixed", "message/rfc822"])
@pytest.mark.parametrize("depth", [MAX_MIME_DEPTH + 1, 3_000])
def test_a_mail_nested_too_deeply_is_a_400_naming_it(client, intake, depth: int, kind: str) -> None:
    answer = relay(client, nested(depth, kind))
    assert answer.status_code == 400
    assert answer.json == {"error": "malformed",
                           "message": f"the MIME structure is nested too deeply (over {MAX_MIME_DEPTH} levels)"}
    assert intake.accepted == []


@pytest.mark.parametrize("kind", ["multipart/mixed", "message/rfc822"])
def test_a_mail_nested_as_deep_as_real_mail_is_read(client, intake, kind: str) -> None:
    answer = relay(client, nested(20, kind))
    assert answer.status_code == 200
    [envelope] = intake.accepted
    if kind == "multipart/mixed":
        assert envelope.payload.text == "Where is my parcel?"
    else:  # the forwarded messages are attachments; the mail itself has no text of its own
        assert envelope.payload.attachments[0].content_type == "message/rfc822"

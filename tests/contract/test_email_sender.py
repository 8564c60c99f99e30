"""The SMTP sender: headers checked on `build_message`, then real SMTP round trips against an
aiosmtpd server started here — plain, STARTTLS and implicit TLS with a self-signed certificate made
for the test — and the server's refusals mapped to permanent or transient failures."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from services.gateway.channels.email import parse_mime
from services.notifier.senders import PermanentSendError, TransientSendError
from services.notifier.senders.email import SmtpSender, build_message
from tests.support.procs import free_port

DOMAIN = "support.northwind.example"
FROM = "Northwind Support <help@support.northwind.example>"
WHEN = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.UTC)


# --- build_message: the headers, without a server -------------------------------------------------

def test_message_id_uses_our_domain_never_the_host_name() -> None:
    msg = build_message(FROM, "jan@example.pl", "Hello", domain=DOMAIN)
    message_id = str(msg["Message-ID"])
    assert message_id.startswith("<") and message_id.endswith(f"@{DOMAIN}>")
    assert socket.gethostname() not in message_id
    assert build_message(FROM, "jan@example.pl", "Hello", domain=DOMAIN)["Message-ID"] != message_id


def test_reply_threads_on_the_customer_message() -> None:
    msg = build_message(FROM, "jan@example.pl", "Hello", domain=DOMAIN, options={
        "subject": "Re: Zwrot pieniędzy", "in_reply_to": "CAJ8pLw0vX4n2Q@mail.example.com",
        "references": ["<first@example.pl>", "CAJ8pLw0vX4n2Q@mail.example.com"],
    })
    assert msg["In-Reply-To"] == "<CAJ8pLw0vX4n2Q@mail.example.com>"
    assert msg["References"] == "<first@example.pl> <CAJ8pLw0vX4n2Q@mail.example.com>"
    assert msg["Subject"] == "Re: Zwrot pieniędzy"


def test_references_get_the_parent_appended_when_missing() -> None:
    msg = build_message(FROM, "a@example.com", "x", domain=DOMAIN,
                        options={"in_reply_to": "<parent@example.com>", "references": "<root@example.com>"})
    assert msg["References"] == "<root@example.com> <parent@example.com>"


def test_no_threading_headers_for_a_new_thread() -> None:
    msg = build_message(FROM, "a@example.com", "x", domain=DOMAIN)
    assert msg["In-Reply-To"] is None and msg["References"] is None


def test_automatic_mail_carries_the_rfc3834_headers() -> None:
    ack = build_message(FROM, "a@example.com", "x", domain=DOMAIN, options={"automatic": True})
    assert ack["Auto-Submitted"] == "auto-replied"
    assert ack["X-Auto-Response-Suppress"] == "All"
    human = build_message(FROM, "a@example.com", "x", domain=DOMAIN, options={"automatic": False})
    assert human["Auto-Submitted"] is None and human["X-Auto-Response-Suppress"] is None


def test_a_survey_mail_offers_one_click_unsubscribe_rfc_8058() -> None:
    url = "https://support.example/survey/eyJ0IjoiUW0zeFQ5YVowYlljOGRXZSIsImwiOiJwbCIsInUiOjF9.Z0abcd.sig"
    survey = build_message(FROM, "a@example.com", "x", domain=DOMAIN,
                           options={"automatic": True, "list_unsubscribe": url})
    assert survey["List-Unsubscribe"] == f"<{url}>"
    assert survey["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert build_message(FROM, "a@example.com", "x", domain=DOMAIN)["List-Unsubscribe"] is None
    for bad in ("mailto:x@example.com", "https://x.example/a>\r\nBcc: y@example.com"):
        with pytest.raises(ValueError, match="List-Unsubscribe"):
            build_message(FROM, "a@example.com", "x", domain=DOMAIN, options={"list_unsubscribe": bad})


@pytest.mark.parametrize(("subject", "reference", "expected"), [
    ("We have received your message", "SB-ABCDEFGHJK", "We have received your message [SB-ABCDEFGHJK]"),
    ("We have received your message", "[sb-abcdefghjk]", "We have received your message [SB-ABCDEFGHJK]"),
    ("Re: Where is my order? [SB-ABCDEFGHJK]", "SB-ABCDEFGHJK", "Re: Where is my order? [SB-ABCDEFGHJK]"),
    (None, "SB-ABCDEFGHJK", "[SB-ABCDEFGHJK]"),
    ("Plain", None, "Plain"),
])
def test_subject_carries_the_reference_token_once(subject, reference, expected) -> None:
    msg = build_message(FROM, "a@example.com", "x", domain=DOMAIN,
                        options={"subject": subject, "reference": reference})
    assert msg["Subject"] == expected


def test_body_is_quoted_printable_utf8() -> None:
    text = "Dziękujemy! Odpowiemy do wtorku 10:00.\nСпасибо!"
    msg = build_message(FROM, "a@example.com", text, domain=DOMAIN, date=WHEN)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content_charset() == "utf-8"
    wire = msg.as_bytes()
    assert wire.isascii() and b"\r\n" in wire  # 7-bit clean for servers without 8BITMIME, CRLF
    assert msg["Date"] == "Tue, 10 Mar 2026 09:30:00 +0000"
    decoded = message_from_bytes(wire, policy=policy.default).get_content()
    assert decoded.replace("\r\n", "\n") == text + "\n"


@pytest.mark.parametrize("options", [{"reference": "48213"}, {"reference": "SB-ABC"}])
def test_a_bad_reference_is_a_programming_error(options) -> None:
    with pytest.raises(ValueError, match="reference"):
        build_message(FROM, "a@example.com", "x", domain=DOMAIN, options=options)


@pytest.mark.parametrize("domain", ["", "user@example.com"])
def test_a_message_id_domain_is_required(domain) -> None:
    with pytest.raises(ValueError, match="domain"):
        build_message(FROM, "a@example.com", "x", domain=domain)


def test_credentials_over_plain_smtp_are_refused_at_start() -> None:
    with pytest.raises(ValueError, match="starttls"):
        SmtpSender("127.0.0.1", 25, "user", "pw", from_address=FROM, domain=DOMAIN, security="none")


# --- a real SMTP server ----------------------------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool


@dataclass
class Handler:
    """aiosmtpd handler: accepts, or answers RCPT/DATA with the code a test sets per recipient."""

    received: list[Received] = field(default_factory=list)
    rcpt_reply: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.rcpt_reply:
            return self.rcpt_reply[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                                      session.ssl is not None))
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"sb", b"pw")
    # handled=False: aiosmtpd then answers 535 itself (its default, handled=True, means "already answered").
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_context(certificate) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(*certificate)
    return ctx


def trusting(certificate) -> ssl.SSLContext:
    """What a deployment with a private CA passes: verification on, our certificate trusted."""
    return ssl.create_default_context(cafile=str(certificate[0]))


def start_server(**kwargs) -> tuple[Controller, Handler]:
    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **kwargs)
    controller.start()
    return controller, handler


@pytest.fixture
def smtp_server():
    controller, handler = start_server()
    yield controller, handler
    controller.stop()


@pytest.fixture
def starttls_server(certificate):
    controller, handler = start_server(tls_context=server_context(certificate), require_starttls=True,
                                       authenticator=authenticator)
    yield controller, handler
    controller.stop()


@pytest.fixture
def tls_server(certificate):
    controller, handler = start_server(ssl_context=server_context(certificate))
    yield controller, handler
    controller.stop()


def sender_for(controller, **kw) -> SmtpSender:
    kw.setdefault("security", "none")
    return SmtpSender("127.0.0.1", controller.port, kw.pop("user", None), kw.pop("password", None),
                      from_address=FROM, domain=DOMAIN, timeout=5, **kw)


def test_plain_round_trip_delivers_what_build_message_made(smtp_server) -> None:
    controller, handler = smtp_server
    result = sender_for(controller).send("Jan.Kowalski@example.pl", "Dziękujemy! Odpowiemy do wtorku 10:00.",
                                         options={"subject": "Re: Zwrot", "reference": "SB-ABCDEFGHJK",
                                                  "in_reply_to": "CAJ8@mail.example.com", "automatic": True})
    [got] = handler.received
    assert got.mail_from == "help@support.northwind.example"
    assert got.rcpt_tos == ["Jan.Kowalski@example.pl"]
    assert not got.tls
    sent = message_from_bytes(got.content, policy=policy.default)
    # str() of a folded header keeps the folding space: RFC 5322 allows whitespace before the id.
    assert str(sent["Message-ID"]).strip() == f"<{result.provider_message_id}>"
    assert result.provider_message_id.endswith(f"@{DOMAIN}")
    assert sent["Subject"] == "Re: Zwrot [SB-ABCDEFGHJK]"
    assert sent["In-Reply-To"] == "<CAJ8@mail.example.com>"
    assert sent["Auto-Submitted"] == "auto-replied"
    assert sent.get_content().replace("\r\n", "\n") == "Dziękujemy! Odpowiemy do wtorku 10:00.\n"


def test_our_acknowledgement_coming_back_is_recognised_as_ours(smtp_server) -> None:
    """Loop safety end to end: what the sender puts on the wire, the gateway refuses to acknowledge."""
    controller, handler = smtp_server
    result = sender_for(controller).send("help@support.northwind.example", "Thank you",
                                         options={"subject": "We have received your message", "automatic": True})
    back = parse_mime(handler.received[0].content, received_at=WHEN, our_domains={DOMAIN})
    assert back.automatic
    assert back.external_id == result.provider_message_id  # same form as the thread_refs of a reply


def test_starttls_with_login(starttls_server, certificate) -> None:
    controller, handler = starttls_server
    sender = sender_for(controller, security="starttls", user="sb", password="pw",
                        ssl_context=trusting(certificate))
    sender.send("a@example.com", "over TLS")
    [got] = handler.received
    assert got.tls


def test_starttls_with_wrong_password_is_transient(starttls_server, certificate) -> None:
    controller, handler = starttls_server
    sender = sender_for(controller, security="starttls", user="sb", password="nope",
                        ssl_context=trusting(certificate))
    with pytest.raises(TransientSendError, match="SMTP login failed"):
        sender.send("a@example.com", "x")
    assert handler.received == []


def test_starttls_verifies_the_certificate_by_default(starttls_server) -> None:
    controller, handler = starttls_server
    with pytest.raises(TransientSendError, match="CERTIFICATE_VERIFY_FAILED"):
        sender_for(controller, security="starttls").send("a@example.com", "x")
    assert handler.received == []


def test_starttls_missing_on_the_server_never_falls_back_to_clear_text(smtp_server) -> None:
    controller, handler = smtp_server
    with pytest.raises(TransientSendError, match="STARTTLS"):
        sender_for(controller, security="starttls").send("a@example.com", "x")
    assert handler.received == []


def test_implicit_tls_round_trip(tls_server, certificate) -> None:
    controller, handler = tls_server
    sender_for(controller, security="tls", ssl_context=trusting(certificate)).send("a@example.com", "x")
    [got] = handler.received
    assert got.rcpt_tos == ["a@example.com"]


@pytest.mark.parametrize(("reply", "error"), [
    ("550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", PermanentSendError),
    ("553 5.1.3 Bad recipient address syntax", PermanentSendError),
    ("451 4.3.0 Temporary lookup failure, try again later", TransientSendError),
    ("452 4.2.2 Mailbox full", TransientSendError),
])
def test_recipient_refusals(smtp_server, reply, error) -> None:
    controller, handler = smtp_server
    handler.rcpt_reply["nobody@example.com"] = reply
    with pytest.raises(error, match=reply.split()[0]):
        sender_for(controller).send("nobody@example.com", "x")
    assert handler.received == []


@pytest.mark.parametrize(("reply", "error"), [
    ("554 5.7.1 Message rejected as spam", PermanentSendError),
    ("421 4.7.0 Try again later, closing connection", TransientSendError),
])
def test_data_refusals(smtp_server, reply, error) -> None:
    controller, handler = smtp_server
    handler.data_reply = reply
    with pytest.raises(error, match=reply.split()[0]):
        sender_for(controller).send("a@example.com", "x")


def test_connection_refused_is_transient() -> None:
    port = free_port()  # nothing listens there
    sender = SmtpSender("127.0.0.1", port, None, None, from_address=FROM, domain=DOMAIN, security="none",
                        timeout=2)
    with pytest.raises(TransientSendError, match="ConnectionRefusedError"):
        sender.send("a@example.com", "x")


def test_a_server_that_never_answers_times_out_transiently() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    accepted: list[socket.socket] = []
    thread = threading.Thread(target=lambda: accepted.append(listener.accept()[0]), daemon=True)
    thread.start()
    try:
        sender = SmtpSender("127.0.0.1", listener.getsockname()[1], None, None, from_address=FROM,
                            domain=DOMAIN, security="none", timeout=0.5)
        with pytest.raises(TransientSendError, match="timed out"):
            sender.send("a@example.com", "x")
    finally:
        for conn in accepted:
            conn.close()
        listener.close()

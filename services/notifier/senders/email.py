"""SMTP sender: acknowledgements, agent replies and surveys as threaded, loop-safe e-mail.

`build_message` is pure (tests check headers without a server); `SmtpSender.send` sends on an SMTP
connection (STARTTLS, implicit TLS or plain) that consecutive sends reuse while it is young and
still answers NOOP; sends at once each hold their own connection.

Options understood by `send(address, text, options=...)`:
- `subject`: the subject line; `reference` ("SB-XXXXXXXXXX"): appended as "[SB-…]" so that a reply
  from a client that drops In-Reply-To still finds its conversation;
- `in_reply_to`, `references`: the customer's Message-ID(s) we answer, with or without angle brackets
  (References gets In-Reply-To appended when missing, RFC 5322 §3.6.4);
- `automatic`: an acknowledgement or survey — `Auto-Submitted: auto-replied` and
  `X-Auto-Response-Suppress: All`, so the other side's autoresponder does not answer it (RFC 3834).

The Message-ID is made with our e-mail domain, never the host name (a container's is "localhost" or
random), so our own mail coming back is recognised by the gateway (`is_automatic`) and replies thread.
`SendResult.provider_message_id` is that Message-ID without angle brackets — the same form the gateway
puts in an InboundMessage's thread_refs, so a reply's In-Reply-To matches it as it is.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError
from shared.reference import subject_token

Security = Literal["starttls", "tls", "none"]

DEFAULT_PORTS: dict[str, int] = {"starttls": 587, "tls": 465, "none": 25}

def build_message(from_address: str, to: str, text: str, *, domain: str,
                  options: Mapping[str, Any] | None = None, date: datetime | None = None) -> EmailMessage:
    """The message exactly as it will be sent. Pure apart from make_msgid's randomness."""
    if not domain or "@" in domain or any(c.isspace() for c in domain):
        raise ValueError(f"a Message-ID domain is required (got {domain!r}): configure business.email_domain")
    opts = dict(options or {})
    # policy.SMTP: CRLF line ends on the wire; quoted-printable UTF-8 passes servers without 8BITMIME.
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = from_address
    msg["To"] = to
    msg["Subject"] = _subject(opts.get("subject"), opts.get("reference"))
    msg["Date"] = format_datetime(date or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=domain)
    parent = _bracketed(opts.get("in_reply_to"))
    references = [ref for ref in map(_bracketed, _as_list(opts.get("references"))) if ref]
    if parent:
        msg["In-Reply-To"] = parent
        references.append(parent)
    if references:
        msg["References"] = " ".join(dict.fromkeys(references))  # once each, oldest first
    if opts.get("automatic"):
        msg["Auto-Submitted"] = "auto-replied"
        msg["X-Auto-Response-Suppress"] = "All"
    unsubscribe = opts.get("list_unsubscribe")
    if unsubscribe:
        # RFC 8058 one-click: the mail client POSTs "List-Unsubscribe=One-Click" to the HTTPS URL
        # (the gateway's signed unsubscribe link). RFC 2369 wants the URL in angle brackets.
        url = str(unsubscribe)
        if not url.startswith(("https://", "http://")) or any(c in url for c in "<> \t\r\n"):
            raise ValueError(f"not a List-Unsubscribe URL: {url!r}")
        msg["List-Unsubscribe"] = f"<{url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    return msg


def _subject(subject: Any, reference: Any) -> str:
    text = " ".join(str(subject or "").split())
    if reference:
        token = subject_token(reference)
        if token.lower() not in text.lower():
            text = f"{text} {token}".strip()
    return text


def _as_list(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, Iterable):
        return [str(v) for v in value if v]
    return [str(value)]


def _bracketed(value: Any) -> str | None:
    """A Message-ID in the form headers need ("<id>"); None for none."""
    text = str(value or "").strip().strip("<>").strip()
    return f"<{text}>" if text else None


class SmtpSender:
    channel = "email"

    def __init__(self, host: str, port: int | None, user: str | None, password: str | None, *,
                 from_address: str, domain: str, security: Security = "starttls", timeout: float = 10,
                 ssl_context: ssl.SSLContext | None = None, local_hostname: str | None = None,
                 max_idle: float = 30.0, max_messages: int = 100, max_kept: int = 8):
        if security not in DEFAULT_PORTS:
            raise ValueError(f"security must be one of {sorted(DEFAULT_PORTS)}, not {security!r}")
        if security == "none" and user:
            # Credentials over an unencrypted connection: refuse at start rather than leak them.
            raise ValueError("SMTP credentials need security 'starttls' or 'tls'")
        self.host = host
        self.port = port or DEFAULT_PORTS[security]
        self.user = user
        self.password = password
        self.from_address = from_address
        self.domain = domain
        self.security = security
        self.timeout = timeout
        # Without an explicit context Python 3.11's starttls() does not verify the certificate.
        self.ssl_context = ssl_context or ssl.create_default_context()
        # EHLO with our domain: smtplib's default socket.getfqdn() can stall for seconds on DNS in a
        # container and yields a name that means nothing to the receiving server.
        self.local_hostname = local_hostname or domain
        # Consecutive sends share a connection (one connect, TLS handshake and login for many
        # messages). Kept idle at most `max_idle` seconds: servers drop idle sessions (RFC 5321
        # §4.5.3.2.7 lets them after 5 minutes, some sooner); at most `max_messages` per connection,
        # a cap many relays enforce; at most `max_kept` idle at once. max_idle=0: a connection per send.
        self.max_idle = max_idle
        self.max_messages = max_messages
        self.max_kept = max_kept
        self._idle: list[_Session] = []
        self._lock = threading.Lock()

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        msg = build_message(self.from_address, address, text, domain=self.domain, options=options)
        try:
            session = self._checkout()
            try:
                refused = session.smtp.send_message(msg)
            except BaseException:
                # Whatever state the server is in after a refusal or a broken exchange, this
                # connection is not used again.
                session.close()
                raise
            session.sent += 1
            self._checkin(session)
        except smtplib.SMTPRecipientsRefused as exc:
            raise _classify_refusals(exc.recipients, address) from exc
        except smtplib.SMTPAuthenticationError as exc:
            # Our credentials, not the customer's address: retried, then dead-lettered and visible.
            raise TransientSendError(f"SMTP login failed ({exc.smtp_code}): check SMTP_USER/SMTP_PASSWORD") from exc
        except smtplib.SMTPSenderRefused as exc:
            # Our From address is refused: configuration, so keep the message replayable.
            raise TransientSendError(f"SMTP server refused the sender {exc.sender!r}: {exc.smtp_code} "
                                     f"{_text(exc.smtp_error)}") from exc
        except (smtplib.SMTPConnectError, smtplib.SMTPHeloError) as exc:
            # Refused at the greeting or EHLO: about our connection (IP reputation, limits), not the message.
            raise TransientSendError(f"SMTP {self.host}:{self.port} refused the connection: {exc.smtp_code} "
                                     f"{_text(exc.smtp_error)}") from exc
        except smtplib.SMTPResponseException as exc:  # DATA refused, and any other coded reply
            if 500 <= exc.smtp_code < 600:
                raise PermanentSendError(f"SMTP server rejected the message: {exc.smtp_code} "
                                         f"{_text(exc.smtp_error)}") from exc
            raise TransientSendError(f"SMTP server deferred the message: {exc.smtp_code} "
                                     f"{_text(exc.smtp_error)}") from exc
        except smtplib.SMTPNotSupportedError as exc:
            # The server does not offer STARTTLS (or AUTH): never fall back to sending in clear.
            raise TransientSendError(f"SMTP server at {self.host}:{self.port} does not support it: {exc}") from exc
        except (smtplib.SMTPException, OSError) as exc:  # OSError covers TimeoutError and ssl.SSLError
            # Connection refused or dropped, timeouts, TLS failures: the server may be back later.
            raise TransientSendError(f"SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}") from exc
        if refused:
            raise _classify_refusals(refused, address)
        return SendResult(provider_message_id=str(msg["Message-ID"]).strip().strip("<>"))

    def _checkout(self) -> _Session:
        """A connection for one send: the most recently used idle one that is still young and
        still answers NOOP, else a new one (connected, TLS, logged in).

        Reuse is safe for exactly-once: a kept connection is proven alive (NOOP, 250) before MAIL
        FROM, so a server that dropped it while idle costs a reconnect, never a resend; a failure
        after that point is the same as on a new connection (transient: the outbox retries)."""
        now = time.monotonic()
        while True:
            with self._lock:
                session = self._idle.pop() if self._idle else None
            if session is None:
                break
            if now - session.last_used > self.max_idle or session.sent >= self.max_messages:
                session.quit()
                continue
            try:
                code, _ = session.smtp.noop()
            except (smtplib.SMTPException, OSError):
                code = 0
            if code == 250:
                return session
            session.close()
        smtp = self._connect()
        try:
            if self.user:
                smtp.login(self.user, self.password or "")
        except BaseException:
            smtp.close()
            raise
        return _Session(smtp)

    def _checkin(self, session: _Session) -> None:
        session.last_used = time.monotonic()
        if self.max_idle <= 0 or session.sent >= self.max_messages:
            session.quit()
            return
        with self._lock:
            self._idle.append(session)
            surplus = self._idle[:-self.max_kept] if len(self._idle) > self.max_kept else []
            del self._idle[:len(surplus)]
        for old in surplus:
            old.quit()

    def _connect(self) -> smtplib.SMTP:
        if self.security == "tls":
            return smtplib.SMTP_SSL(self.host, self.port, local_hostname=self.local_hostname,
                                    timeout=self.timeout, context=self.ssl_context)
        smtp = smtplib.SMTP(self.host, self.port, local_hostname=self.local_hostname, timeout=self.timeout)
        try:
            if self.security == "starttls":
                smtp.ehlo()
                smtp.starttls(context=self.ssl_context)
                smtp.ehlo()
        except BaseException:
            smtp.close()
            raise
        return smtp

    def close(self) -> None:
        """QUIT the connections kept for the next sends."""
        with self._lock:
            idle, self._idle = self._idle, []
        for session in idle:
            session.quit()


class _Session:
    """One SMTP connection, with what decides whether it may carry the next message."""

    def __init__(self, smtp: smtplib.SMTP):
        self.smtp = smtp
        self.sent = 0
        self.last_used = time.monotonic()

    def quit(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()

    def close(self) -> None:
        self.smtp.close()


def _classify_refusals(recipients: Mapping[str, tuple[int, bytes | str]], address: str) -> Exception:
    """5xx for the recipient: the address is invalid (permanent). 4xx: greylisting, a full mailbox
    or a busy server (transient)."""
    code, message = recipients.get(address) or next(iter(recipients.values()), (0, b""))
    detail = f"{code} {_text(message)}"
    if 500 <= code < 600:
        return PermanentSendError(f"recipient {address} refused: {detail}")
    return TransientSendError(f"recipient {address} deferred: {detail}")


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

"""A fake Twilio REST API: a real HTTP server on loopback that twilio-python's Client talks to.

Serves `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` (form-encoded, HTTP Basic auth with
the account SID and auth token), answers 201 with a Message resource shaped like Twilio's, and
records every accepted send. Failures are programmable, in Twilio's own error shapes:
`fail_next(status, code=..., retry_after=..., problem=...)`, `opt_out(number)` (21610 like a
number that texted STOP), and `delay` (seconds before answering, to test client timeouts).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.http import FakeHandler, FakeServer

ACCOUNT_SID = "AC3f9a1c2b4d5e6f708192a3b4c5d6e7f8"
AUTH_TOKEN = "fake-auth-token-0123456789abcdef"

ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "The 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
}


@dataclass(frozen=True)
class SentSms:
    sid: str
    to: str
    from_: str | None
    body: str
    status_callback: str | None
    messaging_service_sid: str | None
    params: dict[str, list[str]]


@dataclass(frozen=True)
class _Failure:
    status: int
    code: int | None
    retry_after: str | None
    problem: bool
    raw: bytes | None


@dataclass
class FakeTwilioApi(FakeServer):
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    delay: float = 0.0
    sent: list[SentSms] = field(default_factory=list)
    requests: int = 0
    _failures: list[_Failure] = field(default_factory=list)
    _opted_out: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> FakeTwilioApi:
        fake = self
        sids = itertools.count(1)

        class Handler(FakeHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                params = parse_qs(self.read_body().decode("utf-8"), keep_blank_values=True)
                with fake._lock:
                    fake.requests += 1
                if fake.delay:
                    fake._stopping.wait(fake.delay)  # stop() releases a slow answer at once
                if not fake._authorised(self.headers.get("Authorization", "")):
                    return self._error(401, 20003)
                if self.path != f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json":
                    return self._error(404, 20404)
                with fake._lock:
                    failure = fake._failures.pop(0) if fake._failures else None
                if failure:
                    return self._failure(failure)
                to = _first(params, "To")
                from_ = _first(params, "From")
                service = _first(params, "MessagingServiceSid")
                body = _first(params, "Body")
                if not to:
                    return self._error(400, 21604)
                if not from_ and not service:
                    return self._error(400, 21603)
                if not body:
                    return self._error(400, 21602)
                if not to.startswith("+") or not to[1:].isdigit():
                    return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
                if to in fake._opted_out:
                    return self._error(400, 21610)
                sid = f"SM{next(sids):032x}"
                sms = SentSms(sid=sid, to=to, from_=from_, body=body, status_callback=_first(params, "StatusCallback"),
                              messaging_service_sid=service, params=params)
                with fake._lock:
                    fake.sent.append(sms)
                return self._json(201, fake._message(sms))

            def _failure(self, failure: _Failure) -> None:
                headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
                if failure.raw is not None:
                    return self._send(failure.status, failure.raw, "text/html", headers)
                code = failure.code or (20429 if failure.status == 429 else 20500)
                if failure.problem:
                    # RFC 9457 problem details: twilio-python raises TwilioServiceException for these.
                    problem = {"type": f"https://www.twilio.com/docs/errors/{code}",
                               "title": ERROR_MESSAGES.get(code, "Error"), "status": failure.status, "code": code,
                               "detail": ERROR_MESSAGES.get(code, "Error"),
                               "instance": f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"}
                    return self._send(failure.status, json.dumps(problem).encode(), "application/problem+json", headers)
                return self._error(failure.status, code, headers=headers)

            def _error(self, status: int, code: int, message: str | None = None,
                       headers: dict[str, str] | None = None) -> None:
                self._json(status, {"code": code, "message": message or ERROR_MESSAGES.get(code, "Error"),
                                    "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status},
                           headers)

            def _json(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                self.send_json(status, body, headers)

            def _send(self, status: int, data: bytes, ctype: str, headers: dict[str, str]) -> None:
                self.send(status, data, ctype, headers)

        self.serve(Handler)
        return self

    @property
    def base_url(self) -> str:
        """TWILIO_API_BASE: scheme and host, as "https://api.twilio.com"."""
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, status: int = 500, *, code: int | None = None, retry_after: str | int | None = None,
                  problem: bool = False, raw: bytes | None = None, times: int = 1) -> None:
        failure = _Failure(status, code, None if retry_after is None else str(retry_after), problem, raw)
        with self._lock:
            self._failures.extend([failure] * times)

    def opt_out(self, number: str) -> None:
        """Twilio refuses every send to a number that texted STOP to the sender."""
        with self._lock:
            self._opted_out.add(number)

    def sent_to(self, number: str) -> list[SentSms]:
        with self._lock:
            return [s for s in self.sent if s.to == number]

    def stop(self) -> None:
        self._stopping.set()
        super().stop()

    def _authorised(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return user == self.account_sid and password == self.auth_token

    def _message(self, sms: SentSms) -> dict[str, Any]:
        now = format_datetime(datetime.now(UTC))  # RFC 2822, as Twilio: "Thu, 24 Aug 2023 05:01:45 +0000"
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sms.sid}"
        return {
            "account_sid": self.account_sid, "api_version": "2010-04-01", "body": sms.body,
            "date_created": now, "date_sent": None, "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None, "from": sms.from_,
            "messaging_service_sid": sms.messaging_service_sid, "num_media": "0",
            "num_segments": "1", "price": None, "price_unit": "USD", "sid": sms.sid,
            # With a Messaging Service Twilio first answers "accepted", then picks a sender.
            "status": "accepted" if sms.messaging_service_sid else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"}, "to": sms.to, "uri": f"{uri}.json",
        }


def _first(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None

"""SMS sender on the Twilio Messages API (twilio-python), pointed at TWILIO_API_BASE when set.

`send` posts one message to /2010-04-01/Accounts/{sid}/Messages.json and returns its SID (SM…);
delivery is reported later to the status callback (`POST /webhooks/twilio/status`).
Failures are sorted for the outbox by `classify_failure`: 429, 5xx, timeouts and connection errors
are transient; an opted-out recipient (21610) raises `OptedOut`; other 4xx are permanent.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError, parse_retry_after

OPTED_OUT = 21610  # "Attempt to send to unsubscribed recipient": the number texted STOP

#: 4xx codes that clear by themselves: rate limits and a full per-sender queue.
TRANSIENT_CODES = frozenset({
    20429,  # Too Many Requests
    14107,  # message rate exceeded
    21611,  # this From number has too many queued messages
})

#: Common permanent codes, named in the error so the outbox record says why.
PERMANENT_CODES = {
    21211: "invalid To phone number",
    21408: "sending to this region is not enabled on the account",
    21602: "message body is required",
    21606: "the From number cannot send SMS",
    21612: "Twilio cannot route to this To number",
    21614: "To is not a mobile number",
    21617: "the body is too long (over 1600 characters)",
    21660: "the From number does not belong to the account",
}


class OptedOut(PermanentSendError):
    opted_out = True  # the notifier suppresses the address: every later send would fail too
    """The recipient opted out (texted STOP): mark the contact opted out, never retry."""

    code = OPTED_OUT

    def __init__(self, message: str, address: str | None = None):
        super().__init__(message)
        self.address = address


class _TimedHttpClient(TwilioHttpClient):
    """TwilioHttpClient with a timeout (its default is none at all) that remembers, per thread, the
    last response's headers: Twilio's exceptions drop them, and Retry-After lives there."""

    def __init__(self, timeout: float, pool_size: int):
        super().__init__(timeout=timeout)  # pool_connections: one requests.Session, kept alive
        self._local = threading.local()
        if self.session is not None:
            # As many kept connections as sends may be in flight at once (requests keeps 10).
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size)
            self.session.mount("https://", adapter)
            self.session.mount("http://", adapter)

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        self._local.headers = None
        response = super().request(method, url, *args, **kwargs)
        self._local.headers = response.headers
        return response

    def last_header(self, name: str) -> str | None:
        headers = getattr(self._local, "headers", None)
        return headers.get(name) if headers else None  # requests' headers are case-insensitive

    def close(self) -> None:
        if self.session is not None:
            self.session.close()


class TwilioSmsSender:
    channel = "sms"

    def __init__(self, account_sid: str, auth_token: str, from_number: str | None, *, api_base: str | None = None,
                 status_callback: str | None = None, timeout: float = 10.0, pool_size: int = 16):
        self.from_number = from_number
        self.status_callback = status_callback
        self._http = _TimedHttpClient(timeout, pool_size)
        self.client = Client(account_sid, auth_token, http_client=self._http)
        if api_base:
            # Client has no base_url argument: "https://api.twilio.com" is hard-coded in the Api domain.
            self.client.api.base_url = api_base.rstrip("/")
            # TWILIO_EDGE/TWILIO_REGION in the environment would rewrite the host into *.edge.region.twilio.com.
            self.client.edge = None
            self.client.region = None

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        """options: "from" (the business number the customer wrote to, else the default),
        "messaging_service_sid", "status_callback"."""
        options = options or {}
        kwargs: dict[str, Any] = {"to": address, "body": text}
        sender = options.get("from") or self.from_number
        if sender:
            kwargs["from_"] = sender
        if options.get("messaging_service_sid"):
            kwargs["messaging_service_sid"] = options["messaging_service_sid"]
        if not sender and "messaging_service_sid" not in kwargs:
            raise PermanentSendError("no From number or Messaging Service is configured for SMS")
        callback = options.get("status_callback") or self.status_callback
        if callback:
            kwargs["status_callback"] = callback
        try:
            message = self.client.messages.create(**kwargs)
        except TwilioException as exc:
            # TwilioRestException for classic error bodies, TwilioServiceException for RFC 9457 problems.
            status = getattr(exc, "status", None)
            code = getattr(exc, "code", None)
            detail = getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", None)
            raise classify_failure(status, code, str(detail or exc), address=address,
                                   retry_after=self._retry_after()) from exc
        except requests.Timeout as exc:
            # The request may have reached Twilio: a retry can send twice; the API has no idempotency key.
            raise TransientSendError(f"twilio timed out: {exc}") from exc
        except requests.RequestException as exc:
            raise TransientSendError(f"twilio unreachable: {exc}") from exc
        except ValueError as exc:  # a 2xx whose body is not JSON: a proxy in the way, not Twilio
            raise TransientSendError(f"twilio answered something that is not a message: {exc}") from exc
        return SendResult(provider_message_id=message.sid)

    def _retry_after(self) -> float | None:
        return parse_retry_after(self._http.last_header("Retry-After"), now=datetime.now(UTC))

    def close(self) -> None:
        self._http.close()


def classify_failure(status: int | None, code: int | str | None, detail: str, *, address: str | None = None,
                     retry_after: float | None = None) -> TransientSendError | PermanentSendError:
    """An error answer from the Messages API → the exception the outbox acts on."""
    code_num = _int(code)
    where = f"twilio {status or '?'}" + (f" code {code_num}" if code_num else "")
    if code_num == OPTED_OUT:
        return OptedOut(f"{where}: the recipient opted out (STOP): {detail}", address=address)
    if status is None or status == 429 or status >= 500 or code_num in TRANSIENT_CODES:
        return TransientSendError(f"{where}: {detail}", retry_after=retry_after)
    if status == 401:
        # Wrong credentials are fixed by devops, not by the customer: retry, then dead-letter, replayable.
        return TransientSendError(f"{where}: Twilio rejected the credentials "
                                  f"(TWILIO_ACCOUNT_SID/TWILIO_AUTH_TOKEN): {detail}", retry_after=retry_after)
    reason = PERMANENT_CODES.get(code_num or 0)
    return PermanentSendError(f"{where}: {reason + ': ' if reason else ''}{detail}")


def _int(code: int | str | None) -> int | None:
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None

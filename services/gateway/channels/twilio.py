"""Twilio Messaging webhooks (SMS/MMS in, delivery status callbacks) → InboundMessage / DeliveryStatus.

Authenticity: X-Twilio-Signature, an HMAC-SHA1 of the public URL Twilio called plus every form
parameter, keyed with the account's auth token (`TwilioSignature`).
Dedupe key: MessageSid (SM… for SMS, MM… for MMS).
Identity: the sender's E.164 phone number; the business number the customer wrote to (`To`) is kept
in meta["to"] so the reply leaves from the same number.
Answer: always TwiML with Content-Type text/xml (`empty_twiml()`): Twilio sends a text/plain body
to the customer as an SMS.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from services.gateway.channels import (
    Malformed,
    RawRequest,
    Sample,
    SimulatedRequest,
    Simulation,
    Unauthenticated,
    Webhook,
)
from shared.contracts import Attachment, DeliveryStatus, Identity, InboundMessage
from shared.delivery import STATUS_RANK, status_moves_forward
from shared.phone import country_language, to_e164

log = logging.getLogger(__name__)

# Re-exported: the ordering lives in shared.delivery, the E.164 reading in shared.phone.
__all__ = ["STATUS_RANK", "status_moves_forward", "to_e164"]

SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_CONTENT_TYPE = "text/xml; charset=utf-8"

#: Twilio's standard keywords. Twilio itself blocks sends to a number that texted an opt-out one.
OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})

# Account-wide SIDs are two letters and 32 hex digits: SM…/MM… for messages.
_SID = re.compile(r"^[A-Z]{2}[0-9a-fA-F]{32}$")
_STATUS_WORD = re.compile(r"^[a-z_]{1,32}$")


def empty_twiml() -> str:
    """The answer to every messaging webhook: an empty <Response/>, served as text/xml."""
    return str(MessagingResponse())


# --- authenticity ------------------------------------------------------------------------------


class _MultiForm(dict):
    """{name: [values]} with the `getlist` RequestValidator looks for: a plain dict of lists breaks it
    (it would try to hash the list), and a dict of single values would drop repeated keys."""

    def getlist(self, name: str) -> list[str]:
        return self[name]


def form_params(request: RawRequest) -> _MultiForm:
    """Every form parameter the provider sent, repeated keys kept, none dropped or whitelisted."""
    form: Any = request.form
    if form:
        if hasattr(form, "getlist"):  # a werkzeug MultiDict iterates one value per key
            return _MultiForm({k: list(form.getlist(k)) for k in form})
        return _MultiForm({k: list(v) if isinstance(v, list | tuple) else [v] for k, v in form.items()})
    if request.body:
        # The web layer fills `form` only for a form content type; Twilio always sends one, but a
        # proxy may have mangled the header: the raw body is still what Twilio signed.
        text = request.body.decode("utf-8", errors="replace")
        return _MultiForm(parse_qs(text, keep_blank_values=True))
    return _MultiForm()


class TwilioSignature:
    """Checks X-Twilio-Signature with twilio's own RequestValidator, over all received parameters."""

    def __init__(self, auth_token: str | None):
        self.auth_token = auth_token

    def verify(self, request: RawRequest) -> None:
        # No configured token means nothing can be verified: refuse everything rather than trust.
        if not self.auth_token:
            raise Unauthenticated("no Twilio auth token is configured: every Twilio webhook is refused")
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            raise Unauthenticated(f"missing {SIGNATURE_HEADER}")
        # The URL must be the public one Twilio called, query string included; the validator tries it
        # with and without an explicit :443/:80 because Twilio signs either form. A request signed with
        # a SharedKey (X-Twilio-Webhooks-Signature-Settings) is not verifiable with the auth token and
        # is refused.
        try:
            valid = RequestValidator(self.auth_token).validate(request.url, form_params(request), signature)
        except ValueError as exc:
            # urlparse refuses some URLs (an unbalanced "[" reads as a broken IPv6 host): not signed by us.
            raise Unauthenticated(f"{SIGNATURE_HEADER} cannot be checked against this URL: {exc}") from exc
        if not valid:
            raise Unauthenticated(f"{SIGNATURE_HEADER} does not match this URL and these parameters")


# --- inbound SMS/MMS ---------------------------------------------------------------------------


class TwilioSmsAdapter:
    """`POST /webhooks/twilio/sms`: an inbound SMS or MMS becomes one InboundMessage."""

    channel_family = "sms"
    webhook = Webhook("/webhooks/twilio/sms", "sms")
    simulation = Simulation(("sms",), "TWILIO_AUTH_TOKEN", lambda channel, sample: simulated_sms(sample))

    def success_response(self) -> tuple[str, str]:
        return empty_twiml(), TWIML_CONTENT_TYPE

    def __init__(self, auth_token: str | None, default_region: str = "PL"):
        self.signature = TwilioSignature(auth_token)
        self.default_region = default_region

    def verify(self, request: RawRequest) -> None:
        self.signature.verify(request)

    def parse(self, request: RawRequest) -> list[InboundMessage]:
        return [parse_sms(form_params(request), received_at=request.received_at,
                          default_region=self.default_region)]


def parse_sms(form: Mapping[str, list[str]], *, received_at: datetime, default_region: str = "PL") -> InboundMessage:
    """A Twilio inbound-message form (name → values) → the normalised message."""
    # MessageSid is the current name; SmsMessageSid and SmsSid carry the same SID and are all an
    # older webhook (and some Twilio-compatible gateways) send.
    sid = _one(form, "MessageSid") or _one(form, "SmsMessageSid") or _one(form, "SmsSid")
    if not sid:
        raise Malformed("MessageSid is missing (nor SmsMessageSid nor SmsSid)")
    if not _SID.match(sid):
        raise Malformed("MessageSid is not a Twilio message SID")
    raw_from = _one(form, "From")
    if not raw_from:
        raise Malformed("From is missing")
    sender = to_e164(raw_from, default_region)
    if sender is None:
        raise Malformed("From is not a phone number")
    raw_to = (_one(form, "To") or "").strip()
    # Our own number; a short code is not E.164 but is still the right "from" for the reply.
    business = (to_e164(raw_to, default_region) or raw_to) if raw_to else None
    text = _one(form, "Body") or ""

    meta: dict[str, Any] = {}
    if business:
        meta["to"] = business
    for param, key in (("AccountSid", "account_sid"), ("MessagingServiceSid", "messaging_service_sid")):
        if value := _one(form, param):
            meta[key] = value
    segments = _one(form, "NumSegments")
    if segments and _is_number(segments):
        meta["num_segments"] = int(segments)
    opt = opt_keyword(text, _one(form, "OptOutType"))
    if opt:
        meta["opt"] = opt

    return InboundMessage(
        channel="sms",
        external_id=sid,
        sender=Identity("phone", sender),
        reply_to=sender,
        received_at=received_at,
        text=text,
        language_hint=country_language(sender),
        attachments=_media(form),
        meta=meta,
    )


def opt_keyword(body: str, opt_out_type: str | None = None) -> str | None:
    """"out" for an opt-out keyword, "in" for an opt-in one, else None.

    With Advanced Opt-Out, Twilio names the keyword class in OptOutType (STOP, START, HELP) and
    custom keywords count too; otherwise Twilio matches a body that is exactly one keyword,
    case-insensitively — "please stop calling me" opts nobody out, and neither do we.
    """
    kind = (opt_out_type or "").strip().upper()
    if kind == "STOP":
        return "out"
    if kind == "START":
        return "in"
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "out"
    if word in OPT_IN_KEYWORDS:
        return "in"
    return None


def _media(form: Mapping[str, list[str]]) -> tuple[Attachment, ...]:
    raw = (_one(form, "NumMedia") or "0").strip()
    if not _is_number(raw):
        raise Malformed("NumMedia is not a number")
    count = int(raw)
    attachments = []
    # Only N < NumMedia counts; MediaUrlN needs the account's Basic auth to fetch unless media
    # authentication is switched off, so it is kept as a reference, never fetched here.
    for n in range(count):
        url = _one(form, f"MediaUrl{n}")
        if not url:
            raise Malformed(f"MediaUrl{n} is missing although NumMedia is {count}")
        ctype = _one(form, f"MediaContentType{n}") or "application/octet-stream"
        attachments.append(Attachment(content_type=ctype, url=url))
    return tuple(attachments)


def _one(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    if not values:
        return None
    return values[0]


def _is_number(text: str) -> bool:
    # str.isdigit() alone is not enough: "²" and "٣" are digits to it, and int() refuses them.
    return text.isascii() and text.isdigit()


# --- delivery status callbacks -----------------------------------------------------------------


class TwilioStatusAdapter:
    """`POST /webhooks/twilio/status`: the StatusCallback of our outbound messages.

    `parse` returns [] (no customer message); `parse_status` gives the DeliveryStatus to record.
    """

    channel_family = "sms"
    webhook = Webhook("/webhooks/twilio/status", "sms")

    def __init__(self, auth_token: str | None):
        self.signature = TwilioSignature(auth_token)

    def verify(self, request: RawRequest) -> None:
        self.signature.verify(request)

    def success_response(self) -> tuple[str, str]:
        return empty_twiml(), TWIML_CONTENT_TYPE

    def parse(self, request: RawRequest) -> list[InboundMessage]:
        parse_status_form(form_params(request), received_at=request.received_at)  # still 400 if malformed
        return []

    def parse_status(self, request: RawRequest) -> DeliveryStatus:
        return parse_status_form(form_params(request), received_at=request.received_at)


def parse_status_form(form: Mapping[str, list[str]], *, received_at: datetime) -> DeliveryStatus:
    sid = _one(form, "MessageSid") or _one(form, "SmsSid")  # SmsSid: the legacy name of the same SID
    if not sid:
        raise Malformed("MessageSid is missing")
    if not _SID.match(sid):
        raise Malformed("MessageSid is not a Twilio message SID")
    # Callbacks carry both MessageStatus and the legacy SmsStatus; MessageStatus is the current name.
    status = (_one(form, "MessageStatus") or _one(form, "SmsStatus") or "").strip().lower()
    if not status:
        raise Malformed("MessageStatus is missing")
    if not _STATUS_WORD.match(status):
        raise Malformed("MessageStatus is not a status word")
    if status not in STATUS_RANK:
        log.warning("unknown Twilio message status %r kept as is", status, extra={"message_sid": sid})
    return DeliveryStatus(
        channel="sms",
        provider_message_id=sid,
        status=status,
        occurred_at=received_at,  # the callback carries no event time of its own
        error_code=_one(form, "ErrorCode") or None,
        error_message=_one(form, "ErrorMessage") or None,
    )


def simulated_sms(sample: Sample) -> SimulatedRequest:
    """An incoming SMS as Twilio posts it, signed over PUBLIC_BASE_URL + path like Twilio's."""
    sid = "SM" + uuid.uuid4().hex
    form = {"MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "AccountSid": "AC" + "0" * 32,
            "From": sample.sender or "+48601234567", "To": sample.business_number, "Body": sample.text,
            "NumMedia": "0", "NumSegments": "1", "SmsStatus": "received", "ApiVersion": "2010-04-01"}
    path = TwilioSmsAdapter.webhook.path
    signed = RequestValidator(sample.secret).compute_signature(sample.public_url.rstrip("/") + path, form)
    return SimulatedRequest(path, urlencode(form).encode(), {
        "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signed})

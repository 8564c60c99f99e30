"""Meta senders: Messenger and Instagram (Send API) and WhatsApp (Cloud API), over the Graph API.

`graph_base` is META_GRAPH_BASE and includes the API version ("https://graph.facebook.com/v21.0"),
so tests and a version upgrade change configuration, not code. Tokens travel in the Authorization
header, never in the query string, where HTTP client logs and proxies would record them.

Failures follow the sender interface: 429, 5xx, timeouts and connection errors — and the Graph
error codes Meta documents as temporary or rate limits — are `TransientSendError` (Retry-After
honoured); everything else Meta refuses is `PermanentSendError`. The Graph API has no idempotency
key: a read timeout after Meta took the request may end in a duplicate when the outbox retries.

WhatsApp allows free-form messages only within 24 hours of the customer's last message; outside
that window only an approved template may be sent (`within_customer_window`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError, parse_retry_after

log = logging.getLogger(__name__)

DEFAULT_GRAPH_BASE = "https://graph.facebook.com/v21.0"
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
CUSTOMER_WINDOW = timedelta(hours=24)
OUTSIDE_WINDOW = "outside the 24-hour window: a template is required"

MAX_QUICK_REPLIES = 13  # Messenger and Instagram
MAX_REPLY_BUTTONS = 3  # WhatsApp interactive "button"; more become a list message
MAX_LIST_ROWS = 10  # WhatsApp interactive "list", all sections together

#: Graph error codes that say "try again later", whatever the HTTP status they come with.
TRANSIENT_CODES = frozenset({
    1,  # unknown error: Meta's own advice is to retry
    2,  # temporary service issue
    4, 17, 32, 613, 80007,  # application, user, page and WhatsApp account rate limits
    1200,  # Messenger "temporary send message failure"
    130429,  # WhatsApp Cloud API throughput reached
    131000,  # WhatsApp "something went wrong"
    131016,  # WhatsApp service unavailable
    131048,  # WhatsApp spam rate limit
    131056,  # WhatsApp too many messages to one recipient (pair rate limit)
    133004,  # WhatsApp server temporarily unavailable
})
#: WhatsApp: the customer's window has closed (the free-form message needs a template).
REENGAGEMENT_CODE = 131047


# --- pure parts -----------------------------------------------------------------------------


def within_customer_window(last_customer_message_at: datetime | None, now: datetime) -> bool:
    """True while free-form messages are allowed: less than 24 hours since the customer last wrote.
    A customer who never wrote has no window."""
    if last_customer_message_at is None:
        return False
    if last_customer_message_at.tzinfo is None or now.tzinfo is None:
        raise ValueError("within_customer_window needs timezone-aware datetimes")
    return now - last_customer_message_at < CUSTOMER_WINDOW


def graph_error(status: int, body: Any, headers: Mapping[str, str], now: datetime
                ) -> TransientSendError | PermanentSendError:
    """The sender error for a non-2xx Graph API answer (the body decoded from JSON, or None)."""
    err: dict[str, Any] = body["error"] if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    code = err.get("code") if isinstance(err.get("code"), int) else None
    subcode = err.get("error_subcode") if isinstance(err.get("error_subcode"), int) else None
    data = err.get("error_data")
    details = data.get("details") if isinstance(data, dict) else None
    text = str(details or err.get("message") or f"HTTP {status}")[:300]
    label = f"graph API {status}" + (f" code {code}" if code is not None else "") \
        + (f"/{subcode}" if subcode is not None else "") + f": {text}"
    retry_after = parse_retry_after(headers.get("Retry-After"), now=now)
    if code == REENGAGEMENT_CODE:
        return PermanentSendError(f"{OUTSIDE_WINDOW} ({label})")
    if status == 429 or status >= 500 or code in TRANSIENT_CODES or err.get("is_transient") is True:
        return TransientSendError(label, retry_after=retry_after)
    # 400/401/403 with 100 (bad parameter, no such user), 190 (token), 200/10 (permission, window),
    # 551 (person unavailable), 131026 (undeliverable) and anything unknown: a retry cannot help.
    return PermanentSendError(label)


def messenger_payload(address: str, text: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The Send API body for Messenger and Instagram."""
    message: dict[str, Any] = {"text": text}
    quick = options.get("quick_replies")
    if quick:
        pairs = _pairs(quick, "quick_replies")
        if len(pairs) > MAX_QUICK_REPLIES:
            raise PermanentSendError(f"at most {MAX_QUICK_REPLIES} quick replies are allowed, got {len(pairs)}")
        message["quick_replies"] = [{"content_type": "text", "title": t, "payload": p} for t, p in pairs]
    body: dict[str, Any] = {"recipient": {"id": address}, "messaging_type": "RESPONSE", "message": message}
    tag = options.get("tag")
    if tag:
        # HUMAN_AGENT: an agent's answer up to 7 days after the customer's last message.
        body["messaging_type"] = "MESSAGE_TAG"
        body["tag"] = str(tag)
    return body


def whatsapp_payload(address: str, text: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The Cloud API body: a template, interactive buttons or a list, or plain text."""
    # A customer who hides their number behind a username is known only by their business-scoped
    # user id ("US.1349…"): Cloud API takes it as "recipient" where a phone number goes in "to".
    who = {"recipient": address} if "." in address else {"to": address}
    head: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", **who}
    template = options.get("template")
    if template:
        return {**head, "type": "template", "template": _template(template)}
    buttons = options.get("buttons")
    if buttons:
        pairs = _pairs(buttons, "buttons")
        if len(pairs) <= MAX_REPLY_BUTTONS:
            action: dict[str, Any] = {"buttons": [{"type": "reply", "reply": {"id": p, "title": t}} for t, p in pairs]}
            interactive = {"type": "button", "body": {"text": text}, "action": action}
        elif len(pairs) <= MAX_LIST_ROWS:
            # More than three choices (an NPS 0-10 scale has eleven) do not fit buttons: a list does.
            rows = [{"id": p, "title": t} for t, p in pairs]
            action = {"button": str(options.get("list_button") or "Choose"), "sections": [{"rows": rows}]}
            interactive = {"type": "list", "body": {"text": text}, "action": action}
        else:
            raise PermanentSendError(f"at most {MAX_LIST_ROWS} choices fit a WhatsApp list, got {len(pairs)}")
        return {**head, "type": "interactive", "interactive": interactive}
    return {**head, "type": "text", "text": {"body": text, "preview_url": False}}


def _template(template: Any) -> dict[str, Any]:
    if not isinstance(template, Mapping) or not isinstance(template.get("name"), str):
        raise PermanentSendError("options['template'] needs at least a name")
    language = template.get("language") or "en"
    # Callers may give "en_US" or the API's own {"code": "en_US"}.
    out: dict[str, Any] = {"name": template["name"],
                           "language": {"code": language} if isinstance(language, str) else dict(language)}
    if template.get("components"):
        out["components"] = list(template["components"])
    return out


def _pairs(items: Any, what: str) -> list[tuple[str, str]]:
    try:
        pairs = [(str(title), str(payload)) for title, payload in items]
    except (TypeError, ValueError) as exc:
        raise PermanentSendError(f"options[{what!r}] must be a list of (title, payload) pairs") from exc
    return pairs


def _as_datetime(value: Any, what: str) -> datetime | None:
    # Options may have gone through JSON (the outbox): accept ISO-8601 strings as well.
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            value = None
    if not isinstance(value, datetime) or value.tzinfo is None:
        # A retry cannot fix a caller's bad option: permanent, with the reason.
        raise PermanentSendError(f"options[{what!r}] must be a timezone-aware datetime or ISO-8601 string")
    return value


# --- the HTTP edge --------------------------------------------------------------------------


class _Graph:
    """One pooled httpx client per sender; maps every failure onto the sender errors."""

    def __init__(self, token: str, graph_base: str | None, timeout: httpx.Timeout | None,
                 clock: Callable[[], datetime]):
        if not token:
            raise ValueError("a Graph API token is required (unset credentials mean the sandbox sender)")
        self.base = (graph_base or DEFAULT_GRAPH_BASE).rstrip("/")
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.clock = clock
        self.client = httpx.Client(headers={"Authorization": f"Bearer {token}"},
                                   limits=httpx.Limits(max_connections=32, max_keepalive_connections=16))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        url = f"{self.base}/{path.lstrip('/')}"
        try:
            resp = self.client.post(url, json=body, timeout=self.timeout)
        except httpx.TimeoutException as exc:
            raise TransientSendError(f"graph API timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise TransientSendError(f"graph API unreachable: {type(exc).__name__}: {exc}") from exc
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.is_success:
            return data
        raise graph_error(resp.status_code, data, resp.headers, self.clock())

    def close(self) -> None:
        self.client.close()


class MessengerSender:
    """Messenger or Instagram through POST {graph}/me/messages with the page token."""

    def __init__(self, page_token: str, graph_base: str | None = None, channel: str = "messenger", *,
                 timeout: httpx.Timeout | None = None, clock: Callable[[], datetime] | None = None):
        if channel not in ("messenger", "instagram"):
            raise ValueError(f"MessengerSender serves messenger or instagram, not {channel!r}")
        self.channel = channel
        self._graph = _Graph(page_token, graph_base, timeout, clock or _utcnow)

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        if not address:
            raise PermanentSendError(f"no {self.channel} recipient id")
        data = self._graph.post("me/messages", messenger_payload(address, text, options or {}))
        mid = data.get("message_id") if isinstance(data, dict) else None
        if not isinstance(mid, str):
            # Meta took it (2xx): retrying would send it twice, so record it without an id.
            log.warning("graph API accepted a %s message without a message_id", self.channel)
            return SendResult(provider_message_id=None)
        return SendResult(provider_message_id=mid)

    def close(self) -> None:
        self._graph.close()


class WhatsAppSender:
    """WhatsApp through POST {graph}/{phone_number_id}/messages with the system-user token.

    options: "template" {name, language, components}; "buttons" [(title, id), ...]; the window
    check "last_customer_message_at" (None = never wrote) with "now", and "fallback_template"
    {name, language}: the approved template that carries the text once the window has closed
    (or {name, language, components}: one that carries its own parameters, a survey's buttons);
    "phone_number_id" to answer
    from another of the business's numbers (the inbound message's meta["phone_number_id"]).
    """

    channel = "whatsapp"

    def __init__(self, token: str, graph_base: str | None, phone_number_id: str, *,
                 timeout: httpx.Timeout | None = None, clock: Callable[[], datetime] | None = None):
        if not phone_number_id:
            raise ValueError("a WhatsApp phone_number_id is required")
        self.phone_number_id = phone_number_id
        self.clock = clock or _utcnow
        self._graph = _Graph(token, graph_base, timeout, self.clock)

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        options = options or {}
        if not address:
            raise PermanentSendError("no WhatsApp recipient (wa_id)")
        if not options.get("template") and "last_customer_message_at" in options:
            last = _as_datetime(options["last_customer_message_at"], "last_customer_message_at")
            now = _as_datetime(options.get("now"), "now") or self.clock()
            if not within_customer_window(last, now):
                fallback = options.get("fallback_template")
                if not isinstance(fallback, Mapping) or not fallback.get("name"):
                    raise PermanentSendError(OUTSIDE_WINDOW)
                # The window has closed: the approved template carries the text as its parameter
                # (Meta caps a body parameter at 1024 characters), unless it brings its own.
                components = fallback.get("components") or [
                    {"type": "body", "parameters": [{"type": "text", "text": text[:1024]}]}]
                options = {**options, "template": {
                    "name": fallback["name"], "language": fallback.get("language") or "en",
                    "components": components}}
        sender_number = str(options.get("phone_number_id") or self.phone_number_id)
        data = self._graph.post(f"{sender_number}/messages", whatsapp_payload(address, text, options))
        messages = data.get("messages") if isinstance(data, dict) else None
        wamid = messages[0].get("id") if isinstance(messages, list) and messages and isinstance(messages[0], dict) else None
        if not isinstance(wamid, str):
            log.warning("graph API accepted a whatsapp message without messages[0].id")
            return SendResult(provider_message_id=None)
        return SendResult(provider_message_id=wamid)

    def close(self) -> None:
        self._graph.close()


def _utcnow() -> datetime:
    return datetime.now(UTC)



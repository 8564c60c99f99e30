"""Meta webhooks (Messenger, Instagram, WhatsApp Cloud API) → InboundMessage and DeliveryStatus.

One endpoint, `GET|POST /webhooks/meta`, receives all three products; the top-level `object` says
which: "page" (Messenger, sender = PSID), "instagram" (sender = IGSID), "whatsapp_business_account"
(sender = wa_id, which is a phone number: the same customer as SMS and calls).

Authenticity: the GET handshake echoes hub.challenge when hub.verify_token matches; every POST
carries X-Hub-Signature-256 = "sha256=" + hex HMAC-SHA256(app secret, raw body), checked over the
raw bytes before anything is parsed. Dedupe key: the message id (Messenger/Instagram `mid`,
WhatsApp `wamid…`), globally unique; a postback without a mid gets one derived from its sender,
timestamp and payload, which a redelivery repeats.

A postback (Get Started, the persistent menu, a template's button) is a press, not typed text: one
of our survey's answers becomes a SurveyAnswer, like a quick reply; any other press becomes an
ordinary customer message whose text is the button's title, its payload kept in meta["postback"].

What is rejected and what is not (PROVIDERS.md "What to reject"): a bad signature → Unauthenticated
(403); a body that is not JSON → Malformed (400). A validly signed payload we do not expect (an
unknown object, an item missing its ids) is *not* an error: Meta would retry it for days and may
disable the subscription, so it is answered 200 and parked — logged as a warning with its shape
(keys and types, never values: they hold customers' data) — while the rest of the batch goes on.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard

from services.gateway.channels import (
    Inbound,
    Malformed,
    RawRequest,
    Sample,
    SimulatedRequest,
    Simulation,
    Unauthenticated,
    Webhook,
)
from shared.contracts import Attachment, DeliveryStatus, Identity, InboundMessage, SurveyAnswer
from shared.phone import to_e164
from shared.survey_links import parse_callback_data

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Hub-Signature-256"
_SIGNATURE_PREFIX = "sha256="

#: object → (channel, identity kind) for the two products that share the Messenger shape.
_MESSAGING_OBJECTS = {"page": ("messenger", "psid"), "instagram": ("instagram", "igsid")}
_WHATSAPP_OBJECT = "whatsapp_business_account"

#: Messenger/Instagram messaging items we understand but that carry no customer message to route.
_IRRELEVANT_MESSAGING = frozenset({
    "delivery", "read", "reaction", "referral", "optin", "account_linking",
    "pass_thread_control", "take_thread_control", "request_thread_control", "app_roles",
    "policy_enforcement", "game_play", "checkout_update", "payment",
    "messaging_feedback", "response_feedback",
})

#: WhatsApp message types that are not something the customer wrote to us.
_WHATSAPP_IGNORED_TYPES = frozenset({"reaction", "system", "request_welcome", "ephemeral"})
_WHATSAPP_MEDIA_TYPES = ("image", "document", "audio", "voice", "video", "sticker")

# Ids longer than the InboundMessage contract allows could never be published: park them instead.
_MAX_ID = 255
_MAX_SENDER_ID = 320
#: A wa_id: the phone number's digits (WhatsApp sends no "+"; tolerated). Linear: no nesting.
_WA_ID = re.compile(r"\+?[0-9]{6,15}")
#: A business-scoped user id: ISO country code, ".", optionally "ENT.", up to 128 alphanumerics.
_BSUID = re.compile(r"[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}")


# --- the adapter ------------------------------------------------------------------------------


class MetaAdapter:
    channel_family = "meta"
    # One endpoint for Messenger, Instagram and WhatsApp: the channel is in the payload.
    webhook = Webhook("/webhooks/meta", None)
    simulation = Simulation(("whatsapp", "messenger", "instagram"), "META_APP_SECRET", lambda channel, sample: simulated_event(channel, sample))

    def __init__(self, app_secret: str | None, verify_token: str | None):
        self.app_secret = app_secret
        self.verify_token = verify_token

    def verify_handshake(self, args: Mapping[str, str]) -> str:
        """GET /webhooks/meta: the challenge to echo (as text/plain) when the verify token matches."""
        mode = args.get("hub.mode") or ""
        token = args.get("hub.verify_token") or ""
        # No configured token means nothing can be verified: refuse rather than subscribe anyone.
        if not self.verify_token:
            raise Unauthenticated("no Meta verify token is configured")
        if mode != "subscribe" or not hmac.compare_digest(token.encode(), self.verify_token.encode()):
            raise Unauthenticated("wrong hub.mode or hub.verify_token")
        challenge = args.get("hub.challenge")
        if not challenge:
            raise Malformed("hub.challenge is missing")
        return challenge

    def verify(self, request: RawRequest) -> None:
        if not self.app_secret:
            raise Unauthenticated("no Meta app secret is configured")
        got = request.header(SIGNATURE_HEADER)
        if not got:
            raise Unauthenticated(f"missing {SIGNATURE_HEADER}")
        expected = _SIGNATURE_PREFIX + signature(self.app_secret, request.body)
        # Bytes, not str: compare_digest refuses non-ASCII str, and a header is attacker-controlled.
        if not hmac.compare_digest(expected.encode(), got.strip().lower().encode("utf-8", "replace")):
            raise Unauthenticated(f"wrong {SIGNATURE_HEADER}")

    def parse(self, request: RawRequest) -> list[Inbound]:
        events = parse_payload(_load(request.body), received_at=request.received_at)
        events.log_problems()
        return [survey_answer(msg) or msg for msg in events.messages]

    def parse_statuses(self, request: RawRequest) -> list[DeliveryStatus]:
        return parse_statuses(request)


def survey_answer(msg: InboundMessage) -> SurveyAnswer | None:
    """A quick reply or a postback button (Messenger, Instagram) or a reply button / list row /
    template button (WhatsApp) of one of our surveys carries "sv:<token>:<score>" as its payload:
    an answer, not a message to route."""
    parsed = parse_callback_data(msg.meta.get("quick_reply")) or parse_callback_data(msg.meta.get("postback"))
    if parsed is None:
        return None
    token, score = parsed
    return SurveyAnswer(channel=msg.channel, external_id=msg.external_id, token=token, score=score,
                        received_at=msg.received_at)


def signature(app_secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of the raw body, as Meta computes it for X-Hub-Signature-256."""
    return hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def parse_statuses(request: RawRequest) -> list[DeliveryStatus]:
    """Delivery reports in a (verified) request. Problems are logged by `MetaAdapter.parse`, which
    the gateway calls on the same request, so they are not logged twice here."""
    return parse_payload(_load(request.body), received_at=request.received_at).statuses


# --- the pure part: a decoded payload in, messages and statuses out -----------------------------


@dataclass
class MetaEvents:
    messages: list[InboundMessage] = field(default_factory=list)
    statuses: list[DeliveryStatus] = field(default_factory=list)
    #: (what was unexpected, the shape of the part it was found in) — parked, not raised.
    problems: list[tuple[str, Any]] = field(default_factory=list)

    def park(self, problem: str, part: Any) -> None:
        self.problems.append((problem, shape(part)))

    def log_problems(self) -> None:
        for problem, part_shape in self.problems:
            log.warning("meta webhook parked: %s", problem,
                        extra={"problem": problem, "shape": json.dumps(part_shape)[:2000]})


def parse_payload(payload: Any, *, received_at: datetime) -> MetaEvents:
    """A decoded webhook body → every message and status in it, in order. Never raises: what does
    not fit is recorded in `problems` (the caller answers 200 and logs them)."""
    events = MetaEvents()
    if not isinstance(payload, dict):
        events.park("the body is not a JSON object", payload)
        return events
    obj = payload.get("object")
    entries = payload.get("entry")
    if not isinstance(obj, str) or (obj not in _MESSAGING_OBJECTS and obj != _WHATSAPP_OBJECT):
        label = obj if isinstance(obj, str) else type(obj).__name__
        events.park(f"unknown object {label[:64]!r}", payload)
        return events
    if not isinstance(entries, list):
        events.park("entry is missing or not a list", payload)
        return events
    for entry in entries:
        if not isinstance(entry, dict):
            events.park("an entry is not an object", entry)
        elif obj == _WHATSAPP_OBJECT:
            _whatsapp_entry(entry, received_at, events)
        else:
            channel, kind = _MESSAGING_OBJECTS[obj]
            _messaging_entry(entry, channel, kind, received_at, events)
    return events


# --- Messenger and Instagram ------------------------------------------------------------------


def _messaging_entry(entry: dict, channel: str, kind: str, received_at: datetime, events: MetaEvents) -> None:
    # Handover protocol: while another app (a bot, a CRM) holds thread control its messages arrive
    # under "standby"; that app is answering, so a second answer from us would be a double reply.
    standby = entry.get("standby")
    if standby is not None:
        log.info("meta %s standby items ignored (another app has thread control)", channel,
                 extra={"items": len(standby) if isinstance(standby, list) else None})
    items = entry.get("messaging")
    if items is None:
        if standby is None and entry.get("changes") is None:
            events.park(f"{channel} entry without messaging items", entry)
        # "changes" are feed/comment fields of page subscriptions: not messages.
        return
    if not isinstance(items, list):
        events.park(f"{channel} entry.messaging is not a list", entry)
        return
    for item in items:
        if not isinstance(item, dict):
            events.park(f"a {channel} messaging item is not an object", item)
            continue
        if "message" in item:
            msg = _messaging_message(item, channel, kind, received_at, events)
            if msg is not None:
                events.messages.append(msg)
        elif "postback" in item:
            msg = _messaging_postback(item, channel, kind, received_at, events)
            if msg is not None:
                events.messages.append(msg)
        elif "message_edit" in item:
            msg = _messaging_edit(item, channel, kind, received_at, events)
            if msg is not None:
                events.messages.append(msg)
        elif "delivery" in item or "read" in item:
            events.statuses.extend(_messaging_statuses(item, channel))
        elif not any(key in _IRRELEVANT_MESSAGING for key in item):
            events.park(f"{channel} messaging item of unknown kind", item)


def _messaging_message(item: dict, channel: str, kind: str, received_at: datetime,
                       events: MetaEvents) -> InboundMessage | None:
    message = item["message"]
    if not isinstance(message, dict):
        events.park(f"{channel} message is not an object", item)
        return None
    # Echoes are our own outbound messages reflected back: never a customer message.
    if message.get("is_echo") is True:
        return None
    # Instagram: the customer unsent a message; there is nothing left to answer.
    if message.get("is_deleted") is True:
        return None
    mid = message.get("mid")
    sender_id = _id(_get(item, "sender", "id"))
    if not _str_id(mid, _MAX_ID) or sender_id is None or len(sender_id) > _MAX_SENDER_ID:
        events.park(f"{channel} message without mid or sender.id", item)
        return None
    text = message.get("text")
    text = text if isinstance(text, str) else ""
    meta: dict[str, Any] = {}
    payload = _get(message, "quick_reply", "payload")
    if isinstance(payload, str):
        meta["quick_reply"] = payload  # survey answers come back this way
    reply_mid = _get(message, "reply_to", "mid")
    if isinstance(reply_mid, str):
        meta["reply_to_mid"] = reply_mid
    story = _get(message, "reply_to", "story")
    if isinstance(story, dict):
        # Instagram story reply: the text answers one of our stories; keep which one.
        meta["story_reply"] = {k: story[k] for k in ("id", "url") if isinstance(story.get(k), str)}
    if message.get("is_unsupported") is True:
        meta["unsupported"] = True  # Instagram: the customer sent something the API cannot show
    return _from_customer(item, channel, kind, sender_id, mid, text, meta, received_at,
                          attachments=tuple(_messaging_attachments(message.get("attachments"))))


def _messaging_edit(item: dict, channel: str, kind: str, received_at: datetime,
                    events: MetaEvents) -> InboundMessage | None:
    """The customer edited a message they sent: a revision of the stored one (the router applies
    it; no new conversation, no acknowledgement). Each edit is its own event: mid + num_edit."""
    edit = item["message_edit"]
    sender_id = _id(_get(item, "sender", "id"))
    mid = _get(edit, "mid")
    number = _number(_get(edit, "num_edit"))
    if not _str_id(mid, _MAX_ID - 16) or sender_id is None or len(sender_id) > _MAX_SENDER_ID:
        events.park(f"{channel} message_edit without mid or sender.id", item)
        return None
    text = _get(edit, "text")
    return _from_customer(item, channel, kind, sender_id, f"{mid}:edit:{number if number is not None else 0}",
                          text if isinstance(text, str) else "", {"revision": {"kind": "edit", "of": mid}},
                          received_at)


def _from_customer(item: dict, channel: str, kind: str, sender_id: str, external_id: str, text: str,
                   meta: dict[str, Any], received_at: datetime, attachments: tuple = ()) -> InboundMessage:
    """A messaging item (a message, a postback) as the customer's InboundMessage, answered to them."""
    recipient = _id(_get(item, "recipient", "id"))
    if recipient:
        meta = {"recipient_id": recipient, **meta}  # the page / Instagram account the customer wrote to
    return InboundMessage(
        channel=channel,
        external_id=external_id,
        sender=Identity(kind, sender_id),
        reply_to=sender_id,
        received_at=received_at,  # arrival: when the gateway accepted it (promises start here)
        sent_at=_from_millis(item.get("timestamp")),  # Meta's time, for display and ordering
        text=text,
        attachments=attachments,
        meta=meta,
    )


def _messaging_postback(item: dict, channel: str, kind: str, received_at: datetime,
                        events: MetaEvents) -> InboundMessage | None:
    postback = item["postback"]
    sender_id = _id(_get(item, "sender", "id"))
    if not isinstance(postback, dict) or sender_id is None or len(sender_id) > _MAX_SENDER_ID:
        events.park(f"{channel} postback without sender.id", item)
        return None
    payload = postback.get("payload")
    payload = payload if isinstance(payload, str) else ""
    mid = postback.get("mid")
    if not _str_id(mid, _MAX_ID):
        # Older Messenger postbacks carry no mid. Meta redelivers the same item, so its sender,
        # timestamp and payload name the press; without a timestamp nothing stable is left.
        timestamp = _number(item.get("timestamp"))
        if timestamp is None:
            events.park(f"{channel} postback without mid or timestamp", item)
            return None
        digest = hashlib.sha256(json.dumps([sender_id, timestamp, payload]).encode()).hexdigest()
        mid = f"postback:{digest}"
    # The text is what the customer pressed, as they saw it.
    return _from_customer(item, channel, kind, sender_id, mid, _str(postback.get("title")), {"postback": payload},
                          received_at)


def _messaging_attachments(raw: Any) -> Iterator[Attachment]:
    if not isinstance(raw, list):
        return
    for att in raw:
        if not isinstance(att, dict) or not isinstance(att.get("type"), str):
            continue
        payload = _dict(att.get("payload"))
        url = payload.get("url")
        coords = payload.get("coordinates")
        if not isinstance(url, str) and isinstance(coords, dict):
            url = _geo(coords.get("lat"), coords.get("long"))
        title = payload.get("title") if isinstance(payload.get("title"), str) else att.get("title")
        # Meta gives a coarse type (image, video, audio, file, location, story_mention, …), no MIME type.
        yield Attachment(content_type=att["type"], url=url if isinstance(url, str) else None,
                         name=title if isinstance(title, str) else None)


def _messaging_statuses(item: dict, channel: str) -> Iterator[DeliveryStatus]:
    delivery = item.get("delivery")
    if isinstance(delivery, dict):
        at = _from_millis(delivery.get("watermark")) or _from_millis(item.get("timestamp"))
        mids = delivery.get("mids")
        # Without mids a delivery only says "everything before the watermark": no message to update.
        if at is not None and isinstance(mids, list):
            for mid in mids:
                if _str_id(mid, _MAX_ID):
                    yield DeliveryStatus(channel=channel, provider_message_id=mid, status="delivered", occurred_at=at)
    read = item.get("read")
    if isinstance(read, dict):
        # Instagram names the message read; Messenger only gives a watermark, which names none.
        mid = read.get("mid")
        at = _from_millis(item.get("timestamp")) or _from_millis(read.get("watermark"))
        if at is not None and _str_id(mid, _MAX_ID):
            yield DeliveryStatus(channel=channel, provider_message_id=mid, status="read", occurred_at=at)


# --- WhatsApp ---------------------------------------------------------------------------------


def _whatsapp_entry(entry: dict, received_at: datetime, events: MetaEvents) -> None:
    changes = entry.get("changes")
    if not isinstance(changes, list):
        events.park("whatsapp entry without changes", entry)
        return
    for change in changes:
        if not isinstance(change, dict) or not isinstance(change.get("value"), dict):
            events.park("a whatsapp change without a value object", change)
            continue
        if change.get("field") != "messages":
            # Template reviews, quality ratings, account updates: subscribed fields, not messages.
            log.info("meta whatsapp change ignored", extra={"field": str(change.get("field"))[:64]})
            continue
        value = change["value"]
        phone_number_id = _id(_get(value, "metadata", "phone_number_id"))
        display = _get(value, "metadata", "display_phone_number")
        names = _contact_names(value.get("contacts"))
        for key in ("messages", "statuses", "errors"):
            if key in value and not isinstance(value[key], list):
                events.park(f"whatsapp value.{key} is not a list", value)
        for message in _list(value.get("messages")):
            msg = _whatsapp_message(message, phone_number_id, display, names, received_at, events)
            if msg is not None:
                events.messages.append(msg)
        for status in _list(value.get("statuses")):
            st = _whatsapp_status(status, events)
            if st is not None:
                events.statuses.append(st)
        for error in _list(value.get("errors")):
            # Errors about the number or app itself, not tied to a message: operators must see them.
            log.warning("meta whatsapp error reported", extra={
                "code": _get(error, "code"), "title": str(_get(error, "title"))[:200]})


def _whatsapp_message(message: Any, phone_number_id: str | None, display: Any, names: dict[str, str],
                      received_at: datetime, events: MetaEvents) -> InboundMessage | None:
    if not isinstance(message, dict):
        events.park("a whatsapp message is not an object", message)
        return None
    wamid = message.get("id")
    wa_id = _id(message.get("from"))
    user_id = _id(message.get("from_user_id"))
    mtype = message.get("type")
    if not _str_id(wamid, _MAX_ID) or (wa_id is None and user_id is None) or not isinstance(mtype, str):
        events.park("whatsapp message without id, from or type", message)
        return None
    if mtype in _WHATSAPP_IGNORED_TYPES:
        return None
    # Who wrote: a wa_id (the phone number's digits) when WhatsApp shares it, else the
    # business-scoped user id (BSUID) of a customer who hides their number behind a username.
    # Anything else — a documentation placeholder ("<WHATSAPP_USER_PHONE_NUMBER>"), junk — is
    # refused: it would become a customer nobody can answer.
    wa_id = wa_id if wa_id is not None and _WA_ID.fullmatch(wa_id) else None
    user_id = user_id if user_id is not None and _BSUID.fullmatch(user_id) else None
    if wa_id is None and user_id is None:
        events.park("whatsapp message from a placeholder or invalid sender", message)
        return None
    if mtype in ("edit", "revoke"):
        # The customer changed or deleted a message they sent: a revision the router applies to
        # the stored message — not a new customer message, so it opens nothing and gets no reply.
        body = _dict(message.get(mtype))
        original = body.get("original_message_id")
        if not _str_id(original, _MAX_ID):
            events.park(f"whatsapp {mtype} without original_message_id", message)
            return None
        inner = _dict(body.get("message"))
        inner_type = inner.get("type")
        if mtype == "edit" and isinstance(inner_type, str):
            text, attachments, meta = _whatsapp_content(inner, inner_type)
        else:
            text, attachments, meta = "", [], {}
        meta["revision"] = {"kind": mtype, "of": original}
    else:
        text, attachments, meta = _whatsapp_content(message, mtype)
    if phone_number_id:
        meta["phone_number_id"] = phone_number_id  # the number the customer wrote to: answer from it
    if isinstance(display, str):
        meta["display_phone_number"] = display
    context_id = _get(message, "context", "id")
    if isinstance(context_id, str):
        meta["reply_to_mid"] = context_id  # the customer answered one of our messages (a survey)
    phone = whatsapp_phone(wa_id) if wa_id else None
    # A wa_id is the customer's phone number, verified by WhatsApp: the same person as SMS/calls;
    # a BSUID given with it is WhatsApp's own link between the two, so both name one customer.
    linked = [Identity("phone", phone)] if phone else []
    if wa_id and user_id:
        linked.append(Identity("wa_user", user_id))
    # One of the two is set (checked above): a wa_id wins.
    sender = Identity("wa_id", wa_id) if wa_id else Identity("wa_user", user_id or "")
    username = names.get(f"username:{user_id}") if user_id else None
    if username:
        meta["username"] = username  # shown to agents; not an identity: users change it
    return InboundMessage(
        channel="whatsapp",
        external_id=wamid,
        sender=sender,
        sender_name=names.get(sender.value) or username,
        reply_to=sender.value,
        received_at=received_at,  # arrival: when the gateway accepted it (promises start here)
        sent_at=_from_seconds(message.get("timestamp")),  # WhatsApp's time, for display and ordering
        text=text,
        attachments=tuple(attachments),
        linked_identities=tuple(linked),
        meta=meta,
    )


def _whatsapp_content(message: dict, mtype: str) -> tuple[str, list[Attachment], dict[str, Any]]:
    """A message's text as an agent reads it, its attachments and structured extras. What has no
    text of its own (a location, a contact card, an order, a flow's answers) reads as short text
    built from its own data and symbols, not words of one language (they would sway language
    detection), with the data in meta."""
    body = _dict(message.get(mtype))
    meta: dict[str, Any] = {}
    if mtype == "text":
        return _str(body.get("body")), [], meta
    if mtype in _WHATSAPP_MEDIA_TYPES:
        # Media come as an id to fetch from the Graph API with the token, never as a public URL.
        content_type = _str(body.get("mime_type")) or mtype
        name = body.get("filename") if isinstance(body.get("filename"), str) else _id(body.get("id"))
        if mtype == "audio" and body.get("voice") is True:
            meta["voice"] = True
        return _str(body.get("caption")), [Attachment(content_type=content_type, name=name)], meta
    if mtype == "location":
        place = _str(body.get("name")) or _str(body.get("address"))
        url = _geo(body.get("latitude"), body.get("longitude"))
        words = ", ".join(p for p in (_str(body.get("name")), _str(body.get("address"))) if p)
        text = f"📍 {words}" if words else (f"📍 {url.removeprefix('geo:').replace(',', ', ')}" if url else "📍")
        return text, [Attachment(content_type="location", url=url, name=place or None)], meta
    if mtype == "interactive":
        # Reply buttons and list rows we sent: the id is our payload, the title what the customer saw.
        for reply_kind in ("button_reply", "list_reply"):
            reply = body.get(reply_kind)
            if isinstance(reply, dict):
                if isinstance(reply.get("id"), str):
                    meta["quick_reply"] = reply["id"]
                return _str(reply.get("title")), [], meta
        flow = body.get("nfm_reply")
        if isinstance(flow, dict):
            return _flow_reply(flow, meta), [], meta
        meta["interactive"] = _str(body.get("type"))[:64] or None
        return "⚠️", [], meta  # an interactive reply of a kind this code does not know: a human looks
    if mtype == "button":
        # A quick-reply button of a template message.
        if isinstance(body.get("payload"), str):
            meta["quick_reply"] = body["payload"]
        return _str(body.get("text")), [], meta
    if mtype == "contacts":
        cards = [c for c in _list(message.get("contacts")) if isinstance(c, dict)]
        lines = []
        for card in cards:
            who = _str(_get(card, "name", "formatted_name"))
            phones = [_str(p.get("phone")) for p in _list(card.get("phones")) if isinstance(p, dict) and _str(p.get("phone"))]
            lines.append("👤 " + ", ".join(x for x in (who, *phones) if x))
        return "\n".join(lines), [Attachment(content_type="contacts", name=_str(_get(c, "name", "formatted_name")) or None)
                                  for c in cards], meta
    if mtype == "order":
        return _order(body, meta), [], meta
    # "unsupported"/"unknown" or a type newer than this code: the customer did write; let a human
    # see it, with WhatsApp's own explanation when it gives one.
    meta["unsupported"] = mtype[:64]
    errors = message.get("errors")
    first = _dict(errors[0]) if isinstance(errors, list) and errors else {}
    why = _str(_get(first, "error_data", "details")) or _str(first.get("title"))
    return f"⚠️ {why[:200]}" if why else "⚠️", [], meta


def _order(order: dict, meta: dict[str, Any]) -> str:
    """A catalogue order: one line per product (quantity × retailer id, price), then the note."""
    items = []
    for item in _list(order.get("product_items"))[:100]:
        if not isinstance(item, dict):
            continue
        sku = _str(item.get("product_retailer_id"))[:100]
        quantity = _number(item.get("quantity"))
        price = item.get("item_price")
        price = price if isinstance(price, int | float) and not isinstance(price, bool) else None
        currency = _str(item.get("currency"))[:8]
        items.append({"product_retailer_id": sku, "quantity": quantity, "item_price": price, "currency": currency})
    meta["order"] = {"catalog_id": _id(order.get("catalog_id")), "items": items}
    lines = []
    for i in items:
        count = i["quantity"] if i["quantity"] is not None else "?"
        price = " ".join(str(x) for x in (i["item_price"], i["currency"]) if x not in (None, ""))
        lines.append(f"🛒 {count} × {i['product_retailer_id']}" + (f" ({price})" if price else ""))
    note = _str(order.get("text")).strip()
    return "\n".join(lines + ([note] if note else []))


def _flow_reply(flow: dict, meta: dict[str, Any]) -> str:
    """A WhatsApp Flow's answers (nfm_reply): the form's fields as "name: value" lines. The flow
    token is ours (it says which flow was sent), not the customer's words: kept in meta only."""
    raw = flow.get("response_json")
    try:
        answers = json.loads(raw) if isinstance(raw, str) and len(raw) <= 100_000 else None
    except (json.JSONDecodeError, RecursionError):
        answers = None
    meta["flow"] = {"name": _str(flow.get("name"))[:64] or None}
    if not isinstance(answers, dict):
        return _str(flow.get("body"))
    token = answers.pop("flow_token", None)
    if isinstance(token, str):
        meta["flow"]["token"] = token[:200]
    meta["flow"]["response"] = answers
    lines = [f"{str(k)[:64]}: {v if isinstance(v, str | int | float) else json.dumps(v, ensure_ascii=False)[:200]}"
             for k, v in list(answers.items())[:50]]
    return "📝 " + "\n".join(lines) if lines else _str(flow.get("body"))


def _whatsapp_status(status: Any, events: MetaEvents) -> DeliveryStatus | None:
    if not isinstance(status, dict):
        events.park("a whatsapp status is not an object", status)
        return None
    wamid = status.get("id")
    word = status.get("status")
    at = _from_seconds(status.get("timestamp"))
    if not _str_id(wamid, _MAX_ID) or not isinstance(word, str) or not word or len(word) > 32 or at is None:
        events.park("whatsapp status without id, status or timestamp", status)
        return None
    errors = status.get("errors")
    first = _dict(errors[0]) if isinstance(errors, list) and errors else {}
    code = first.get("code")
    title = first.get("title") or first.get("message")
    return DeliveryStatus(
        channel="whatsapp", provider_message_id=wamid, status=word.lower(), occurred_at=at,
        error_code=str(code) if isinstance(code, int | str) and not isinstance(code, bool) else None,
        error_message=title if isinstance(title, str) else None,
    )


def _contact_names(contacts: Any) -> dict[str, str]:
    """Profile names by wa_id and by BSUID (user_id); usernames under "username:<BSUID>"."""
    names: dict[str, str] = {}
    for contact in _list(contacts):
        name = _get(contact, "profile", "name")
        username = _get(contact, "profile", "username")
        for key in (_id(_get(contact, "wa_id")), _id(_get(contact, "user_id"))):
            if key and isinstance(name, str) and name.strip():
                names[key] = name.strip()
        user_id = _id(_get(contact, "user_id"))
        if user_id and isinstance(username, str) and username.strip():
            names[f"username:{user_id}"] = username.strip()[:64]
    return names


def whatsapp_phone(wa_id: str) -> str | None:
    """The E.164 phone number a wa_id stands for, or None if it is not a valid number."""
    digits = wa_id.lstrip("+")
    if not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return to_e164(digits, linking=True)  # wa_ids are international numbers without the "+"


# --- small total helpers: a fuzzed payload must never raise anything but Malformed -------------


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Malformed(f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise Malformed("the body nests too deeply") from exc


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _str_id(value: Any, limit: int) -> TypeGuard[str]:
    return isinstance(value, str) and 0 < len(value) <= limit


def _id(value: Any) -> str | None:
    """Meta ids are strings of digits; accept a JSON number too (some older payloads)."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    return None


def _number(value: Any) -> int | None:
    # WhatsApp sends timestamps as strings of seconds, Messenger as integers of milliseconds.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 16:
        return int(value)
    return None


def _from_millis(value: Any) -> datetime | None:
    ms = _number(value)
    if ms is None:
        return None
    try:
        # Whole seconds plus a timedelta: exact, where ms / 1000 would drift by float rounding.
        return datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
    except (OverflowError, OSError, ValueError):
        return None


def _from_seconds(value: Any) -> datetime | None:
    s = _number(value)
    if s is None:
        return None
    try:
        return datetime.fromtimestamp(s, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _geo(lat: Any, lon: Any) -> str | None:
    """An RFC 5870 geo: URI, so a location fits the Attachment's url."""
    if isinstance(lat, int | float) and isinstance(lon, int | float) and not isinstance(lat, bool) \
            and not isinstance(lon, bool) and -90 <= lat <= 90 and -180 <= lon <= 180:
        return f"geo:{lat},{lon}"
    return None


def shape(obj: Any, depth: int = 4) -> Any:
    """Keys and value types of a payload, without the values: safe to log, enough to debug."""
    if isinstance(obj, dict):
        if depth <= 0:
            return "object"
        return {str(k)[:64]: shape(v, depth - 1) for k, v in list(obj.items())[:30]}
    if isinstance(obj, list):
        if depth <= 0 or not obj:
            return "list"
        return [shape(obj[0], depth - 1), f"×{len(obj)}"] if len(obj) > 1 else [shape(obj[0], depth - 1)]
    if obj is None:
        return "null"
    return type(obj).__name__


#: The WhatsApp Business number id `switchboard simulate` writes to.
SIMULATED_WHATSAPP_NUMBER_ID = "106540352242922"


def simulated_event(channel: str, sample: Sample) -> SimulatedRequest:
    """A customer's text as Meta posts it for WhatsApp, Messenger or Instagram, signed with the app secret."""
    now = int(time.time())
    payload: dict[str, Any]
    if channel == "whatsapp":
        wa_id = (sample.sender or "+37061234567").lstrip("+")
        payload = {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
            "field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": sample.business_number.lstrip("+"),
                             "phone_number_id": SIMULATED_WHATSAPP_NUMBER_ID},
                "contacts": [{"profile": {"name": sample.name}, "wa_id": wa_id}],
                "messages": [{"from": wa_id, "id": "wamid.SIM" + uuid.uuid4().hex, "timestamp": str(now),
                              "type": "text", "text": {"body": sample.text}}]}}]}]}
    else:
        ms = now * 1000
        payload = {"object": "page" if channel == "messenger" else "instagram", "entry": [{
            "id": "104512345678901", "time": ms, "messaging": [{
                "sender": {"id": sample.sender or "7712345678901234"}, "recipient": {"id": "104512345678901"},
                "timestamp": ms, "message": {"mid": "m_SIM" + uuid.uuid4().hex, "text": sample.text}}]}]}
    body = json.dumps(payload).encode()
    return SimulatedRequest(MetaAdapter.webhook.path, body, {"Content-Type": "application/json",
                                                             "X-Hub-Signature-256": "sha256=" + signature(sample.secret, body)})

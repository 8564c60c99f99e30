"""Telegram Bot API webhooks → InboundMessage.

Authenticity: Telegram sends the secret given to setWebhook in X-Telegram-Bot-Api-Secret-Token.
Dedupe key: (bot id, update_id) — update_id is only unique per bot and is not contiguous.

Time: a message's arrival (`received_at`, where promises start) is when the gateway accepted the
update; Telegram's `date` is kept as `sent_at`. An update redelivered after a webhook outage, or
fetched by getUpdates a day late, is dated when it was written, and a promise counted from that
date would be breached before the customer got its acknowledgement.

What a customer can send besides text (location, venue, contact, sticker, video note, poll, dice)
becomes a short readable text — built from the customer's own data and symbols, not words of one
language, so it does not sway language detection — plus the structured data in `meta`.

Telegram Business: a `business_message` is a customer writing to the business owner's account,
which this bot manages through a business connection. It is routed like any message and answered
through that connection (meta["to"] is the connection id, which the notifier passes to sendMessage
as business_connection_id). A business message the owner's side wrote (from ≠ chat: the owner
answering in their own app, or a bot acting for them) is not a customer's and is ignored, logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
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
from shared.contracts import Attachment, Identity, InboundMessage, SurveyAnswer
from shared.phone import to_e164
from shared.survey_links import parse_callback_data

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

#: Update kinds we understand but do not turn into customer messages.
IRRELEVANT = frozenset({
    "edited_message", "channel_post", "edited_channel_post", "inline_query", "chosen_inline_result",
    "shipping_query", "pre_checkout_query", "poll", "poll_answer", "my_chat_member", "chat_member",
    "chat_join_request", "message_reaction", "message_reaction_count", "chat_boost", "removed_chat_boost",
    "business_connection", "edited_business_message", "deleted_business_messages",
    "purchased_paid_media",
})


class TelegramAdapter:
    channel_family = "telegram"
    webhook = Webhook("/webhooks/telegram", "telegram")
    simulation = Simulation(("telegram",), "TELEGRAM_WEBHOOK_SECRET", lambda channel, sample: simulated_update(sample))

    def __init__(self, *, secret: str | None, bot_id: str):
        self.secret = secret
        self.bot_id = bot_id

    def verify(self, request: RawRequest) -> None:
        got = request.header(SECRET_HEADER)
        # No configured secret means nothing can be verified: refuse everything rather than trust.
        if not self.secret or not hmac.compare_digest(got.encode(), self.secret.encode()):
            raise Unauthenticated(f"missing or wrong {SECRET_HEADER}")

    def parse(self, request: RawRequest) -> Sequence[Inbound]:
        try:
            update = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Malformed(f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise Malformed("the body nests too deeply") from exc
        return parse_update(update, bot_id=self.bot_id, received_at=request.received_at)

    def webhook_answer(self, request: RawRequest) -> dict[str, Any] | None:
        """A webhook's response may carry one Bot API call: a pressed button is acknowledged with
        answerCallbackQuery there (else the customer's client keeps spinning), with no extra request."""
        body = request.body
        if b"callback_query" not in body and b"\\u" not in body and b"\x00" not in body:
            # No callback_query key can be in this update (a key is spelt out, or escaped as \u…, or
            # the body is UTF-16/32, which json.loads reads too): a customer's message is not parsed
            # a second time.
            return None
        try:
            query_id = callback_query_id(json.loads(body))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None
        if query_id is not None:
            return {"method": "answerCallbackQuery", "callback_query_id": query_id}
        return None


def callback_query_id(update: Any) -> str | None:
    """The id of the pressed button's callback query in an update, or None. Every press is answered
    (answerCallbackQuery), ours or not: until then the customer's client shows a spinner."""
    query = update.get("callback_query") if isinstance(update, dict) else None
    if isinstance(query, dict) and isinstance(query.get("id"), str) and query["id"]:
        return query["id"]
    return None


def parse_update(update: Any, *, bot_id: str, received_at: datetime) -> Sequence[Inbound]:
    """`received_at`: when the gateway accepted the update (the webhook's request, the poll)."""
    if not isinstance(update, dict):
        raise Malformed("an update must be a JSON object")
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise Malformed("update_id is missing or not an integer")
    if "message" in update:
        return _message(update["message"], bot_id, update_id, received_at)
    if "business_message" in update:
        return _message(update["business_message"], bot_id, update_id, received_at, business=True)
    kinds = [k for k in update if k != "update_id"]
    if "callback_query" in update:
        return _callback_query(update["callback_query"], bot_id, update_id, received_at)
    if kinds and all(k in IRRELEVANT for k in kinds):
        return []
    # Authenticated but unknown: say so loudly in the log; answer 200 so Telegram does not retry it.
    log.warning("telegram update of unknown kind ignored", extra={"kinds": kinds, "update_id": update_id})
    return []


def _callback_query(query: Any, bot_id: str, update_id: int, received_at: datetime) -> list[SurveyAnswer]:
    """A pressed inline button. Survey buttons ("sv:<token>:<score>") become an answer; any other
    button is not ours to route (it is still acknowledged, see TelegramAdapter.webhook_answer)."""
    if not isinstance(query, dict) or not isinstance(query.get("id"), str):
        raise Malformed("callback_query.id is missing")
    parsed = parse_callback_data(query.get("data"))
    if parsed is None:
        log.info("telegram callback_query that is not a survey answer ignored", extra={"update_id": update_id})
        return []
    token, score = parsed
    return [SurveyAnswer(channel="telegram", external_id=f"{bot_id}:{update_id}", token=token, score=score,
                         received_at=received_at)]


def _message(message: Any, bot_id: str, update_id: int, received_at: datetime, *, business: bool = False
             ) -> list[InboundMessage]:
    if not isinstance(message, dict):
        raise Malformed("message must be an object")
    sender = message.get("from")
    chat = message.get("chat")
    if not isinstance(sender, dict) or not _is_int(sender.get("id")):
        raise Malformed("message.from.id is missing")
    if not isinstance(chat, dict) or not _is_int(chat.get("id")):
        raise Malformed("message.chat.id is missing")
    date = message.get("date")
    if not _is_int(date):
        raise Malformed("message.date is missing or not a unix time")
    try:
        sent_at = datetime.fromtimestamp(date, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed("message.date is not a unix time") from exc
    if sender.get("is_bot") is True:
        # Another bot in a group, or a bot acting for a business: authentic, but no customer wrote
        # it. Answered 200 so Telegram does not redeliver it; nothing is published.
        log.info("telegram message from a bot ignored", extra={"update_id": update_id})
        return []
    connection = None
    if business:
        connection = _str(message.get("business_connection_id"))
        if connection is None:
            raise Malformed("business_message.business_connection_id is missing")
        if sender["id"] != chat["id"] or message.get("sender_business_bot") is not None:
            # In a business chat the chat is the customer's; anyone else writing in it is the
            # business's side (the owner in their app, a bot for them): not a customer message.
            log.info("telegram business message written by the business's side ignored",
                     extra={"update_id": update_id})
            return []
    name = " ".join(p for p in (sender.get("first_name"), sender.get("last_name")) if isinstance(p, str) and p)
    text = message.get("text") or message.get("caption") or ""
    if not isinstance(text, str):
        raise Malformed("message.text must be a string")
    linked: list[Identity] = []
    attachments: list[Attachment] = []
    meta: dict[str, Any] = {"message_id": _int(message.get("message_id")), "chat_type": _str(chat.get("type"))}
    if connection is not None:
        # The notifier answers from meta["to"]: for a business chat, through its connection.
        meta.update(business_connection_id=connection, to=connection)
    contact = message.get("contact")
    if isinstance(contact, dict):
        # Only the sender's own contact is a verified link between this Telegram user and a phone.
        phone = to_e164(contact.get("phone_number"), linking=True)
        if phone and contact.get("user_id") == sender["id"]:
            linked.append(Identity("phone", phone))
    photos = message.get("photo")
    if isinstance(photos, list) and photos:
        # Field types are checked, not trusted: a wrong one must be a 400 or ignored, never a 500.
        best = max((p for p in photos if isinstance(p, dict)), key=lambda p: _int(p.get("file_size")) or 0,
                   default=None)
        if best:
            attachments.append(Attachment(content_type="image/jpeg", name=_str(best.get("file_id")),
                                          size=_int(best.get("file_size"))))
    for key in ("document", "voice", "audio", "video"):
        item = message.get(key)
        if isinstance(item, dict):
            attachments.append(Attachment(content_type=_str(item.get("mime_type")) or "application/octet-stream",
                                          name=_str(item.get("file_name")) or _str(item.get("file_id")),
                                          size=_int(item.get("file_size"))))
    if not text:
        text = _readable(message, meta, attachments)
    lang = sender.get("language_code")
    return [InboundMessage(
        channel="telegram",
        external_id=f"{bot_id}:{update_id}",
        sender=Identity("telegram", str(sender["id"])),
        sender_name=name or _str(sender.get("username")),
        reply_to=str(chat["id"]),
        received_at=received_at,
        sent_at=sent_at,
        text=text,
        language_hint=lang if isinstance(lang, str) else None,
        attachments=tuple(attachments),
        linked_identities=tuple(linked),
        meta=meta,
    )]


def _readable(message: dict, meta: dict[str, Any], attachments: list[Attachment]) -> str:
    """The text an agent reads for a message without text: what it is, from its own data. Adds
    the structured part to `meta` (and a location to `attachments`). "" when there is nothing."""
    venue = _dict(message.get("venue"))
    location = _dict(venue.get("location")) or _dict(message.get("location"))
    geo = _geo(location.get("latitude"), location.get("longitude"))
    if venue:
        title, address = _str(venue.get("title")), _str(venue.get("address"))
        meta["venue"] = {"title": title, "address": address, "geo": geo}
        attachments.append(Attachment(content_type="location", url=geo, name=title))
        return "📍 " + ", ".join(p for p in (title, address) if p) if title or address else f"📍 {_coords(geo)}"
    if geo is not None:
        meta["location"] = {"geo": geo, **({"live_period": _int(location.get("live_period"))}
                                           if _int(location.get("live_period")) else {})}
        attachments.append(Attachment(content_type="location", url=geo))
        return f"📍 {_coords(geo)}"
    contact = _dict(message.get("contact"))
    if contact:
        who = " ".join(p for p in (_str(contact.get("first_name")), _str(contact.get("last_name"))) if p)
        phone = _str(contact.get("phone_number"))
        meta["contact"] = {"name": who or None, "phone_number": phone, "user_id": _int(contact.get("user_id"))}
        return "👤 " + ", ".join(p for p in (who, phone) if p) if who or phone else "👤"
    sticker = _dict(message.get("sticker"))
    if sticker:
        emoji = _str(sticker.get("emoji"))
        meta["sticker"] = {"emoji": emoji, "set_name": _str(sticker.get("set_name")),
                           "file_id": _str(sticker.get("file_id"))}
        return emoji or "🖼"  # a sticker stands for its emoji: that is what the customer meant
    note = _dict(message.get("video_note"))
    if note:
        seconds = _int(note.get("duration"))
        meta["video_note"] = {"duration": seconds, "file_id": _str(note.get("file_id"))}
        attachments.append(Attachment(content_type="video/mp4", name=_str(note.get("file_id")),
                                      size=_int(note.get("file_size"))))
        return f"🎥 {seconds // 60}:{seconds % 60:02d}" if seconds is not None else "🎥"
    poll = _dict(message.get("poll"))
    if poll:
        question = _str(poll.get("question"))
        options = [_str(o.get("text")) for o in poll.get("options") or () if isinstance(o, dict) and _str(o.get("text"))]
        meta["poll"] = {"question": question, "options": options}
        return "📊 " + (question or "") + ("".join(f"\n- {o}" for o in options))
    dice = _dict(message.get("dice"))
    if dice:
        emoji, value = _str(dice.get("emoji")) or "🎲", _int(dice.get("value"))
        meta["dice"] = {"emoji": emoji, "value": value}
        return f"{emoji} {value}" if value is not None else emoji
    return ""


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _geo(lat: Any, lon: Any) -> str | None:
    """An RFC 5870 geo: URI, so a location fits the Attachment's url."""
    if isinstance(lat, int | float) and isinstance(lon, int | float) and not isinstance(lat, bool) \
            and not isinstance(lon, bool) and -90 <= lat <= 90 and -180 <= lon <= 180:
        return f"geo:{lat},{lon}"
    return None


def _coords(geo: str | None) -> str:
    return geo.removeprefix("geo:").replace(",", ", ") if geo else "?"


def _is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any) -> int | None:
    return v if _is_int(v) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def simulated_update(sample: Sample) -> SimulatedRequest:
    """A private-chat text message as Telegram sends it, with the webhook's secret header."""
    now = int(time.time())
    uid = sample.update_id if sample.update_id is not None else int(time.time() * 1000) % 2_000_000_000
    first, _, last = sample.name.partition(" ")
    person = {"id": sample.user_id, "is_bot": False, "first_name": first, "language_code": sample.lang,
              **({"last_name": last} if last else {})}
    update = {"update_id": uid, "message": {"message_id": uid % 100000, "date": now, "text": sample.text, "from": person,
                                           "chat": {"id": sample.user_id, "type": "private", "first_name": first}}}
    return SimulatedRequest(TelegramAdapter.webhook.path, json.dumps(update).encode(),
                            {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": sample.secret})

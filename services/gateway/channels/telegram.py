"""Telegram Bot API webhooks → InboundMessage.

Authenticity: Telegram sends the secret given to setWebhook in X-Telegram-Bot-Api-Secret-Token.
Dedupe key: (bot id, update_id) — update_id is only unique per bot and is not contiguous.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any

import phonenumbers

from services.gateway.channels import Malformed, RawRequest, Unauthenticated
from shared.contracts import Attachment, Identity, InboundMessage, SurveyAnswer
from shared.survey_links import parse_callback_data

log = logging.getLogger(__name__)

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

#: Update kinds we understand but do not turn into customer messages.
IRRELEVANT = frozenset({
    "edited_message", "channel_post", "edited_channel_post", "inline_query", "chosen_inline_result",
    "shipping_query", "pre_checkout_query", "poll", "poll_answer", "my_chat_member", "chat_member",
    "chat_join_request", "message_reaction", "message_reaction_count", "chat_boost", "removed_chat_boost",
    "business_connection", "business_message", "edited_business_message", "deleted_business_messages",
    "purchased_paid_media",
})


class TelegramAdapter:
    channel_family = "telegram"

    def __init__(self, *, secret: str | None, bot_id: str):
        self.secret = secret
        self.bot_id = bot_id

    def verify(self, request: RawRequest) -> None:
        got = request.headers.get(SECRET_HEADER, "")
        # No configured secret means nothing can be verified: refuse everything rather than trust.
        if not self.secret or not hmac.compare_digest(got.encode(), self.secret.encode()):
            raise Unauthenticated(f"missing or wrong {SECRET_HEADER}")

    def parse(self, request: RawRequest) -> list[InboundMessage]:
        try:
            update = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Malformed(f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise Malformed("the body nests too deeply") from exc
        return parse_update(update, bot_id=self.bot_id, received_at=request.received_at)

    def webhook_answer(self, request: RawRequest) -> dict | None:
        """A webhook's response may carry one Bot API call: a pressed button is acknowledged with
        answerCallbackQuery there (else the customer's client keeps spinning), with no extra request."""
        try:
            query_id = callback_query_id(json.loads(request.body))
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


def parse_update(update: Any, *, bot_id: str, received_at: datetime | None = None
                 ) -> list[InboundMessage | SurveyAnswer]:
    if not isinstance(update, dict):
        raise Malformed("an update must be a JSON object")
    update_id = update.get("update_id")
    if not isinstance(update_id, int) or isinstance(update_id, bool):
        raise Malformed("update_id is missing or not an integer")
    if "message" in update:
        return [_message(update["message"], bot_id, update_id)]
    kinds = [k for k in update if k != "update_id"]
    if "callback_query" in update:
        return _callback_query(update["callback_query"], bot_id, update_id, received_at or datetime.now(UTC))
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


def _message(message: Any, bot_id: str, update_id: int) -> InboundMessage:
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
    if sender.get("is_bot") is True:
        raise Malformed("messages from bots are not customer messages")
    try:
        received_at = datetime.fromtimestamp(date, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise Malformed("message.date is not a unix time") from exc
    name = " ".join(p for p in (sender.get("first_name"), sender.get("last_name")) if isinstance(p, str) and p)
    text = message.get("text") or message.get("caption") or ""
    if not isinstance(text, str):
        raise Malformed("message.text must be a string")
    linked: list[Identity] = []
    attachments: list[Attachment] = []
    contact = message.get("contact")
    if isinstance(contact, dict):
        # Only the sender's own contact is a verified link between this Telegram user and a phone.
        phone = _e164(contact.get("phone_number"))
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
    lang = sender.get("language_code")
    return InboundMessage(
        channel="telegram",
        external_id=f"{bot_id}:{update_id}",
        sender=Identity("telegram", str(sender["id"])),
        sender_name=name or _str(sender.get("username")),
        reply_to=str(chat["id"]),
        received_at=received_at,
        text=text,
        language_hint=lang if isinstance(lang, str) else None,
        attachments=tuple(attachments),
        linked_identities=tuple(linked),
        meta={"message_id": _int(message.get("message_id")), "chat_type": _str(chat.get("type"))},
    )


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any) -> int | None:
    return v if _is_int(v) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _e164(raw: Any) -> str | None:
    if not isinstance(raw, str) or not raw.strip():
        return None
    text = raw.strip()
    # Telegram sends contacts' numbers without the "+"; they are international numbers.
    if not text.startswith("+"):
        text = "+" + text
    try:
        num = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)

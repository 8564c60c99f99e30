"""Telegram: one test per fixture — the real-shaped update in, the exact InboundMessage out."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.channels import Malformed
from services.gateway.channels.telegram import parse_update
from shared.contracts import Attachment, Identity, InboundMessage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"
BOT = "123456"
#: When the gateway accepted the update: the message's arrival, whatever its own date says.
NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def _aiogram(update_id: int, message_id: int, date: int, text: str, *, meta: dict,
             attachments: tuple[Attachment, ...] = ()) -> InboundMessage:
    """A message of aiogram's test dataset: its USER writing in its private CHAT."""
    return InboundMessage(
        channel="telegram", external_id=f"{BOT}:{update_id}", sender=Identity("telegram", "12345678"),
        sender_name="FirstName LastName", reply_to="12345678", received_at=NOW,
        sent_at=datetime.fromtimestamp(date, UTC), text=text, language_hint="ru", attachments=attachments,
        meta={"message_id": message_id, "chat_type": "private", **meta})


EXPECTED: dict[str, list[InboundMessage]] = {
    "message_text": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804211001", sender=Identity("telegram", "5012345678"),
        sender_name="Olena Kovalenko", reply_to="5012345678", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538100, UTC),
        text="Добрий день! Де моя посилка? Замовлення 48213, чекаю вже тиждень.", language_hint="uk",
        meta={"message_id": 311, "chat_type": "private"},
    )],
    "message_photo_caption": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804211002", sender=Identity("telegram", "6023456789"),
        sender_name="Mark", reply_to="6023456789", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538160, UTC),
        text="The zip broke on the second day, see photo", language_hint="en",
        attachments=(Attachment(content_type="image/jpeg", name="AgACAgIAAxkBAAIBQ2large", size=80412),),
        meta={"message_id": 312, "chat_type": "private"},
    )],
    # The sender shares their own contact: a verified link between this Telegram user and a phone.
    "message_contact_shared": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804211003", sender=Identity("telegram", "7034567890"),
        sender_name="Piotr Nowak", reply_to="7034567890", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538220, UTC),
        text="👤 Piotr Nowak, 48601234567", language_hint="pl", linked_identities=(Identity("phone", "+48601234567"),),
        meta={"message_id": 313, "chat_type": "private",
              "contact": {"name": "Piotr Nowak", "phone_number": "48601234567", "user_id": 7034567890}},
    )],
    # Someone else's contact proves nothing about the sender: no link.
    "message_contact_of_someone_else": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804211004", sender=Identity("telegram", "7034567890"),
        sender_name="Piotr", reply_to="7034567890", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538280, UTC),
        text="👤 Ewa, +48 602 765 432", language_hint="pl",
        meta={"message_id": 314, "chat_type": "private",
              "contact": {"name": "Ewa", "phone_number": "+48 602 765 432", "user_id": 7999999999}},
    )],
    "message_document": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804211005", sender=Identity("telegram", "8045678901"),
        sender_name="Jonas", reply_to="8045678901", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538340, UTC),
        text="Sąskaitoje klaida, prašau pataisyti", language_hint="lt",
        attachments=(Attachment(content_type="application/pdf", name="saskaita-48213.pdf", size=48211),),
        meta={"message_id": 315, "chat_type": "private"},
    )],
    # What a customer sends without text reads as text (their data, symbols, no words of one
    # language), with the structured part in meta. Real messages: aiogram's dataset (SOURCES.md).
    "message_location": [_aiogram(804300001, 12345, 1508755473, "📍 50.693416, 30.624605",
                                  attachments=(Attachment(content_type="location", url="geo:50.693416,30.624605"),),
                                  meta={"location": {"geo": "geo:50.693416,30.624605"}})],
    "message_venue": [_aiogram(804300002, 56004, 1522849819, "📍 Venue Name, Venue Address",
                               attachments=(Attachment(content_type="location", url="geo:50.693416,30.624605",
                                                       name="Venue Name"),),
                               meta={"venue": {"title": "Venue Name", "address": "Venue Address",
                                               "geo": "geo:50.693416,30.624605"}})],
    # A contact without a user_id is someone's card, not a verified phone of the sender: no link.
    "message_contact_without_user_id": [_aiogram(804300003, 56006, 1522850298, "👤 John Smith, 88005553535",
                                                 meta={"contact": {"name": "John Smith", "phone_number": "88005553535",
                                                                   "user_id": None}})],
    # A sticker stands for its emoji.
    "message_sticker": [_aiogram(804300004, 12345, 1508771450, "🛠",
                                 meta={"sticker": {"emoji": "🛠", "set_name": "StickerSet",
                                                   "file_id": "AAbbCCddEEffGGhh1234567890"}})],
    "message_video_note": [_aiogram(804300005, 55934, 1522835890, "🎥 0:04",
                                    attachments=(Attachment(content_type="video/mp4", name="AbCdEfGhIjKlMnOpQrStUvWxYz",
                                                            size=186562),),
                                    meta={"video_note": {"duration": 4, "file_id": "AbCdEfGhIjKlMnOpQrStUvWxYz"}})],
    "message_dice": [_aiogram(804300006, 12345, 1508768012, "🎲 6", meta={"dice": {"emoji": "🎲", "value": 6}})],
    "message_poll": [_aiogram(804300007, 11223, 1508709711, "📊 What was first: chicken or egg?\n- chicken\n- egg",
                              meta={"poll": {"question": "What was first: chicken or egg?",
                                             "options": ["chicken", "egg"]}})],
    # Another bot in a group: authentic, no customer wrote it. 200, nothing published (was a 400).
    "message_from_bot": [],
    # Telegram Business: the customer writes to the owner's account; the answer goes through the
    # business connection (meta["to"], which the notifier passes as business_connection_id).
    "business_message_text": [InboundMessage(
        channel="telegram", external_id=f"{BOT}:804300009", sender=Identity("telegram", "5012345678"),
        sender_name="Olena Kovalenko", reply_to="5012345678", received_at=NOW,
        sent_at=datetime.fromtimestamp(1795538100, UTC), text="Добрий день! Чи є ця куртка в розмірі M?",
        language_hint="uk",
        meta={"message_id": 771, "chat_type": "private", "business_connection_id": "AbCdEfGh123456-business",
              "to": "AbCdEfGh123456-business"},
    )],
    # The owner answering in their own Telegram app: the business's side, not a customer message.
    "business_message_from_the_owner": [],
    # Known but irrelevant: nothing to route (200, nothing published).
    "edited_message": [],
    "callback_query": [],
    "my_chat_member_blocked": [],
}

MALFORMED = {
    "malformed_no_update_id": "update_id",
    "malformed_message_without_chat": "chat.id",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_exact_message(name: str) -> None:
    assert parse_update(load(name), bot_id=BOT, received_at=NOW) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_names_the_problem(name: str) -> None:
    with pytest.raises(Malformed, match=MALFORMED[name]):
        parse_update(load(name), bot_id=BOT, received_at=NOW)


def test_every_fixture_is_used() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.json")}
    assert on_disk == set(EXPECTED) | set(MALFORMED)

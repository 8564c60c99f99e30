"""Meta (Messenger, Instagram, WhatsApp): one test per fixture — the real-shaped webhook in, signed
over its raw bytes, the exact InboundMessages and DeliveryStatuses out; the signature and the GET
handshake; and a sweep proving a signed but broken payload is parked (200), never a 500."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.gateway.channels import Malformed, RawRequest, Unauthenticated
from services.gateway.channels import meta as meta_module
from services.gateway.channels.meta import MetaAdapter, parse_payload, parse_statuses, whatsapp_phone
from shared.contracts import Attachment, DeliveryStatus, Envelope, Identity, InboundMessage, encode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
FAMILIES = ("messenger", "instagram", "whatsapp")
SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
VERIFY_TOKEN = "switchboard-meta-verify"
NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)

PAGE = "104512345678901"
IG_ACCOUNT = "17841400123456789"
WA_NUMBER = {"phone_number_id": "106540352242922", "display_phone_number": "37052140000"}


def at(h: int, m: int, s: int, ms: int = 0) -> datetime:
    return datetime(2026, 11, 24, h, m, s, ms * 1000, tzinfo=UTC)


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def sign(body: bytes, secret: str = SECRET) -> str:
    # Written out here rather than imported, so the test does not trust the code it tests.
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def request(body: bytes, headers: dict[str, str] | None = None) -> RawRequest:
    return RawRequest(url="https://support.example/webhooks/meta", body=body, form={}, received_at=NOW,
                      headers={"Content-Type": "application/json", "X-Hub-Signature-256": sign(body)}
                      if headers is None else headers)


@pytest.fixture
def adapter() -> MetaAdapter:
    return MetaAdapter(app_secret=SECRET, verify_token=VERIFY_TOKEN)


def messenger(mid: str, psid: str, when: datetime, text: str = "", **kw: Any) -> InboundMessage:
    return InboundMessage(channel="messenger", external_id=mid, sender=Identity("psid", psid), reply_to=psid,
                          received_at=NOW, sent_at=when, text=text, meta={"recipient_id": PAGE, **kw.pop("meta", {})}, **kw)


def instagram(mid: str, igsid: str, when: datetime, text: str = "", **kw: Any) -> InboundMessage:
    return InboundMessage(channel="instagram", external_id=mid, sender=Identity("igsid", igsid), reply_to=igsid,
                          received_at=NOW, sent_at=when, text=text, meta={"recipient_id": IG_ACCOUNT, **kw.pop("meta", {})}, **kw)


def whatsapp(wamid: str, wa_id: str, name: str, when: datetime, text: str = "", **kw: Any) -> InboundMessage:
    return InboundMessage(channel="whatsapp", external_id=wamid, sender=Identity("wa_id", wa_id), reply_to=wa_id,
                          sender_name=name, received_at=NOW, sent_at=when, text=text,
                          linked_identities=(Identity("phone", "+" + wa_id),),
                          meta={**kw.pop("meta", {}), **WA_NUMBER}, **kw)


def _pywa(wamid: str, timestamp: int, text: str, *, meta: dict, attachments: tuple = ()) -> InboundMessage:
    """A message of pywa's test data: its customer writing to its business number."""
    return InboundMessage(channel="whatsapp", external_id=wamid, sender=Identity("wa_id", "972987654321"),
                          reply_to="972987654321", sender_name="Test Name", received_at=NOW,
                          sent_at=datetime.fromtimestamp(timestamp, UTC), text=text, attachments=attachments,
                          meta={**meta, "phone_number_id": "1122334455667", "display_phone_number": "972123456789"})


IG_MID = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMTIzNDU2Nzg5OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI3NjAxNzQ1MjE5NjA4MzQ1Njc4OTAxMjM0"
OUR_WAMID = "wamid.HBgLMzcwNjEyMzQ1NjcVAgARGBI5QUJDREVGMDEyMzQ1Njc4OQA="

#: fixture → (messages, statuses). Empty lists: a known event with nothing to route (200, nothing published).
EXPECTED: dict[str, tuple[list[InboundMessage], list[DeliveryStatus]]] = {
    # --- Messenger ----------------------------------------------------------------------------
    "messenger/text_message": ([messenger(
        "m_Aq3xV0bQ9rk2mP7s1YtW8uZ4cN6dE2fG5hJ8kL1nO3pR6sT9vX2yB5eH8jM1qS4uW7zC0fI3lP6", "7712345678901234",
        at(16, 35, 0, 123), "Hallo, mein Paket ist seit einer Woche unterwegs. Bestellung 48213 – wo ist es?")], []),
    # A survey answer: the payload we sent comes back in meta["quick_reply"].
    "messenger/quick_reply": ([messenger(
        "m_Qr7uT1vW4xY7zA0bC3dE6fG9hJ2kL5mN8pQ1rS4tU7vW0xY3zA6bC9dE2fG5hJ8kL1mN4pQ7rS0t", "7712345678901234",
        at(17, 35, 0, 861), "5", meta={"quick_reply": "csat:5:9f1c2e7a"})], []),
    "messenger/attachment_image": ([messenger(
        "m_Zb8cD1eF4gH7jK0lM3nP6qR9sT2uV5wX8yZ1aB4cD7eF0gH3jK6lM9nP2qR5sT8uV1wX4yZ7aB0c", "6623456789012345",
        at(16, 40, 0, 7), attachments=(Attachment(
            content_type="image",
            url="https://scontent.xx.fbcdn.net/v/t1.15752-9/461234567_1234567890123456_7890123456789012345_n.jpg"
                "?_nc_cat=1&ccb=1-7&_nc_sid=fc17b8&oh=03_Q7cD1eF&oe=6741A2B3"),))], []),
    # Our own acknowledgement reflected back: never a customer message.
    "messenger/echo": ([], []),
    "messenger/message_deliveries": ([], [
        DeliveryStatus("messenger", "m_Ec9hO2dE5fG8hJ1kL4mN7pQ0rS3tU6vW9xY2zA5bC8dE1fG4hJ7kL0mN3pQ6rS9tU2vW5xY8zA1b",
                       "delivered", at(16, 35, 2, 301)),
        DeliveryStatus("messenger", "m_Fd0iP3eF6gH9jK2lM5nP8qR1sT4uV7wX0yZ3aB6cD9eF2gH5jK8lM1nP4qR7sT0uV3wX6yZ9aB2c",
                       "delivered", at(16, 35, 2, 301)),
    ]),
    # Messenger reads carry only a watermark, which names no message.
    "messenger/message_reads": ([], []),
    # A button press (Get Started, the persistent menu) is what the customer said: its title.
    "messenger/postback_get_started": ([messenger(
        "m_Pb1kR4fG7hJ0kL3mN6pQ9rS2tU5vW8xY1zA4bC7dE0fG3hJ6kL9mN2pQ5rS8tU1vW4xY7zA0bC3d", "5534567890123456",
        at(16, 34, 10, 101), "Get Started", meta={"postback": "GET_STARTED"})], []),
    # Without a mid, the id is derived from sender, timestamp and payload: a redelivery is one message.
    "messenger/postback_persistent_menu_without_mid": ([messenger(
        "postback:81b392ce14b1747524b34e82f8b46e1d9ff544492bada40af9afb7ccea527d98", "7712345678901234",
        at(17, 37, 0, 433), "Track my order", meta={"postback": "MENU_TRACK_ORDER"})], []),
    # Two entries, five items: messages in order; the delivery is a status; the echo is dropped.
    "messenger/batched_two_entries": ([
        messenger("m_Ba1aA1bB2cC3dD4eE5fF6gG7hH8iI9jJ0kK1lL2mM3nN4oO5pP6qQ7rR8sS9tT0uU1vV2wW3xX4y",
                  "7712345678901234", at(16, 50, 0, 15), "Ich möchte die Schuhe zurückgeben, Größe passt nicht."),
        messenger("m_Bb4dD4eE5fF6gG7hH8iI9jJ0kK1lL2mM3nN4oO5pP6qQ7rR8sS9tT0uU1vV2wW3xX4yY5zZ6aA7b",
                  "6623456789012345", at(16, 50, 0, 415), "Here is the invoice with the wrong amount",
                  attachments=(Attachment(content_type="file", url="https://cdn.fbsbx.com/v/t59.2708-21/"
                               "461234567_invoice-48213.pdf/invoice-48213.pdf?_nc_cat=104&ccb=1-7&oh=03_AbCdEf"
                               "&oe=6741A2B3"),)),
        messenger("m_Bc5eE5fF6gG7hH8iI9jJ0kK1lL2mM3nN4oO5pP6qQ7rR8sS9tT0uU1vV2wW3xX4yY5zZ6aA7bB8c",
                  "5534567890123456", at(16, 50, 0, 777), "Płatność nie przeszła, ale pieniądze zniknęły z konta"),
    ], [DeliveryStatus("messenger", "m_Dl2bB2cC3dD4eE5fF6gG7hH8iI9jJ0kK1lL2mM3nN4oO5pP6qQ7rR8sS9tT0uU1vV2wW3xX4yY5z",
                       "delivered", at(16, 50, 0, 120))]),
    # Another app holds thread control: it answers, we do not.
    "messenger/standby_while_another_app_has_control": ([], []),
    # Signed but unexpected (parked: 200, a warning with the shape).
    "messenger/message_without_sender": ([], []),
    "messenger/unknown_object_user": ([], []),
    # --- Instagram ----------------------------------------------------------------------------
    "instagram/text_message": ([instagram(IG_MID + "NQZDZD", "6345678901234567", at(17, 10, 0, 204),
                                          "Здравейте! Имате ли това яке в размер M?")], []),
    "instagram/story_reply": ([instagram(
        IG_MID + "NgZDZD", "6345678901234567", at(17, 15, 0, 518), "Кога ще има отново в наличност?",
        meta={"story_reply": {"id": "18034567890123456", "url": "https://lookaside.fbsbx.com/ig_messaging_cdn/"
                                                               "?asset_id=18034567890123456&signature=AbCdEfGh123"}})],
        []),
    "instagram/story_mention": ([instagram(
        IG_MID + "NwZDZD", "7456789012345678", at(17, 20, 0, 677),
        attachments=(Attachment(content_type="story_mention", url="https://lookaside.fbsbx.com/ig_messaging_cdn/"
                                "?asset_id=18045678901234567&signature=QrStUv456"),))], []),
    "instagram/echo": ([], []),
    "instagram/message_deleted": ([], []),
    "instagram/messaging_seen": ([], [DeliveryStatus("instagram", IG_MID + "OAZDZD", "read", at(17, 11, 0, 333))]),
    # --- WhatsApp -----------------------------------------------------------------------------
    "whatsapp/text_with_contacts": ([whatsapp(
        "wamid.HBgLMzcwNjEyMzQ1NjcVAgASGBQzQUJDMTIzNDU2Nzg5MEFCQ0RFRgA=", "37061234567", "Rūta Petrauskienė",
        at(16, 41, 0), "Laba diena, užsakymas 48213 dar neatėjo. Kada jį gausiu?")], []),
    "whatsapp/image": ([whatsapp(
        "wamid.HBgMMzgwNjcxMjM0NTY3FQIAEhgUM0VCMDRBNUI2QzdEOEU5RjAxMjMA", "380671234567", "Oleksandr",
        at(16, 42, 0), "Екран пошкоджений при доставці",
        attachments=(Attachment(content_type="image/jpeg", name="1187654321098765"),))], []),
    "whatsapp/document": ([whatsapp(
        "wamid.HBgLNDg2MDEyMzQ1NjcVAgASGBQzQTk4NzY1NDMyMTBGRURDQkEA", "48601234567", "Katarzyna Wiśniewska",
        at(16, 43, 0), "Faktura z błędną kwotą",
        attachments=(Attachment(content_type="application/pdf", name="faktura-48213.pdf"),))], []),
    "whatsapp/audio_voice": ([whatsapp(
        "wamid.HBgNNDkxNTEyMzQ1Njc4ORUCABIYFDNBMTExMjIyMzMzNDQ0NTU1NjY2AA==", "4915123456789", "Dmitrij",
        at(16, 44, 0), attachments=(Attachment(content_type="audio/ogg; codecs=opus", name="3309876543210987"),),
        meta={"voice": True})], []),
    "whatsapp/location": ([whatsapp(
        "wamid.HBgMMzU5ODg4MTIzNDU2FQIAEhgUM0E3Nzc4ODg5OTkwMDBBQUFCQkIA", "359888123456", "Ivan Petrov",
        at(16, 45, 0), "📍 Econt office Sofia Center, bul. Vitosha 15, Sofia",
        attachments=(Attachment(content_type="location", url="geo:42.6977,23.3219", name="Econt office Sofia Center"),))],
        []),
    # A survey button: its id in meta["quick_reply"], the message it answers in meta["reply_to_mid"].
    "whatsapp/interactive_button_reply": ([whatsapp(
        "wamid.HBgLMzcwNjEyMzQ1NjcVAgASGBQzQkJCMTExMjIyMzMzNDQ0NTU1NjY2AA==", "37061234567", "Rūta Petrauskienė",
        at(18, 41, 0), "😀 Puiku", meta={"quick_reply": "csat:5:9f1c2e7a", "reply_to_mid": OUR_WAMID})], []),
    # The customer did write, in a form the API cannot show: a human should still see it.
    "whatsapp/unsupported_message": ([whatsapp(
        "wamid.HBgLMzcwNjEyMzQ1NjcVAgASGBQzQ0NDMTExMjIyMzMzNDQ0NTU1NjY2AA==", "37061234567", "Rūta Petrauskienė",
        at(16, 46, 0), "⚠️ Message type is currently not supported.", meta={"unsupported": "unsupported"})], []),
    # pywa's (MIT) and Meta's documented payloads, see tests/fixtures/whatsapp/SOURCES.md. Their
    # customer, 972987654321, is no number libphonenumber knows: a wa_id all the same, no phone link.
    "whatsapp/pywa_order": ([_pywa(
        "wamid.xyzxyz", 1697044668, "🛒 3 × HAMBURGER (30 ILS)\n🛒 2 × FRENCH_FRIES (35 ILS)\n🛒 2 × SODA (10 ILS)",
        meta={"order": {"catalog_id": "354160437058781", "items": [
            {"product_retailer_id": "HAMBURGER", "quantity": 3, "item_price": 30, "currency": "ILS"},
            {"product_retailer_id": "FRENCH_FRIES", "quantity": 2, "item_price": 35, "currency": "ILS"},
            {"product_retailer_id": "SODA", "quantity": 2, "item_price": 10, "currency": "ILS"}]}})], []),
    # A WhatsApp Flow's answers: the form's fields as lines; our flow token only in meta.
    "whatsapp/pywa_flow_reply": ([_pywa(
        "wamid.wegrchytvwcggt==", 1702502473,
        "📝 comment_text: Comment Text\ndelivery_rating: 4\npurchase_rating: 2\nrecommend_radio: 0\ncs_rating: 0",
        meta={"flow": {"name": "flow", "token": "AQAAAAACS5FpgQ_cAAAAAD0QI3s.", "response": {
            "comment_text": "Comment Text", "delivery_rating": "4", "purchase_rating": "2", "recommend_radio": "0",
            "cs_rating": "0"}}, "reply_to_mid": "wamid.gvwegfretge=="})], []),
    "whatsapp/pywa_contacts": ([_pywa(
        "wamid.xyzxyz", 1697044621,
        "👤 Chandler Bing, +1 555-555-5555\n👤 Monica, +1 666-666-6666\n👤 Rachel Green, +1 777-777-7777",
        attachments=tuple(Attachment(content_type="contacts", name=n) for n in ("Chandler Bing", "Monica", "Rachel Green")),
        meta={})], []),
    "whatsapp/pywa_chosen_location": ([_pywa(
        "wamid.xyzxyz", 1697044557, "📍 Facebook HQ, 1 Hacker Way, Menlo Park, CA 94025",
        attachments=(Attachment(content_type="location", url="geo:37.4611978,-122.2164385", name="Facebook HQ"),),
        meta={})], []),
    # An edit and a deletion are revisions of the stored message (the router applies them), not
    # new customer messages: meta["revision"] names the original.
    "whatsapp/pywa_edit_text": ([_pywa("wamid.yyyyyy", 1697044968, "Text was edited",
                                       meta={"revision": {"kind": "edit", "of": "wamid.zzzzzz"}})], []),
    "whatsapp/revoke": ([_pywa("wamid.wwwwww", 1697045100, "",
                               meta={"revision": {"kind": "revoke", "of": "wamid.zzzzzz"}})], []),
    # Meta's documentation sample with its placeholders left in: no customer is made of "<…>".
    "whatsapp/pywa_revoke_placeholder": ([], []),
    # A customer who hides their number behind a username: known by the business-scoped user id,
    # answered through it; the username is shown, never used as an identity (it can change).
    "whatsapp/username_user_without_phone": ([InboundMessage(
        channel="whatsapp", external_id="wamid.HBgLMzcwNjEyMzQ1NjcVAgASGBRVU0VSTkFNRU9OTFkwMDAwMDEA",
        sender=Identity("wa_user", "US.13491208655302741918"), reply_to="US.13491208655302741918",
        sender_name="Jane", received_at=NOW, sent_at=datetime.fromtimestamp(1795538000, UTC),
        text="Hi! Do you ship to Lithuania?",
        meta={"phone_number_id": "1122334455667", "display_phone_number": "972123456789", "username": "@jane.doe"})],
        []),
    # Meta's own example: a customer who hides their number behind a username, to a business with
    # parent BSUIDs — no "from", no wa_id; the BSUID is the sender, the parent BSUID is not used.
    "whatsapp/username_user_with_parent_bsuid": ([InboundMessage(
        channel="whatsapp", external_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=",
        sender=Identity("wa_user", "US.13491208655302741918"), reply_to="US.13491208655302741918",
        sender_name="Sheena Nelson", received_at=NOW, sent_at=datetime.fromtimestamp(1749416383, UTC),
        text="Does it come in another color?",
        meta={"phone_number_id": "106540352242922", "display_phone_number": "15550783881",
              "username": "@realsheenanelson"})],
        []),
    # Messenger: the customer corrected a sent message (Meta's message_edits example).
    "messenger/message_edit": ([messenger(
        "m_Aq3xV0bQ9rk2mP7s1YtW8uZ4cN6dE2fG5hJ8kL1nO3pR6sT9vX2yB5eH8jM1qS4uW7zC0fI3lP6:edit:1", "7712345678901234",
        datetime.fromtimestamp(1795539000, UTC),
        "Hallo, mein Paket ist seit einer Woche unterwegs. Bestellung 48214 – wo ist es?",
        meta={"revision": {"kind": "edit",
                           "of": "m_Aq3xV0bQ9rk2mP7s1YtW8uZ4cN6dE2fG5hJ8kL1nO3pR6sT9vX2yB5eH8jM1qS4uW7zC0fI3lP6"}})], []),
    "whatsapp/reaction": ([], []),
    "whatsapp/template_status_update": ([], []),
    "whatsapp/statuses_delivered": ([], [
        DeliveryStatus("whatsapp", OUR_WAMID, "delivered", at(16, 41, 10)),
        DeliveryStatus("whatsapp", OUR_WAMID, "read", at(16, 41, 35)),
    ]),
    "whatsapp/statuses_failed": ([], [DeliveryStatus(
        "whatsapp", "wamid.HBgMMzgwNjcxMjM0NTY3FQIAERgSQUJDMTIzREVGNDU2R0hJNzg5AA==", "failed", at(16, 42, 10),
        error_code="131026", error_message="Message undeliverable")]),
}

#: Signed but unexpected: answered 200 and parked with a warning that names the problem.
PARKED = {
    "whatsapp/pywa_revoke_placeholder": "placeholder or invalid sender",
    "messenger/message_without_sender": "without mid or sender.id",
    "messenger/unknown_object_user": "unknown object 'user'",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_exact_messages_and_statuses(name: str, adapter: MetaAdapter, caplog) -> None:
    req = request(raw(name))
    adapter.verify(req)  # the fixture's raw bytes, signed as Meta signs them
    with caplog.at_level(logging.WARNING, logger=meta_module.__name__):
        messages = adapter.parse(req)
    assert messages == EXPECTED[name][0]
    assert parse_statuses(req) == EXPECTED[name][1]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    if name in PARKED:
        [warning] = warnings
        assert PARKED[name] in warning.getMessage()
        assert isinstance(warning.shape, str) and warning.shape.startswith("{")  # keys and types, no values
    else:
        assert warnings == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_everything_parsed_fits_the_bus_contract(name: str) -> None:
    messages, statuses = EXPECTED[name]
    for item in [*messages, *statuses]:
        encode(Envelope.wrap(item, message_id="m", correlation_id="c", occurred_at=NOW))


def test_every_fixture_is_used() -> None:
    on_disk = {f"{p.parent.name}/{p.stem}" for family in FAMILIES for p in (FIXTURES / family).glob("*.json")}
    assert on_disk == set(EXPECTED)
    assert set(PARKED) <= set(EXPECTED)


def test_parked_shape_logs_no_customer_data(adapter: MetaAdapter, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=meta_module.__name__):
        adapter.parse(request(raw("messenger/message_without_sender")))
    [warning] = caplog.records
    assert "hello?" not in warning.shape and "m_Ns7g" not in warning.shape
    assert '"text": "str"' in warning.shape


# --- details that no single fixture shows ------------------------------------------------------


def test_not_json_is_malformed(adapter: MetaAdapter) -> None:
    req = request(b"object=page&entry=1")
    adapter.verify(req)
    with pytest.raises(Malformed, match="not JSON"):
        adapter.parse(req)
    with pytest.raises(Malformed):
        parse_statuses(req)


@pytest.mark.parametrize("body", [b"[]", b"null", b'"page"', b'{"object": "page"}', b'{"object": "page", "entry": {}}'])
def test_json_of_the_wrong_shape_is_parked_not_malformed(body: bytes, adapter: MetaAdapter, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger=meta_module.__name__):
        assert adapter.parse(request(body)) == []
    assert len(caplog.records) == 1


def test_a_redelivered_postback_without_mid_is_the_same_message_and_another_press_is_not() -> None:
    payload = json.loads(raw("messenger/postback_persistent_menu_without_mid"))
    [first] = parse_payload(payload, received_at=NOW).messages
    payload["entry"][0]["time"] += 60_000  # Meta's retry: a new batch time, the same item
    [again] = parse_payload(payload, received_at=NOW).messages
    assert again.external_id == first.external_id
    payload["entry"][0]["messaging"][0]["timestamp"] += 5_000  # the same button pressed again later
    [later] = parse_payload(payload, received_at=NOW).messages
    assert later.external_id != first.external_id


def test_a_postback_without_mid_or_timestamp_is_parked() -> None:
    payload = json.loads(raw("messenger/postback_persistent_menu_without_mid"))
    del payload["entry"][0]["messaging"][0]["timestamp"]
    events = parse_payload(payload, received_at=NOW)
    assert events.messages == [] and [p for p, _ in events.problems] == ["messenger postback without mid or timestamp"]


def test_missing_timestamp_leaves_the_providers_time_unknown() -> None:
    payload = json.loads(raw("messenger/text_message"))
    del payload["entry"][0]["messaging"][0]["timestamp"]
    [msg] = parse_payload(payload, received_at=NOW).messages
    assert msg.received_at == NOW and msg.sent_at is None


def test_an_id_too_long_for_the_contract_is_parked_not_published() -> None:
    payload = json.loads(raw("whatsapp/text_with_contacts"))
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["id"] = "wamid." + "A" * 300
    events = parse_payload(payload, received_at=NOW)
    assert events.messages == [] and len(events.problems) == 1


def test_a_broken_item_does_not_lose_the_rest_of_the_batch() -> None:
    payload = json.loads(raw("messenger/batched_two_entries"))
    payload["entry"][0]["messaging"].insert(0, {"message": {"text": "no ids"}})
    events = parse_payload(payload, received_at=NOW)
    assert events.messages == EXPECTED["messenger/batched_two_entries"][0]
    assert len(events.problems) == 1


@pytest.mark.parametrize(("wa_id", "phone"), [
    ("37061234567", "+37061234567"), ("4915123456789", "+4915123456789"),
    ("999123", None), ("0000000000", None), ("3706123456789012345", None), ("abc", None),
])
def test_wa_id_links_a_phone_only_when_it_is_a_valid_number(wa_id: str, phone: str | None) -> None:
    assert whatsapp_phone(wa_id) == phone


def test_invalid_wa_id_gives_no_linked_phone() -> None:
    payload = json.loads(raw("whatsapp/text_with_contacts"))
    value = payload["entry"][0]["changes"][0]["value"]
    value["messages"][0]["from"] = value["contacts"][0]["wa_id"] = "999123"
    [msg] = parse_payload(payload, received_at=NOW).messages
    assert msg.sender == Identity("wa_id", "999123") and msg.linked_identities == ()


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


_WRONG = (None, 0, -1, 10**30, True, "", "x" * 400, [], {}, [None], {"a": 1})


def test_every_field_of_every_fixture_broken_never_raises_and_fits_the_contract() -> None:
    """Fuzzing by hand: each field deleted or given a wrong type — parked or parsed, never an exception
    (a 500) and never something the bus contract would reject."""
    checked = 0
    for name in EXPECTED:
        original = json.loads(raw(name))
        for path in _paths(original):
            for replacement in (*_WRONG, _DELETE):
                payload = copy.deepcopy(original)
                parent = payload
                for key in path[:-1]:
                    parent = parent[key]
                if replacement is _DELETE:
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = replacement
                events = parse_payload(payload, received_at=NOW)
                for item in [*events.messages, *events.statuses]:
                    encode(Envelope.wrap(item, message_id="m", correlation_id="c", occurred_at=NOW))
                checked += 1
    assert checked > 5000


_DELETE = object()


# --- signature ---------------------------------------------------------------------------------


def test_good_signature_passes(adapter: MetaAdapter) -> None:
    adapter.verify(request(raw("whatsapp/text_with_contacts")))


def test_signature_header_is_found_whatever_its_case(adapter: MetaAdapter) -> None:
    body = raw("messenger/text_message")
    adapter.verify(request(body, {"x-hub-signature-256": sign(body)}))


def test_signature_with_another_secret_is_refused(adapter: MetaAdapter) -> None:
    body = raw("messenger/text_message")
    with pytest.raises(Unauthenticated, match="wrong"):
        adapter.verify(request(body, {"X-Hub-Signature-256": sign(body, "another-app-secret")}))


def test_a_body_changed_after_signing_is_refused(adapter: MetaAdapter) -> None:
    body = raw("messenger/text_message")
    tampered = body.replace(b"48213", b"48214")
    with pytest.raises(Unauthenticated):
        adapter.verify(request(tampered, {"X-Hub-Signature-256": sign(body)}))


def test_missing_signature_header_is_refused(adapter: MetaAdapter) -> None:
    with pytest.raises(Unauthenticated, match="missing"):
        adapter.verify(request(raw("messenger/text_message"), {"Content-Type": "application/json"}))


@pytest.mark.parametrize("header", [
    "sha1=0123456789abcdef0123456789abcdef01234567",  # the legacy X-Hub-Signature form
    "sha256=",
    "sha256=zz",
    "sha256=ünïcödé",  # non-ASCII: a refusal, not a TypeError from compare_digest
])
def test_malformed_signature_headers_are_refused(header: str, adapter: MetaAdapter) -> None:
    with pytest.raises(Unauthenticated):
        adapter.verify(request(raw("messenger/text_message"), {"X-Hub-Signature-256": header}))


@pytest.mark.parametrize("secret", [None, ""])
def test_without_an_app_secret_everything_is_refused(secret: str | None) -> None:
    body = raw("messenger/text_message")
    with pytest.raises(Unauthenticated, match="app secret"):
        MetaAdapter(app_secret=secret, verify_token=VERIFY_TOKEN).verify(
            request(body, {"X-Hub-Signature-256": sign(body, "")}))


def test_signature_over_reserialised_json_fails(adapter: MetaAdapter) -> None:
    body = raw("whatsapp/text_with_contacts")
    reserialised = json.dumps(json.loads(body)).encode()  # what a framework's parsed-then-dumped JSON looks like
    assert reserialised != body
    with pytest.raises(Unauthenticated):
        adapter.verify(request(body, {"X-Hub-Signature-256": sign(reserialised)}))


def test_uppercase_hex_is_accepted(adapter: MetaAdapter) -> None:
    body = raw("messenger/text_message")
    adapter.verify(request(body, {"X-Hub-Signature-256": "sha256=" + sign(body)[7:].upper()}))


def test_signature_is_compared_in_constant_time(adapter: MetaAdapter, monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(meta_module.hmac, "compare_digest", spy)
    body = raw("messenger/text_message")
    adapter.verify(request(body))
    assert calls == [(sign(body).encode(), sign(body).encode())]


# --- GET handshake -----------------------------------------------------------------------------


def handshake(token: str = VERIFY_TOKEN, mode: str = "subscribe", challenge: str | None = "1158201444") -> dict:
    args = {"hub.mode": mode, "hub.verify_token": token}
    if challenge is not None:
        args["hub.challenge"] = challenge
    return args


def test_handshake_returns_the_challenge(adapter: MetaAdapter) -> None:
    assert adapter.verify_handshake(handshake()) == "1158201444"


@pytest.mark.parametrize("args", [
    handshake(token="wrong-token"),
    handshake(token=""),
    handshake(mode="unsubscribe"),
    {"hub.challenge": "1158201444"},
    handshake(token="ünïcödé"),
])
def test_handshake_with_wrong_mode_or_token_is_refused(args: dict, adapter: MetaAdapter) -> None:
    with pytest.raises(Unauthenticated):
        adapter.verify_handshake(args)


@pytest.mark.parametrize("configured", [None, ""])
def test_handshake_without_a_configured_token_is_refused(configured: str | None) -> None:
    with pytest.raises(Unauthenticated, match="verify token"):
        MetaAdapter(app_secret=SECRET, verify_token=configured).verify_handshake(handshake(token=""))


def test_handshake_without_a_challenge_is_malformed(adapter: MetaAdapter) -> None:
    with pytest.raises(Malformed, match="hub.challenge"):
        adapter.verify_handshake(handshake(challenge=None))

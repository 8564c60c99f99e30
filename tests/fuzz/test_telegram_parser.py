"""Telegram updates: arbitrary bytes, arbitrary JSON and Bot-API-shaped updates (right and wrong
types in every field) either become InboundMessages that pass the contract or raise Malformed."""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway.channels import RawRequest
from services.gateway.channels.telegram import TelegramAdapter, parse_update
from shared.contracts import storable
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW, assert_publishable, json_values, parsed_or_malformed, sometimes_wrong

BOT = "123456"
ADAPTER = TelegramAdapter(secret="s", bot_id=BOT)

ids = st.integers(min_value=1, max_value=2**52)
unix_time = st.integers(min_value=1_400_000_000, max_value=2_000_000_000)
names = st.text(max_size=30)
file_ids = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789_-", min_size=1, max_size=40)
languages = st.sampled_from(["en", "ru", "uk", "pl", "de", "pt-br"])
phones = st.from_regex(r"\+?[0-9]{6,15}", fullmatch=True)


def user(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    return st.fixed_dictionaries(
        {"id": w(ids), "is_bot": st.just(False) if right else sometimes_wrong(st.booleans())},
        optional={"first_name": w(names), "last_name": w(names), "username": w(names),
                  "language_code": w(languages)})


def chat(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    return st.fixed_dictionaries({"id": w(ids | ids.map(lambda i: -i)),
                                  "type": w(st.sampled_from(["private", "group", "supergroup", "channel"]))},
                                 optional={"title": w(names), "username": w(names)})


def media(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    return st.fixed_dictionaries({"file_id": w(file_ids), "file_unique_id": w(file_ids)},
                                 optional={"file_name": w(names), "mime_type": w(st.sampled_from(
                                     ["application/pdf", "audio/ogg", "video/mp4"])),
                                     "file_size": w(st.integers(0, 2**31)), "duration": w(st.integers(0, 3600))})


def photo_size(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    return st.fixed_dictionaries({"file_id": w(file_ids), "file_unique_id": w(file_ids),
                                  "width": w(st.integers(1, 4096)), "height": w(st.integers(1, 4096))},
                                 optional={"file_size": w(st.integers(0, 2**31))})


def message(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    contact = st.fixed_dictionaries({"phone_number": w(phones), "first_name": w(names)},
                                    optional={"last_name": w(names), "user_id": w(ids)})
    return st.fixed_dictionaries(
        {"message_id": w(ids), "date": w(unix_time), "chat": w(chat(right)), "from": w(user(right))},
        optional={"text": w(st.text(max_size=200)), "caption": w(st.text(max_size=100)),
                  "photo": w(st.lists(w(photo_size(right)), max_size=4)), "document": w(media(right)),
                  "voice": w(media(right)), "audio": w(media(right)), "video": w(media(right)),
                  "contact": w(contact)})


def update(right: bool) -> st.SearchStrategy:
    w = (lambda s: s) if right else sometimes_wrong
    # callback_query is left to the mistyped property: junk in it is rightly Malformed.
    kinds = ["edited_message", "my_chat_member", "poll", "something_new"] + ([] if right else ["callback_query"])
    other = st.sampled_from(kinds)
    return st.one_of(
        st.fixed_dictionaries({"update_id": w(ids), "message": w(message(right))}),
        st.builds(lambda uid, kind, body: {"update_id": uid, kind: body}, w(ids), other, json_values),
    )


def body_of(obj) -> RawRequest:
    return RawRequest(url="https://support.example/webhooks/telegram", headers={},
                      body=json.dumps(obj).encode(), form={}, received_at=NOW)


@fuzz(300)
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b'{"update_id": 1, "message": ' * 2000)  # nesting past the recursion limit
def test_arbitrary_bytes_are_parsed_or_malformed(raw: bytes) -> None:
    req = RawRequest(url="https://x/webhooks/telegram", headers={}, body=raw, form={}, received_at=NOW)
    result = parsed_or_malformed(lambda: ADAPTER.parse(req))
    assert_publishable(result or [])


@fuzz(300)
@given(json_values)
def test_arbitrary_json_is_parsed_or_malformed(value) -> None:
    assert_publishable(parsed_or_malformed(lambda: ADAPTER.parse(body_of(value))) or [])


@fuzz(300)
@given(update(right=True))
def test_a_well_formed_message_update_is_one_message_with_its_text(upd: dict) -> None:
    messages = ADAPTER.parse(body_of(upd))
    assert_publishable(messages)
    if "message" not in upd:
        assert messages == []
        return
    msg = upd["message"]
    (out,) = messages
    assert out.external_id == f"{BOT}:{upd['update_id']}"
    assert out.sender.value == str(msg["from"]["id"]) and out.reply_to == str(msg["chat"]["id"])
    typed = msg.get("text") or msg.get("caption")
    if typed:
        assert out.text == storable(typed)  # NUL and lone surrogates dropped
    elif "contact" in msg:
        assert out.text.startswith("👤")  # a shared contact reads as one, never as an empty message
    else:
        assert out.text == ""
    assert out.received_at == NOW  # arrival is the gateway's, whatever the message's date says


@fuzz(500)
@given(update(right=False))
@example({"update_id": 1, "message": {"message_id": 1, "date": 10**20, "chat": {"id": 1}, "from": {"id": 2}}})
@example({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1}, "from": {"id": 2},
                                       "photo": [{"file_id": "a", "file_size": "big"}, {"file_id": "b", "file_size": 1}]}})
@example({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1}, "from": {"id": 2},
                                       "document": {"file_id": 5, "file_size": "5", "mime_type": {}}}})
@example({"update_id": 1, "message": {"message_id": 1, "date": 1, "chat": {"id": 1},
                                       "from": {"id": 2, "username": 7, "language_code": "x" * 500}}})
def test_a_mistyped_update_is_parsed_or_malformed(upd) -> None:
    assert_publishable(parsed_or_malformed(lambda: parse_update(upd, bot_id=BOT, received_at=NOW)) or [])

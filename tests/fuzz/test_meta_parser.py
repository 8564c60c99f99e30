"""Meta webhooks (Messenger, Instagram, WhatsApp): arbitrary bytes, arbitrary JSON, payloads shaped
like the three products with right and wrong types everywhere, and mutated real fixtures. The body
either is not JSON (Malformed) or becomes messages and statuses that pass the contract; whatever
does not fit is parked, never raised."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from services.gateway.channels import RawRequest
from services.gateway.channels.meta import MetaAdapter, parse_payload
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW, assert_publishable, json_values, parsed_or_malformed, sometimes_wrong

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ADAPTER = MetaAdapter("app-secret", "verify-token")

digits = st.from_regex(r"[0-9]{5,17}", fullmatch=True)
millis = st.integers(1_400_000_000_000, 2_000_000_000_000)
seconds = st.integers(1_400_000_000, 2_000_000_000).map(str)
mids = st.text(min_size=1, max_size=80) | st.just("m_" + "x" * 300)
w = sometimes_wrong

attachment = st.fixed_dictionaries({"type": w(st.sampled_from(["image", "video", "audio", "file", "location",
                                                                 "story_mention", "fallback"]))},
                                   optional={"payload": w(st.fixed_dictionaries({}, optional={
                                       "url": w(st.text(max_size=40)), "title": w(st.text(max_size=20)),
                                       "coordinates": w(st.fixed_dictionaries({"lat": w(st.floats()),
                                                                               "long": w(st.floats())}))}))})
messaging_message = st.fixed_dictionaries({"mid": w(mids)}, optional={
    "text": w(st.text(max_size=100)), "is_echo": w(st.booleans()), "is_deleted": w(st.booleans()),
    "is_unsupported": w(st.booleans()), "attachments": w(st.lists(w(attachment), max_size=3)),
    "quick_reply": w(st.fixed_dictionaries({"payload": w(st.text(max_size=20))})),
    "reply_to": w(st.fixed_dictionaries({}, optional={"mid": w(mids), "story": w(st.fixed_dictionaries(
        {"id": w(digits), "url": w(st.text(max_size=30))}))}))})
messaging_item = st.fixed_dictionaries(
    {"sender": w(st.fixed_dictionaries({"id": w(digits | st.integers())})),
     "recipient": w(st.fixed_dictionaries({"id": w(digits)})), "timestamp": w(millis)},
    optional={"message": w(messaging_message),
              "delivery": w(st.fixed_dictionaries({"watermark": w(millis)}, optional={"mids": w(st.lists(w(mids)))})),
              "read": w(st.fixed_dictionaries({"watermark": w(millis)}, optional={"mid": w(mids)})),
              "postback": w(st.fixed_dictionaries({"payload": w(st.text(max_size=10) | st.just("sv:Tok3nTok3nTok3n:4"))},
                                                  optional={"mid": w(mids), "title": w(st.text(max_size=20))}))})
messaging_payload = st.fixed_dictionaries({
    "object": st.sampled_from(["page", "instagram"]),
    "entry": w(st.lists(w(st.fixed_dictionaries({"id": w(digits), "time": w(millis)}, optional={
        "messaging": w(st.lists(w(messaging_item), max_size=3)), "standby": w(st.lists(json_values, max_size=2)),
        "changes": w(st.lists(json_values, max_size=2))})), max_size=3)),
})

wa_types = st.sampled_from(["text", "image", "document", "audio", "voice", "video", "sticker", "location",
                            "interactive", "button", "contacts", "reaction", "unsupported", "order", "x" * 100])
wa_message = st.builds(
    lambda base, mtype, body: {**base, "type": mtype, **({mtype: body} if isinstance(mtype, str) else {})},
    st.fixed_dictionaries({"from": w(digits), "id": w(mids), "timestamp": w(seconds)}, optional={
        "context": w(st.fixed_dictionaries({"id": w(mids)})),
        "contacts": w(st.lists(w(st.fixed_dictionaries({"name": w(st.fixed_dictionaries(
            {"formatted_name": w(st.text(max_size=20))}))})), max_size=2))}),
    w(wa_types),
    w(st.fixed_dictionaries({}, optional={
        "body": w(st.text(max_size=50)), "caption": w(st.text(max_size=50)), "mime_type": w(st.text(max_size=20)),
        "id": w(digits), "filename": w(st.text(max_size=20)), "voice": w(st.booleans()),
        "latitude": w(st.floats()), "longitude": w(st.floats()), "name": w(st.text(max_size=20)),
        "payload": w(st.text(max_size=20)), "text": w(st.text(max_size=20)),
        "button_reply": w(st.fixed_dictionaries({"id": w(st.text(max_size=10)), "title": w(st.text(max_size=20))})),
    })),
)
wa_status = st.fixed_dictionaries(
    {"id": w(mids), "status": w(st.sampled_from(["sent", "delivered", "read", "failed", "DELIVERED", ""])),
     "timestamp": w(seconds)},
    optional={"recipient_id": w(digits), "errors": w(st.lists(w(st.fixed_dictionaries({}, optional={
        "code": w(st.integers()), "title": w(st.text(max_size=20)), "message": w(st.text(max_size=20))}))))})
wa_value = st.fixed_dictionaries({"messaging_product": st.just("whatsapp")}, optional={
    "metadata": w(st.fixed_dictionaries({"display_phone_number": w(digits), "phone_number_id": w(digits)})),
    "contacts": w(st.lists(w(st.fixed_dictionaries({"wa_id": w(digits), "profile": w(st.fixed_dictionaries(
        {"name": w(st.text(max_size=20))}))})), max_size=2)),
    "messages": w(st.lists(w(wa_message), max_size=3)), "statuses": w(st.lists(w(wa_status), max_size=3)),
    "errors": w(st.lists(json_values, max_size=2))})
whatsapp_payload = st.fixed_dictionaries({
    "object": st.just("whatsapp_business_account"),
    "entry": w(st.lists(w(st.fixed_dictionaries({"id": w(digits), "changes": w(st.lists(w(st.fixed_dictionaries(
        {"field": w(st.sampled_from(["messages", "message_template_status_update"])), "value": w(wa_value)})),
        max_size=2))})), max_size=2)),
})


def request(body: bytes) -> RawRequest:
    return RawRequest(url="https://support.example/webhooks/meta", headers={}, body=body, form={}, received_at=NOW)


def check(body: bytes) -> None:
    """What the gateway does with a verified Meta body: messages, then statuses, all publishable."""
    req = request(body)
    messages = parsed_or_malformed(lambda: ADAPTER.parse(req))
    statuses = parsed_or_malformed(lambda: ADAPTER.parse_statuses(req))
    assert (messages is None) == (statuses is None), "parse and parse_statuses must agree on Malformed"
    assert_publishable(messages or [])
    assert_publishable(statuses or [])


@fuzz(300)
@given(st.binary(max_size=300))
@example(b"[" * 100_000)
@example(b'{"object": "page", "entry": NaN}')
def test_arbitrary_bytes_are_parsed_or_malformed(raw: bytes) -> None:
    check(raw)


@fuzz(200)
@given(json_values)
def test_arbitrary_json_never_raises(value) -> None:
    events = parse_payload(value, received_at=NOW)
    assert_publishable(events.messages)
    assert_publishable(events.statuses)


@fuzz(400)
@given(messaging_payload | whatsapp_payload)
def test_product_shaped_payloads_are_publishable_or_parked(payload) -> None:
    check(json.dumps(payload).encode())


def fixtures() -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8"))
            for family in ("messenger", "instagram", "whatsapp") for p in sorted((FIXTURES / family).glob("*.json"))]


def _paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, (*prefix, i))


@fuzz(300)
@given(data=st.data())
def test_a_real_payload_with_one_value_replaced_is_publishable_or_parked(data) -> None:
    payload = data.draw(st.sampled_from(fixtures()))
    path = data.draw(st.sampled_from(list(_paths(payload))[1:]))
    replacement = data.draw(json_values)
    target = payload = json.loads(json.dumps(payload))  # a copy: the fixture list is shared
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = replacement
    check(json.dumps(payload).encode())

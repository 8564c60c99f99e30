"""Twilio SMS: one test per fixture — the raw form body Twilio posts, signed with the real
RequestValidator, in; the exact InboundMessage or DeliveryStatus out. Plus the signature rules
and the ordering of delivery statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from services.gateway.channels import Malformed, RawRequest, Unauthenticated
from services.gateway.channels.twilio import (
    TwilioSignature,
    TwilioSmsAdapter,
    TwilioStatusAdapter,
    empty_twiml,
    opt_keyword,
    status_moves_forward,
    to_e164,
)
from shared.contracts import Attachment, DeliveryStatus, Envelope, Identity, InboundMessage, encode

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sms"
TOKEN = "12345678901234567890123456789012"
PUBLIC = "https://support.northwind.example"
SMS_URL = f"{PUBLIC}/webhooks/twilio/sms"
STATUS_URL = f"{PUBLIC}/webhooks/twilio/status"
NOW = datetime(2026, 7, 1, 12, 30, 5, tzinfo=UTC)
AC = "AC3f9a1c2b4d5e6f708192a3b4c5d6e7f8"
MG = "MG9b8a7c6d5e4f30211203a4b5c6d7e8f9"
BIZ = "+48732125400"


def body(name: str) -> bytes:
    return (FIXTURES / f"{name}.txt").read_bytes()


def form_of(raw: bytes) -> dict[str, list[str]]:
    # Flask's request.form.to_dict(flat=False): blank values kept, Twilio signs them too.
    return parse_qs(raw.decode("utf-8"), keep_blank_values=True)


def sign(url: str, form: dict[str, list[str]], token: str = TOKEN) -> str:
    # werkzeug's MultiDict, independent of the adapter's own multi-dict, so a bug there shows here.
    return RequestValidator(token).compute_signature(url, MultiDict([(k, v) for k, vs in form.items() for v in vs]))


def request(url: str, form: dict[str, list[str]], *, signature: str | None = None, signed_url: str | None = None,
            raw: bytes = b"") -> RawRequest:
    sig = sign(signed_url or url, form) if signature is None else signature
    return RawRequest(url=url, headers={"Content-Type": "application/x-www-form-urlencoded",
                                        "X-Twilio-Signature": sig},
                      body=raw, form=form, received_at=NOW)


def fixture_request(name: str) -> RawRequest:
    raw = body(name)
    url = STATUS_URL if name.startswith(("status_", "malformed_status_")) else SMS_URL
    return request(url, form_of(raw), raw=raw)


def media(mm: str, me: str) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{AC}/Messages/{mm}/Media/{me}"


MM = "MMa1b2c3d4e5f60718293a4b5c6d7e8f90"

EXPECTED_SMS: dict[str, InboundMessage] = {
    "sms_polish": InboundMessage(
        channel="sms", external_id="SM0c2e4a6b8d0f1e3c5a7b9d1f3e5a7c91", sender=Identity("phone", "+48601234567"),
        reply_to="+48601234567", received_at=NOW, language_hint="pl",
        text="Dzień dobry, paczka z zamówienia 48213 nie dotarła. Kiedy mogę się jej spodziewać? Łukasz",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 2},
    ),
    # Cyrillic forces UCS-2: 70 characters a segment, so 75 characters are two.
    "sms_russian_ucs2": InboundMessage(
        channel="sms", external_id="SM1d3f5b7c9e1a2f4d6b8c0e2a4f6b8d02", sender=Identity("phone", "+79161234567"),
        reply_to="+79161234567", received_at=NOW, language_hint="ru",
        text="Здравствуйте! Хочу вернуть куртку, размер не подошёл. Как оформить возврат?",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 2},
    ),
    # Only SmsSid names the message (the legacy webhook, some Twilio-compatible gateways): accepted.
    "sms_legacy_sms_sid_only": InboundMessage(
        channel="sms", external_id="SM7d9f1b3c5e7a8f0d2b4c6e8a0f2b4d68", sender=Identity("phone", "+48601234567"),
        reply_to="+48601234567", received_at=NOW, language_hint="pl", text="Halo?",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 1},
    ),
    "sms_emoji": InboundMessage(
        channel="sms", external_id="SM2e4a6c8d0f2b3a5e7c9d1f3b5a7c9e13", sender=Identity("phone", "+380501234567"),
        reply_to="+380501234567", received_at=NOW, language_hint="uk",
        text="Дякую 🙏 посилку отримала, але коробка пом'ята 📦😢",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 1},
    ),
    "mms_two_photos": InboundMessage(
        channel="sms", external_id=MM, sender=Identity("phone", "+48601234567"),
        reply_to="+48601234567", received_at=NOW, language_hint="pl", text="Zdjęcia uszkodzonego czajnika",
        attachments=(
            Attachment(content_type="image/jpeg", url=media(MM, "ME0f1e2d3c4b5a69788796a5b4c3d2e1f0")),
            Attachment(content_type="image/png", url=media(MM, "ME1a2b3c4d5e6f708192a3b4c5d6e7f8a9")),
        ),
        meta={"to": BIZ, "account_sid": AC, "messaging_service_sid": MG, "num_segments": 1},
    ),
    # Twilio's default opt-out: the whole body is one keyword, any case; Twilio blocks further sends.
    "sms_stop": InboundMessage(
        channel="sms", external_id="SM3f5b7d9e1a3c4b6f8d0e2a4c6b8d0f24", sender=Identity("phone", "+48601234567"),
        reply_to="+48601234567", received_at=NOW, language_hint="pl", text="Stop ",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 1, "opt": "out"},
    ),
    # Advanced Opt-Out names the keyword class in OptOutType.
    "sms_start": InboundMessage(
        channel="sms", external_id="SM4a6c8e0f2b4d5c7a9e1f3b5d7c9e1a35", sender=Identity("phone", "+48601234567"),
        reply_to="+48601234567", received_at=NOW, language_hint="pl", text="START",
        meta={"to": BIZ, "account_sid": AC, "messaging_service_sid": MG, "num_segments": 1, "opt": "in"},
    ),
    # Twilio reassembles a concatenated SMS: one webhook, one MessageSid, NumSegments says how many.
    "sms_long_concatenated": InboundMessage(
        channel="sms", external_id="SM5b7d9f1a3c5e6d8b0f2a4c6e8d0f2b46", sender=Identity("phone", "+37061234567"),
        reply_to="+37061234567", received_at=NOW, language_hint="lt",
        text="Laba diena. Užsakiau striukę prieš dvi savaites (užsakymas 48377), bet kurjeris jau tris kartus "
             "perkėlė pristatymą ir dabar sistema rodo, kad siunta grąžinta į sandėlį. Prašau patikrinti, kas "
             "nutiko, ir atsiųsti ją dar kartą arba grąžinti pinigus į kortelę. Ačiū, Jonas",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 5},
    ),
    # Parameters we have never heard of are signed like the rest and ignored by the parser.
    "sms_extra_unknown_parameter": InboundMessage(
        channel="sms", external_id="SM6c8e0a2b4d6f7e9c1a3b5d7f9e1a3c57", sender=Identity("phone", "+359888123456"),
        reply_to="+359888123456", received_at=NOW, language_hint="bg",
        text="Здравейте, кога ще пристигне поръчката ми?",
        meta={"to": BIZ, "account_sid": AC, "num_segments": 1},
    ),
}

EXPECTED_STATUS: dict[str, DeliveryStatus] = {
    "status_queued": DeliveryStatus("sms", "SMb1c2d3e4f5061728394a5b6c7d8e9f0a", "queued", NOW),
    "status_sent": DeliveryStatus("sms", "SMb1c2d3e4f5061728394a5b6c7d8e9f0a", "sent", NOW),
    "status_delivered": DeliveryStatus("sms", "SMb1c2d3e4f5061728394a5b6c7d8e9f0a", "delivered", NOW),
    # 30003: unreachable destination handset (switched off, out of coverage).
    "status_undelivered_30003": DeliveryStatus("sms", "SMc2d3e4f5a6071829304b5c6d7e8f9a0b", "undelivered", NOW,
                                               error_code="30003"),
    # 30007: filtered by the carrier as spam.
    "status_failed_30007": DeliveryStatus("sms", "SMd3e4f5a6b7081929304c5d6e7f8a9b0c", "failed", NOW,
                                          error_code="30007", error_message="Message filtered"),
}

MALFORMED = {
    "malformed_no_message_sid": "MessageSid is missing",
    "malformed_missing_from": "From is missing",
    "malformed_num_media_not_a_number": "NumMedia is not a number",
    "malformed_status_missing_message_status": "MessageStatus is missing",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SMS))
def test_sms_fixture_verifies_and_parses_to_exact_message(name: str) -> None:
    adapter = TwilioSmsAdapter(TOKEN)
    req = fixture_request(name)
    adapter.verify(req)
    assert adapter.parse(req) == [EXPECTED_SMS[name]]


@pytest.mark.parametrize("name", sorted(EXPECTED_SMS))
def test_sms_message_fits_the_bus_contract(name: str) -> None:
    envelope = Envelope.wrap(EXPECTED_SMS[name], message_id="m-1", correlation_id="c-1", occurred_at=NOW)
    assert encode(envelope)["payload"]["external_id"] == EXPECTED_SMS[name].external_id


@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_status_fixture_verifies_and_parses_to_exact_status(name: str) -> None:
    adapter = TwilioStatusAdapter(TOKEN)
    req = fixture_request(name)
    adapter.verify(req)
    assert adapter.parse_status(req) == EXPECTED_STATUS[name]
    assert adapter.parse(req) == []  # no customer message: 200, nothing routed
    encode(Envelope.wrap(EXPECTED_STATUS[name], message_id="m-1", correlation_id="c-1", occurred_at=NOW))


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_fixture_passes_the_signature_then_names_the_problem(name: str) -> None:
    req = fixture_request(name)
    adapter = TwilioStatusAdapter(TOKEN) if name.startswith("malformed_status_") else TwilioSmsAdapter(TOKEN)
    adapter.verify(req)  # 400 comes after the signature passes, never instead of a 403
    with pytest.raises(Malformed, match=MALFORMED[name]):
        adapter.parse(req)


def test_every_fixture_is_used() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.txt")}  # SOURCES.md is the manifest, not a fixture
    assert on_disk == set(EXPECTED_SMS) | set(EXPECTED_STATUS) | set(MALFORMED)


# --- signatures ---------------------------------------------------------------------------------


@pytest.fixture
def polish() -> dict[str, list[str]]:
    return form_of(body("sms_polish"))


def test_a_good_signature_passes(polish) -> None:
    TwilioSignature(TOKEN).verify(request(SMS_URL, polish))


def test_a_bad_signature_is_refused(polish) -> None:
    with pytest.raises(Unauthenticated, match="does not match"):
        TwilioSignature(TOKEN).verify(request(SMS_URL, polish, signature="bm90IGEgc2lnbmF0dXJlIGF0IGFsbA=="))


def test_a_signature_made_with_another_token_is_refused(polish) -> None:
    forged = sign(SMS_URL, polish, token="another-accounts-token-000000000")
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, polish, signature=forged))


def test_a_missing_signature_header_is_refused(polish) -> None:
    req = RawRequest(url=SMS_URL, headers={}, body=b"", form=polish, received_at=NOW)
    with pytest.raises(Unauthenticated, match="missing X-Twilio-Signature"):
        TwilioSignature(TOKEN).verify(req)


def test_an_empty_signature_header_is_refused(polish) -> None:
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, polish, signature=""))


@pytest.mark.parametrize("token", [None, ""])
def test_without_a_configured_token_everything_is_refused(polish, token) -> None:
    req = request(SMS_URL, polish, signature=sign(SMS_URL, polish, token="x"))
    with pytest.raises(Unauthenticated, match="no Twilio auth token"):
        TwilioSignature(token).verify(req)


def test_header_name_is_case_insensitive(polish) -> None:
    req = RawRequest(url=SMS_URL, headers={"x-twilio-signature": sign(SMS_URL, polish)}, body=b"", form=polish,
                     received_at=NOW)
    TwilioSignature(TOKEN).verify(req)


@pytest.mark.parametrize("called", [
    "http://support.northwind.example/webhooks/twilio/sms",  # scheme: a TLS proxy must not leak http://
    "https://gateway.internal:8080/webhooks/twilio/sms",  # host: the public URL, not the pod's
    "https://support.northwind.example/webhooks/twilio/status",  # path: another endpoint
    "https://support.northwind.example/webhooks/twilio/sms/",
    "https://support.northwind.example/webhooks/twilio/sms?replay=1",  # the query string is signed too
])
def test_a_signature_for_another_url_is_refused(polish, called) -> None:
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(called, polish, signed_url=SMS_URL))


@pytest.mark.parametrize(("signed", "called"), [
    (SMS_URL, "https://support.northwind.example:443/webhooks/twilio/sms"),
    ("https://support.northwind.example:443/webhooks/twilio/sms", SMS_URL),
    ("http://sms.northwind.example/webhooks/twilio/sms", "http://sms.northwind.example:80/webhooks/twilio/sms"),
])
def test_an_explicit_default_port_is_tolerated(polish, signed, called) -> None:
    TwilioSignature(TOKEN).verify(request(called, polish, signed_url=signed))


def test_the_query_string_is_part_of_the_signed_url(polish) -> None:
    url = SMS_URL + "?tenant=north&v=2"
    TwilioSignature(TOKEN).verify(request(url, polish))
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, polish, signed_url=url))


def test_an_extra_parameter_changes_the_signature(polish) -> None:
    signature = sign(SMS_URL, polish)
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, {**polish, "Injected": ["1"]}, signature=signature))


def test_every_parameter_counts_even_unknown_ones() -> None:
    # A whitelist would verify the known parameters only: dropping AddOns must break the signature.
    form = form_of(body("sms_extra_unknown_parameter"))
    signature = sign(SMS_URL, form)
    TwilioSignature(TOKEN).verify(request(SMS_URL, form, signature=signature))
    stripped = {k: v for k, v in form.items() if k != "AddOns"}
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, stripped, signature=signature))


def test_a_changed_value_is_refused(polish) -> None:
    signature = sign(SMS_URL, polish)
    tampered = {**polish, "From": ["+48600000000"]}
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, tampered, signature=signature))


def test_blank_parameters_are_signed_and_kept(polish) -> None:
    assert polish["ToState"] == [""]
    signature = sign(SMS_URL, polish)
    without_blanks = {k: v for k, v in polish.items() if v != [""]}
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, without_blanks, signature=signature))


def test_repeated_keys_are_all_signed(polish) -> None:
    form = {**polish, "Tag": ["vip", "returning"]}
    TwilioSignature(TOKEN).verify(request(SMS_URL, form))
    one_dropped = {**polish, "Tag": ["vip"]}
    with pytest.raises(Unauthenticated):
        TwilioSignature(TOKEN).verify(request(SMS_URL, one_dropped, signature=sign(SMS_URL, form)))


def test_a_werkzeug_multidict_form_is_accepted(polish) -> None:
    multi = MultiDict([(k, v) for k, vs in {**polish, "Tag": ["vip", "returning"]}.items() for v in vs])
    req = RawRequest(url=SMS_URL, headers={"X-Twilio-Signature": sign(SMS_URL, {**polish, "Tag": ["vip", "returning"]})},
                     body=b"", form=multi, received_at=NOW)
    TwilioSignature(TOKEN).verify(req)


def test_the_raw_body_is_used_when_the_form_was_not_parsed() -> None:
    raw = body("mms_two_photos")
    req = RawRequest(url=SMS_URL, headers={"X-Twilio-Signature": sign(SMS_URL, form_of(raw))}, body=raw, form={},
                     received_at=NOW)
    adapter = TwilioSmsAdapter(TOKEN)
    adapter.verify(req)
    assert adapter.parse(req) == [EXPECTED_SMS["mms_two_photos"]]


# --- the pure parts -----------------------------------------------------------------------------


def test_the_answer_is_an_empty_twiml_response() -> None:
    assert empty_twiml() == '<?xml version="1.0" encoding="UTF-8"?><Response />'


@pytest.mark.parametrize(("raw", "e164"), [
    ("+48601234567", "+48601234567"),
    (" +48 601 234 567 ", "+48601234567"),
    ("601234567", "+48601234567"),  # national format is read in the default region
    ("+79161234567", "+79161234567"),
    ("+4822100203", "+4822100203"),  # possible though not "valid": phonenumbers' metadata lags
    ("12345", None),
    ("Northwind", None),  # an alphanumeric sender id is not a phone
    ("whatsapp:+48601234567", None),
    ("", None),
])
def test_to_e164(raw, e164) -> None:
    assert to_e164(raw, "PL") == e164


@pytest.mark.parametrize(("text", "opt_out_type", "opt"), [
    ("STOP", None, "out"), ("stop", None, "out"), ("  Unsubscribe\n", None, "out"), ("end", None, "out"),
    ("QUIT", None, "out"), ("stopall", None, "out"), ("Revoke", None, "out"), ("OPTOUT", None, "out"),
    ("cancel", None, "out"),
    ("START", None, "in"), ("yes", None, "in"), ("Unstop", None, "in"),
    ("Please stop sending me these", None, None),  # Twilio matches the whole body only, so do we
    ("STOP!", None, None),
    ("1", None, None), ("", None, None),
    ("Arrêtez", "STOP", "out"),  # Advanced Opt-Out: a custom keyword, classed by Twilio
    ("Wznów", "START", "in"),
    ("HELP", "HELP", None),
])
def test_opt_keyword(text, opt_out_type, opt) -> None:
    assert opt_keyword(text, opt_out_type) == opt


def test_media_beyond_num_media_is_ignored() -> None:
    form = {**form_of(body("sms_polish")), "NumMedia": ["1"], "MediaUrl0": ["https://api.twilio.com/m/0"],
            "MediaContentType0": ["image/gif"], "MediaUrl1": ["https://api.twilio.com/m/1"]}
    [msg] = TwilioSmsAdapter(TOKEN).parse(request(SMS_URL, form))
    assert msg.attachments == (Attachment(content_type="image/gif", url="https://api.twilio.com/m/0"),)


def test_a_missing_media_url_names_it() -> None:
    form = {**form_of(body("sms_polish")), "NumMedia": ["2"], "MediaUrl0": ["https://api.twilio.com/m/0"]}
    with pytest.raises(Malformed, match="MediaUrl1 is missing"):
        TwilioSmsAdapter(TOKEN).parse(request(SMS_URL, form))


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("NumMedia", "-1", "NumMedia is not a number"),
    ("MessageSid", "not-a-sid", "MessageSid is not a Twilio message SID"),
    ("From", "Northwind", "From is not a phone number"),
])
def test_bad_values_are_malformed(field, value, problem) -> None:
    form = {**form_of(body("sms_polish")), field: [value]}
    with pytest.raises(Malformed, match=problem):
        TwilioSmsAdapter(TOKEN).parse(request(SMS_URL, form))


@pytest.mark.parametrize(("to", "kept"), [("+48 732 125 400", "+48732125400"), ("72345", "72345")])
def test_the_business_number_is_kept_for_the_reply(to, kept) -> None:
    # A short code is not E.164 but is what the reply must leave from.
    form = {**form_of(body("sms_polish")), "To": [to]}
    [msg] = TwilioSmsAdapter(TOKEN).parse(request(SMS_URL, form))
    assert msg.meta["to"] == kept


STATUS_ORDER = [
    # old, new, moves forward
    (None, "queued", True),
    (None, "delivered", True),
    (None, "brand_new_status", True),
    ("scheduled", "accepted", True),
    ("accepted", "queued", True),
    ("queued", "sending", True),
    ("sending", "sent", True),
    ("sent", "delivered", True),
    ("sent", "undelivered", True),
    ("queued", "failed", True),
    ("scheduled", "canceled", True),
    ("delivered", "read", True),
    ("sent", "partially_delivered", True),
    ("delivered", "sent", False),  # a late "sent" after "delivered" must not move it back
    ("delivered", "queued", False),
    ("sent", "queued", False),
    ("sent", "sending", False),
    ("read", "delivered", False),
    ("delivered", "delivered", False),  # a retried callback changes nothing
    ("undelivered", "delivered", False),  # the first final status wins
    ("failed", "undelivered", False),
    ("canceled", "sent", False),
    ("delivered", "brand_new_status", False),  # an unknown word never replaces a known one
    ("brand_new_status", "delivered", True),
    ("queued", "received", False),  # an inbound-only status says nothing about an outbound message
]


@pytest.mark.parametrize(("old", "new", "forward"), STATUS_ORDER)
def test_status_moves_forward(old, new, forward) -> None:
    assert status_moves_forward(old, new) is forward

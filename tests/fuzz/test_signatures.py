"""Signature checks: a valid signature over X verifies; any single change of the body, the
signature or (Twilio) the URL fails; a missing header fails. For every provider the gateway
verifies: Telegram's secret token, Twilio's X-Twilio-Signature (twilio.request_validator), Meta's
X-Hub-Signature-256 and the mail relay's shared secret."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from services.gateway.channels import RawRequest, Unauthenticated
from services.gateway.channels.email import SECRET_HEADER as RELAY_HEADER
from services.gateway.channels.email import EmailRelayAdapter
from services.gateway.channels.meta import SIGNATURE_HEADER as META_HEADER
from services.gateway.channels.meta import MetaAdapter, signature
from services.gateway.channels.telegram import SECRET_HEADER as TELEGRAM_HEADER
from services.gateway.channels.telegram import TelegramAdapter
from services.gateway.channels.twilio import SIGNATURE_HEADER as TWILIO_HEADER
from services.gateway.channels.twilio import TwilioSignature
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW

# Secrets as providers make them: Telegram allows A-Z a-z 0-9 _ - (1-256 chars); the others are opaque.
telegram_secrets = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-",
                           min_size=1, max_size=256)
secrets_ = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=8, max_size=64)
# What can stand in a header value after a change: printable ASCII and Latin-1 (WSGI's header range).
header_chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF)


def raw(*, headers: dict, body: bytes = b"", url: str = "https://support.example/webhooks/x",
        form: dict | None = None) -> RawRequest:
    return RawRequest(url=url, headers=headers, body=body, form=form or {}, received_at=NOW)


@st.composite
def changed_text(draw, text: str, *, ignore_case: bool = False) -> str:
    """`text` with one character replaced by a different one (case-insensitively different when the
    check is documented to ignore case)."""
    at = draw(st.integers(0, len(text) - 1))
    new = draw(header_chars.filter(
        lambda c: (c.lower() != text[at].lower()) if ignore_case else (c != text[at])))
    return text[:at] + new + text[at + 1:]


@st.composite
def changed_bytes(draw, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data) - 1))
    new = draw(st.integers(0, 255).filter(lambda b: b != data[at]))
    return data[:at] + bytes([new]) + data[at + 1:]


def refused(check, request: RawRequest) -> bool:
    try:
        check(request)
    except Unauthenticated:
        return True
    return False


# --- shared secrets: Telegram and the mail relay ----------------------------------------------------


@pytest.mark.parametrize("make, header, secrets", [
    (lambda s: TelegramAdapter(secret=s, bot_id="1"), TELEGRAM_HEADER, telegram_secrets),
    (lambda s: EmailRelayAdapter(s, our_domains=["northwind.example"]), RELAY_HEADER, secrets_),
], ids=["telegram", "email_relay"])
@fuzz(150)
@given(data=st.data())
def test_shared_secret(make, header, secrets, data) -> None:
    secret = data.draw(secrets)
    adapter = make(secret)
    body = data.draw(st.binary(max_size=100))
    adapter.verify(raw(headers={header: secret}, body=body))
    assert refused(adapter.verify, raw(headers={header: data.draw(changed_text(secret))}, body=body))
    assert refused(adapter.verify, raw(headers={header: secret[:-1]}, body=body))
    assert refused(adapter.verify, raw(headers={header: secret + data.draw(header_chars)}, body=body))
    assert refused(adapter.verify, raw(headers={}, body=body))
    assert refused(adapter.verify, raw(headers={header: ""}, body=body))
    # Unconfigured: nothing is trusted, not even an empty header matching an empty secret.
    assert refused(make(None).verify, raw(headers={header: secret}, body=body))
    assert refused(make("").verify, raw(headers={header: ""}, body=body))


# --- Meta: HMAC-SHA256 over the raw body ----------------------------------------------------------------


@fuzz(200)
@given(secret=secrets_, body=st.binary(min_size=1, max_size=300), data=st.data())
def test_meta_signature(secret: str, body: bytes, data) -> None:
    adapter = MetaAdapter(secret, "verify")
    good = "sha256=" + signature(secret, body)
    adapter.verify(raw(headers={META_HEADER: good}, body=body))
    adapter.verify(raw(headers={META_HEADER.lower(): good.upper()}, body=body))  # hex and header names: any case
    assert refused(adapter.verify, raw(headers={META_HEADER: good}, body=data.draw(changed_bytes(body))))
    assert refused(adapter.verify, raw(headers={META_HEADER: good}, body=body + data.draw(st.binary(min_size=1))))
    assert refused(adapter.verify, raw(headers={META_HEADER: data.draw(changed_text(good, ignore_case=True))
                                                 .strip() or "x"}, body=body))
    assert refused(adapter.verify, raw(headers={META_HEADER: good[:-1]}, body=body))
    assert refused(adapter.verify, raw(headers={META_HEADER: signature(secret, body)}, body=body))  # no prefix
    assert refused(adapter.verify, raw(headers={}, body=body))
    assert refused(MetaAdapter(secret + "x", "verify").verify, raw(headers={META_HEADER: good}, body=body))
    assert refused(MetaAdapter(None, "verify").verify, raw(headers={META_HEADER: good}, body=body))


# --- Twilio: HMAC-SHA1 over the URL and the sorted form ------------------------------------------------

paths = st.sampled_from(["/webhooks/twilio/sms", "/webhooks/twilio/status", "/webhooks/twilio/voice",
                         "/webhooks/twilio/voice/recording"])
queries = st.one_of(st.just(""), st.from_regex(r"\?[a-z]{1,5}=[A-Za-z0-9%]{0,8}", fullmatch=True))
form_keys = st.sampled_from(["MessageSid", "From", "To", "Body", "NumMedia", "CallSid", "AccountSid"]) | st.text(
    st.characters(min_codepoint=0x41, max_codepoint=0x7A), min_size=1, max_size=10)
form_values = st.text(max_size=40)
forms = st.dictionaries(form_keys, form_values, min_size=1, max_size=6)


def sign(token: str, url: str, form: dict[str, str]) -> str:
    # werkzeug's MultiDict, as a Flask app would hand it, independent of the adapter's own form type.
    return RequestValidator(token).compute_signature(url, MultiDict(list(form.items())))


def twilio_request(url: str, form: dict[str, str], sig: str | None) -> RawRequest:
    return raw(url=url, headers={} if sig is None else {TWILIO_HEADER: sig}, form={k: [v] for k, v in form.items()})


@fuzz(200)
@given(token=secrets_, path=paths, query=queries, form=forms, data=st.data())
def test_twilio_signature(token: str, path: str, query: str, form: dict[str, str], data) -> None:
    check = TwilioSignature(token).verify
    base = "https://support.example"
    url = base + path + query
    good = sign(token, url, form)
    check(twilio_request(url, form, good))
    # Twilio signs https URLs with or without the default port; both verify.
    check(twilio_request(url, form, sign(token, base + ":443" + path + query, form)))

    assert refused(check, twilio_request(url, form, data.draw(changed_text(good))))
    assert refused(check, twilio_request(url, form, None))
    assert refused(check, twilio_request(url, form, ""))
    # A signature for one endpoint is not valid on another: any change after the host counts.
    # (Scheme and host are case-insensitive by RFC 3986 and come from our own PUBLIC_BASE_URL.)
    tail = path + query
    assert refused(check, twilio_request(base + data.draw(changed_text(tail)), form, good))
    key = data.draw(st.sampled_from(sorted(form)))
    changed = {**form, key: data.draw(changed_text(form[key]))} if form[key] else {**form, key: "x"}
    assume(sorted(changed.items()) != sorted(form.items()))
    assert refused(check, twilio_request(url, changed, good))
    assert refused(check, twilio_request(url, {**form, key + "x": "1"}, good))  # an added parameter
    if len(form) > 1:
        assert refused(check, twilio_request(url, {k: v for k, v in form.items() if k != key}, good))
    assert refused(TwilioSignature(token + "x").verify, twilio_request(url, form, good))
    assert refused(TwilioSignature(None).verify, twilio_request(url, form, good))

"""The Twilio SMS sender through the real twilio-python Client against a local fake Messages API."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime

import pytest

from services.notifier.senders import PermanentSendError, TransientSendError, parse_retry_after
from services.notifier.senders.twilio_sms import (
    OptedOut,
    TwilioSmsSender,
    classify_failure,
)
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi

BUSINESS = "+48732125400"
CUSTOMER = "+48601234567"
CALLBACK = "https://support.example.com/webhooks/twilio/status"


@pytest.fixture
def fake_twilio():
    fake = FakeTwilioApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def sender(fake_twilio):
    s = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, BUSINESS, api_base=fake_twilio.base_url,
                        status_callback=CALLBACK, timeout=2)
    yield s
    s.close()


def test_sends_through_the_configured_api_base(sender, fake_twilio) -> None:
    result = sender.send(CUSTOMER, "Dziękujemy! Odpowiemy do wtorku 10:00. 🙂")
    [sent] = fake_twilio.sent_to(CUSTOMER)
    assert sent.body == "Dziękujemy! Odpowiemy do wtorku 10:00. 🙂"
    assert sent.from_ == BUSINESS
    assert sent.status_callback == CALLBACK
    assert result.provider_message_id == sent.sid
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34


def test_reply_leaves_from_the_number_the_customer_wrote_to(sender, fake_twilio) -> None:
    sender.send(CUSTOMER, "hello", options={"from": "+48732125401", "status_callback": CALLBACK + "?o=1"})
    [sent] = fake_twilio.sent_to(CUSTOMER)
    assert sent.from_ == "+48732125401"
    assert sent.status_callback == CALLBACK + "?o=1"


def test_messaging_service_without_a_from_number(fake_twilio) -> None:
    s = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, None, api_base=fake_twilio.base_url, timeout=2)
    try:
        s.send(CUSTOMER, "hi", options={"messaging_service_sid": "MG9b8a7c6d5e4f30211203a4b5c6d7e8f9"})
        [sent] = fake_twilio.sent_to(CUSTOMER)
        assert sent.from_ is None and sent.messaging_service_sid == "MG9b8a7c6d5e4f30211203a4b5c6d7e8f9"
        assert "StatusCallback" not in sent.params  # none configured: none sent
        with pytest.raises(PermanentSendError, match="no From number"):
            s.send(CUSTOMER, "hi")
    finally:
        s.close()


def test_edge_and_region_in_the_environment_do_not_redirect_a_configured_base(monkeypatch, fake_twilio) -> None:
    monkeypatch.setenv("TWILIO_EDGE", "dublin")
    monkeypatch.setenv("TWILIO_REGION", "ie1")
    s = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, BUSINESS, api_base=fake_twilio.base_url + "/", timeout=2)
    try:
        s.send(CUSTOMER, "hi")
    finally:
        s.close()
    assert len(fake_twilio.sent_to(CUSTOMER)) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient(sender, fake_twilio, status) -> None:
    fake_twilio.fail_next(status)
    with pytest.raises(TransientSendError):
        sender.send(CUSTOMER, "hello")
    sender.send(CUSTOMER, "hello")  # the next call goes through
    assert len(fake_twilio.sent_to(CUSTOMER)) == 1


def test_an_html_error_page_from_a_proxy_is_transient(sender, fake_twilio) -> None:
    fake_twilio.fail_next(502, raw=b"<html><body>Bad Gateway</body></html>")
    with pytest.raises(TransientSendError):
        sender.send(CUSTOMER, "hello")


def test_rate_limit_is_transient_with_retry_after(sender, fake_twilio) -> None:
    fake_twilio.fail_next(429, code=20429, retry_after=7)
    with pytest.raises(TransientSendError) as info:
        sender.send(CUSTOMER, "hello")
    assert info.value.retry_after == 7


def test_rate_limit_without_retry_after(sender, fake_twilio) -> None:
    fake_twilio.fail_next(429)
    with pytest.raises(TransientSendError) as info:
        sender.send(CUSTOMER, "hello")
    assert info.value.retry_after is None


def test_opted_out_recipient_is_permanent_and_recognisable(sender, fake_twilio) -> None:
    fake_twilio.opt_out(CUSTOMER)
    with pytest.raises(OptedOut) as info:
        sender.send(CUSTOMER, "How did we do? Reply 1-5")
    assert isinstance(info.value, PermanentSendError)
    assert info.value.code == 21610 and info.value.address == CUSTOMER
    assert "opted out" in str(info.value)
    assert fake_twilio.sent == []


def test_programmed_21610_is_opted_out(sender, fake_twilio) -> None:
    fake_twilio.fail_next(400, code=21610)
    with pytest.raises(OptedOut):
        sender.send(CUSTOMER, "hello")


@pytest.mark.parametrize("code", [21211, 21614, 21612, 21408])
def test_bad_recipient_is_permanent(sender, fake_twilio, code) -> None:
    fake_twilio.fail_next(400, code=code)
    with pytest.raises(PermanentSendError, match=str(code)) as info:
        sender.send(CUSTOMER, "hello")
    assert not isinstance(info.value, OptedOut)


def test_invalid_number_rejected_by_the_api_is_permanent(sender, fake_twilio) -> None:
    with pytest.raises(PermanentSendError, match="21211"):
        sender.send("0048 601", "hello")


def test_rfc9457_problem_bodies_are_classified_too(sender, fake_twilio) -> None:
    # twilio-python raises TwilioServiceException (not TwilioRestException) for these.
    fake_twilio.fail_next(400, code=21211, problem=True)
    with pytest.raises(PermanentSendError, match="21211"):
        sender.send(CUSTOMER, "hello")
    fake_twilio.fail_next(503, code=20500, problem=True, retry_after=3)
    with pytest.raises(TransientSendError) as info:
        sender.send(CUSTOMER, "hello")
    assert info.value.retry_after == 3
    fake_twilio.fail_next(400, code=21610, problem=True)
    with pytest.raises(OptedOut):
        sender.send(CUSTOMER, "hello")


def test_wrong_credentials_are_retried_then_dead_lettered(fake_twilio) -> None:
    s = TwilioSmsSender(ACCOUNT_SID, "wrong-token", BUSINESS, api_base=fake_twilio.base_url, timeout=2)
    try:
        with pytest.raises(TransientSendError, match="credentials"):
            s.send(CUSTOMER, "hello")
    finally:
        s.close()
    assert fake_twilio.sent == []


def test_a_slow_api_times_out_as_transient(fake_twilio) -> None:
    fake_twilio.delay = 5.0
    s = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, BUSINESS, api_base=fake_twilio.base_url, timeout=0.3)
    started = time.monotonic()
    try:
        with pytest.raises(TransientSendError, match="timed out"):
            s.send(CUSTOMER, "hello")
    finally:
        s.close()
    assert time.monotonic() - started < 2


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, BUSINESS, api_base=f"http://127.0.0.1:{port}", timeout=1)
    try:
        with pytest.raises(TransientSendError, match="unreachable"):
            s.send(CUSTOMER, "hello")
    finally:
        s.close()


# --- the pure parts -----------------------------------------------------------------------------

CLASSIFY = [
    # status, code, expected type
    (429, 20429, TransientSendError),
    (400, 14107, TransientSendError),
    (400, 21611, TransientSendError),
    (500, 20500, TransientSendError),
    (503, None, TransientSendError),
    (None, None, TransientSendError),
    (401, 20003, TransientSendError),
    (400, 21610, OptedOut),
    (400, "21610", OptedOut),
    (400, 21211, PermanentSendError),
    (400, 21614, PermanentSendError),
    (400, 21612, PermanentSendError),
    (400, 21408, PermanentSendError),
    (400, 21617, PermanentSendError),
    (404, 20404, PermanentSendError),
    (400, None, PermanentSendError),
]


@pytest.mark.parametrize(("status", "code", "kind"), CLASSIFY)
def test_classify_failure(status, code, kind) -> None:
    error = classify_failure(status, code, "detail", address=CUSTOMER)
    assert type(error) is kind


NOW = datetime(2026, 7, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), ("", None), ("7", 7.0), (" 2.5 ", 2.5), ("-3", 0.0), ("inf", None), ("soon", None),
    ("Wed, 01 Jul 2026 12:00:30 GMT", 30.0), ("Wed, 01 Jul 2026 11:59:00 GMT", 0.0),
])
def test_parse_retry_after(value, seconds) -> None:
    assert parse_retry_after(value, now=NOW) == seconds

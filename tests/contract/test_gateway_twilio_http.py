"""Twilio webhooks at the gateway's HTTP edge: signed against PUBLIC_BASE_URL, answered with TwiML."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.twilio import TwilioSmsAdapter, TwilioStatusAdapter

TOKEN = "twilio-auth-token-0123456789abcdef"
PUBLIC = "https://support.example"
NOW = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)
SMS = {"MessageSid": "SM" + "a" * 32, "AccountSid": "AC" + "b" * 32, "From": "+48601234567", "To": "+48221002030",
       "Body": "Gdzie jest moja paczka?", "NumMedia": "0"}
STATUS = {"MessageSid": "SM" + "c" * 32, "MessageStatus": "delivered", "AccountSid": "AC" + "b" * 32}


@pytest.fixture
def client(example_config, intake):
    deps = GatewayDeps(config=example_config, intake=intake,
                       adapters={"twilio_sms": TwilioSmsAdapter(TOKEN), "twilio_status": TwilioStatusAdapter(TOKEN)},
                       public_base_url=PUBLIC, max_body_bytes=64 * 1024, clock=lambda: NOW)
    return create_app(deps).test_client()


def signed_post(client, path: str, form: dict, token: str = TOKEN):
    signature = RequestValidator(token).compute_signature(PUBLIC + path, form)
    return client.post(path, data=urlencode(form), content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": signature})


def test_sms_is_accepted_and_answered_with_empty_twiml(client, intake) -> None:
    r = signed_post(client, "/webhooks/twilio/sms", SMS)
    assert r.status_code == 200 and r.mimetype == "text/xml" and b"<Response" in r.data
    [env] = intake.accepted
    assert env.payload.sender.value == "+48601234567" and env.payload.meta["to"] == "+48221002030"


def test_sms_signed_with_another_token_is_403(client, intake) -> None:
    r = signed_post(client, "/webhooks/twilio/sms", SMS, token="someone-else")
    assert r.status_code == 403 and intake.accepted == []


def test_status_callback_becomes_a_delivery_status_on_the_bus(client, intake) -> None:
    r = signed_post(client, "/webhooks/twilio/status", STATUS)
    assert r.status_code == 200 and r.mimetype == "text/xml"
    [env] = intake.accepted
    assert env.type == "delivery.status" and env.payload.status == "delivered"
    # The same callback again has the same message id: downstream it changes nothing.
    signed_post(client, "/webhooks/twilio/status", STATUS)
    assert intake.accepted[1].message_id == env.message_id


def test_signed_but_malformed_sms_is_400(client, intake) -> None:
    r = signed_post(client, "/webhooks/twilio/sms", {k: v for k, v in SMS.items() if k != "From"})
    assert r.status_code == 400 and "From" in r.json["message"] and intake.accepted == []

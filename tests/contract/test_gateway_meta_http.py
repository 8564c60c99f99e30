"""Meta webhooks at the gateway's HTTP edge: the GET handshake, signed POSTs for three channels."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.meta import MetaAdapter, signature

SECRET = "meta-app-secret"
VERIFY = "meta-verify-token"
NOW = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.fixture
def client(example_config, intake):
    deps = GatewayDeps(config=example_config, intake=intake, adapters={"meta": MetaAdapter(SECRET, VERIFY)},
                       public_base_url="https://support.example", max_body_bytes=3 * 1024 * 1024, clock=lambda: NOW)
    return create_app(deps).test_client()


def signed(client, body: bytes, secret: str = SECRET):
    return client.post("/webhooks/meta", data=body, content_type="application/json",
                       headers={"X-Hub-Signature-256": "sha256=" + signature(secret, body)})


def first_fixture(channel: str, contains: str) -> bytes:
    for path in sorted((FIXTURES / channel).glob("*.json")):
        if contains in path.name:
            return path.read_bytes()
    raise AssertionError(f"no {channel} fixture named like {contains}")


def test_handshake_echoes_the_challenge_as_plain_text(client) -> None:
    r = client.get("/webhooks/meta", query_string={"hub.mode": "subscribe", "hub.verify_token": VERIFY,
                                                   "hub.challenge": "<script>1</script>"})
    assert r.status_code == 200 and r.mimetype == "text/plain" and r.data == b"<script>1</script>"
    r = client.get("/webhooks/meta", query_string={"hub.mode": "subscribe", "hub.verify_token": "nope",
                                                   "hub.challenge": "x"})
    assert r.status_code == 403


@pytest.mark.parametrize("channel", ["messenger", "whatsapp"])
def test_signed_text_message_is_accepted(client, intake, channel) -> None:
    r = signed(client, first_fixture(channel, "text"))
    assert r.status_code == 200
    assert intake.accepted and all(e.payload.channel == channel for e in intake.accepted if e.type == "inbound.message")


def test_bad_signature_is_403_and_nothing_accepted(client, intake) -> None:
    r = signed(client, first_fixture("messenger", "text"), secret="not-it")
    assert r.status_code == 403 and intake.accepted == []


def test_instagram_in_redirect_mode_is_still_accepted_for_the_router(client, intake, example_config) -> None:
    assert example_config.channel_mode("instagram") == "redirect"
    r = signed(client, first_fixture("instagram", "text"))
    assert r.status_code == 200 and [e.payload.channel for e in intake.accepted] == ["instagram"]


def test_whatsapp_statuses_become_delivery_statuses(client, intake) -> None:
    body = first_fixture("whatsapp", "status")
    r = signed(client, body)
    assert r.status_code == 200
    assert intake.accepted and {e.type for e in intake.accepted} == {"delivery.status"}


def test_signed_but_unexpected_json_is_200_and_parked(client, intake) -> None:
    r = signed(client, json.dumps({"object": "something_new", "entry": []}).encode())
    assert r.status_code == 200 and intake.accepted == []

"""The gateway's HTTP edge with a recording intake: what is accepted is handed over exactly once,
what is rejected gets a 4xx with a JSON error and hands over nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.telegram import TelegramAdapter

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "telegram"
SECRET = "test-secret_1"
NOW = datetime(2026, 11, 20, 16, 55, tzinfo=UTC)


@pytest.fixture
def client(example_config, intake):
    deps = GatewayDeps(config=example_config, intake=intake,
                       adapters={"telegram": TelegramAdapter(secret=SECRET, bot_id="123456")},
                       public_base_url="https://support.example", max_body_bytes=64 * 1024, clock=lambda: NOW)
    return create_app(deps).test_client()


def fixture_body(name: str) -> bytes:
    return (FIXTURES / f"{name}.json").read_bytes()


def post(client, body: bytes, secret: str | None = SECRET, **headers):
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    return client.post("/webhooks/telegram", data=body, headers=headers, content_type="application/json")


def test_signed_update_is_accepted_once_with_a_stable_id(client, intake) -> None:
    r1 = post(client, fixture_body("message_text"), **{"X-Correlation-Id": "corr-abc"})
    r2 = post(client, fixture_body("message_text"))
    assert r1.status_code == r2.status_code == 200
    assert r1.json["accepted"][0]["message_id"] == r2.json["accepted"][0]["message_id"]
    first = intake.accepted[0]
    assert first.correlation_id == "corr-abc"
    assert first.payload.text.startswith("Добрий день!")
    assert first.occurred_at == NOW


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_wrong_or_missing_secret_is_403_and_nothing_accepted(client, intake, secret) -> None:
    r = post(client, fixture_body("message_text"), secret=secret)
    assert r.status_code == 403
    assert r.json["error"] == "forbidden"
    assert intake.accepted == []


def test_signature_is_checked_before_parsing(client, intake) -> None:
    r = post(client, b"{not json", secret="wrong")
    assert r.status_code == 403


@pytest.mark.parametrize("body, problem", [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "JSON object"),
    (fixture_body("malformed_no_update_id"), "update_id"),
    (fixture_body("malformed_message_without_chat"), "chat.id"),
    ("\udcff".encode("utf-8", "surrogatepass"), "not JSON"),
])
def test_malformed_is_400_naming_the_problem(client, intake, body, problem) -> None:
    r = post(client, body)
    assert r.status_code == 400
    assert r.json["error"] == "malformed" and problem in r.json["message"]
    assert intake.accepted == []


def test_over_the_size_limit_is_413(client, intake) -> None:
    big = json.dumps({"update_id": 1, "message": {"text": "x" * 70_000}}).encode()
    r = post(client, big)
    assert r.status_code == 413 and r.json["error"] == "too_large"
    assert intake.accepted == []


@pytest.mark.parametrize("name", ["edited_message", "my_chat_member_blocked"])
def test_known_but_irrelevant_is_200_and_ignored(client, intake, name) -> None:
    r = post(client, fixture_body(name))
    assert r.status_code == 200 and r.json["accepted"] == []
    assert intake.accepted == []


def test_a_button_that_is_not_a_survey_is_acknowledged_and_ignored(client, intake) -> None:
    # Every pressed button is answered (answerCallbackQuery in the webhook's response), or the
    # customer's client keeps spinning; this one ("csat:5", not ours) publishes nothing.
    r = post(client, fixture_body("callback_query"))
    assert r.status_code == 200
    assert r.json == {"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2d9"}
    assert intake.accepted == []


@pytest.mark.parametrize("encode", [
    lambda text: text.replace('"callback_query"', '"callback\\u005fquery"').encode(),  # the key escaped
    lambda text: text.encode("utf-16"),  # JSON in UTF-16, which json.loads reads as well
], ids=["escaped_key", "utf16"])
def test_a_button_press_however_its_json_is_written_is_acknowledged(client, intake, encode) -> None:
    # The answer is found without parsing a customer's message twice (the body is looked at first);
    # these spellings of the same press must still be answered.
    r = post(client, encode(fixture_body("callback_query").decode()))
    assert r.status_code == 200
    assert r.json == {"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2d9"}


def test_unknown_routes_and_methods_answer_json(client) -> None:
    r = client.get("/webhooks/telegram")
    assert r.status_code == 405 and r.json["error"] == "method_not_allowed"
    r = client.post("/webhooks/nope")
    assert r.status_code == 404 and r.is_json

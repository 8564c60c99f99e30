"""Secrets never reach a stored error or a log line: the masking function and the logging filter."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from shared.log import setup_logging
from shared.redact import mask_secrets, remember
from shared.settings import load_settings

BOT_TOKEN = "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"  # the shape of Telegram's documented example


@pytest.mark.parametrize(("text", "secret", "kept"), [
    # python-telegram-bot's InvalidToken, as the notifier stored it in outbox.last_error
    (f"telegram refused: The token `{BOT_TOKEN}` was rejected by the server.", BOT_TOKEN, "110201543:***"),
    # an httpx error naming the request URL
    (f"telegram unreachable: POST https://api.telegram.org/bot{BOT_TOKEN}/getMe", BOT_TOKEN, "/bot110201543:***/"),
    ("broker unreachable: amqp://switchboard:Hunter2-broker@rabbit:5672//", "Hunter2-broker",
     "amqp://switchboard:***@rabbit:5672//"),
    ("(psycopg.OperationalError) connection to postgresql://sb:pg-S3cret@db:5432/sb failed", "pg-S3cret",
     "postgresql://sb:***@db:5432/sb"),
    ("GET https://graph.facebook.com/v21.0/me?access_token=EAAGm0PX4ZCpsBAKZA&fields=id → 400", "EAAGm0PX4ZCpsBAKZA",
     "access_token=***&fields=id"),
    ("headers: Authorization: Bearer sb_8bO2sQy1c3LxA0d7", "sb_8bO2sQy1c3LxA0d7", "Bearer ***"),
    ("401 Basic QUN4eHg6dHdpbGlvLWF1dGgtdG9rZW4=", "QUN4eHg6dHdpbGlvLWF1dGgtdG9rZW4=", "Basic ***"),
])
def test_secret_shapes_are_masked_and_the_rest_kept(text: str, secret: str, kept: str) -> None:
    masked = mask_secrets(text)
    assert secret not in masked
    assert kept in masked


def test_configured_secret_values_are_masked_wherever_they_appear() -> None:
    # A Twilio auth token is 32 hex characters: no shape gives it away, its value does.
    settings = load_settings({"TWILIO_AUTH_TOKEN": "9f3c1d2e4b5a69788f7e6d5c4b3a2910",
                              "SMTP_PASSWORD": "mail-pass-2026", "SURVEY_SECRET": "a-survey-secret-of-32-chars!!"})
    assert settings.twilio_auth_token
    text = "twilio said 20003 for 9f3c1d2e4b5a69788f7e6d5c4b3a2910; smtp login mail-pass-2026 refused"
    assert mask_secrets(text) == "twilio said 20003 for ***; smtp login *** refused"


def test_ordinary_text_is_left_alone() -> None:
    text = "order 4471 shipped on 2026-11-23 10:15, conversation SB-TGH4ISY7EZ, https://northwind.example/track"
    assert mask_secrets(text) == text


def test_masking_is_linear_on_hostile_text() -> None:
    hostile = "a://" + ":" * 100_000 + " token=" + "x" * 100_000 + " 1234:" + "A" * 100_000
    started = time.monotonic()
    mask_secrets(hostile)
    assert time.monotonic() - started < 1.0


def test_the_log_filter_masks_message_arguments_extras_and_tracebacks() -> None:
    remember(["a-meta-page-token-value"])
    out = io.StringIO()
    setup_logging("notifier", "INFO", stream=out)
    log = logging.getLogger("test.redact")
    try:
        raise RuntimeError(f"getMe failed for https://api.telegram.org/bot{BOT_TOKEN}/getMe")
    except RuntimeError as exc:
        log.exception("send failed: %s", exc, extra={"url": "https://graph.example/x?access_token=a-meta-page-token-value"})
    log.warning("broker %s unreachable", "amqp://u:broker-pw@h//")
    lines = out.getvalue()
    assert BOT_TOKEN not in lines and "a-meta-page-token-value" not in lines and "broker-pw" not in lines
    first, second = (json.loads(line) for line in lines.splitlines())
    assert "110201543:***" in first["msg"] and "110201543:***" in first["exc"] and "RuntimeError" in first["exc"]
    assert first["url"].endswith("access_token=***")
    assert second["msg"] == "broker amqp://u:***@h// unreachable"

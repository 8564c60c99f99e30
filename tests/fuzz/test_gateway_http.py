"""Schemathesis against the gateway's own OpenAPI document (/openapi.json), in process over WSGI.

The app is the one services mode builds — every adapter, configured with known secrets — but its
intake is a RecordingIntake, so the check "nothing published for a rejected request" can see what
would have been published. Each generated request is sent twice: as generated (whatever signature
headers schemathesis makes up: refused before parsing) and signed the way the provider would sign
it (by `ProviderSigner`, a WSGI layer in front of the app), so the parsers behind the signature
checks are fuzzed over HTTP too. Every answer is 2xx or 4xx, never 5xx; a 4xx published nothing;
an unsigned webhook is never accepted.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, urlencode

import pytest
import schemathesis
from flask import Flask
from schemathesis.checks import not_a_server_error
from schemathesis.transport.serialization import serialize_binary
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict
from werkzeug.wrappers import Request

from services.gateway.bootstrap import build
from services.gateway.channels import RawRequest
from services.gateway.channels.meta import signature
from services.gateway.channels.twilio import form_params
from shared.config import load_config
from shared.settings import Settings
from tests.conftest import EXAMPLE_CONFIG
from tests.fuzz.settings import fuzz
from tests.fuzz.support import NOW
from tests.support.gateway import RecordingIntake

PUBLIC = "https://support.example"
TELEGRAM_SECRET = "fuzz-telegram-secret"
TWILIO_TOKEN = "fuzz-twilio-auth-token-0123456789"
META_SECRET = "fuzz-meta-app-secret"
META_VERIFY = "fuzz-meta-verify-token"
RELAY_SECRET = "fuzz-relay-secret"
SURVEY_SECRET = "fuzz-survey-secret"
SIGN = "X-Fuzz-Sign"


class ProviderSigner:
    """WSGI middleware: a request carrying `X-Fuzz-Sign: 1` gets the headers its provider would
    have put on it — the shared secrets, Meta's HMAC of the exact body, Twilio's HMAC of the URL
    and form as the gateway will see them — and, for Meta's handshake, the right verify token."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.pop("HTTP_X_FUZZ_SIGN", None) == "1":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            if environ.get("REQUEST_METHOD") == "GET":
                query = [(k, v) for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
                         if k != "hub.verify_token"]
                environ["QUERY_STRING"] = urlencode([*query, ("hub.verify_token", META_VERIFY)])
            request = Request(dict(environ, **{"wsgi.input": io.BytesIO(body)}))
            form = request.form.to_dict(flat=False) if request.mimetype == "application/x-www-form-urlencoded" else {}
            seen = RawRequest(url=PUBLIC + request.full_path.rstrip("?"), headers={}, body=body, form=form,
                              received_at=NOW)
            params = form_params(seen)
            environ.update({
                "HTTP_X_TELEGRAM_BOT_API_SECRET_TOKEN": TELEGRAM_SECRET,
                "HTTP_X_SWITCHBOARD_RELAY_SECRET": RELAY_SECRET,
                "HTTP_X_HUB_SIGNATURE_256": "sha256=" + signature(META_SECRET, body),
                "HTTP_X_TWILIO_SIGNATURE": RequestValidator(TWILIO_TOKEN).compute_signature(
                    seen.url, MultiDict([(k, v) for k, vs in params.items() for v in vs])),
            })
        return self.app(environ, start_response)


def build_gateway() -> tuple[Flask, RecordingIntake]:
    config = load_config(EXAMPLE_CONFIG)
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-gateway-"))
    settings = Settings(config_path=str(EXAMPLE_CONFIG), broker_url="memory://",
                        database_url=f"sqlite:///{scratch / 'unused.db'}", public_base_url=PUBLIC, port=None,
                        max_body_bytes=64 * 1024, spool_dir=str(scratch / "spool"),
                        telegram_webhook_secret=TELEGRAM_SECRET, twilio_auth_token=TWILIO_TOKEN,
                        meta_app_secret=META_SECRET, meta_verify_token=META_VERIFY, email_relay_secret=RELAY_SECRET,
                        survey_secret=SURVEY_SECRET)
    # Exactly the services-mode app (every route, the survey pages, health); only what the intake
    # does is replaced: it records instead of publishing.
    app, intake = build(settings, config, clock=lambda: NOW)
    recording = RecordingIntake()
    intake.accept = recording.accept  # type: ignore[method-assign]
    app.wsgi_app = ProviderSigner(app.wsgi_app)
    return app, recording


@schemathesis.serializer("message/rfc822")
def raw_message(ctx, value) -> dict:
    """The mail relay's body is raw bytes; schemathesis has no serializer of its own for this type."""
    return {"data": serialize_binary(value)}


# Built at import: schemathesis' lazy pytest loader (from_fixture) does not work with pytest 9.
APP, INTAKE = build_gateway()
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


def nothing_published_when_rejected(intake: RecordingIntake):
    def check(ctx, response, case) -> None:
        if response.status_code >= 400:
            assert intake.accepted == [], (
                f"{case.method} {case.path} answered {response.status_code} but handed "
                f"{len(intake.accepted)} message(s) to the bus")
    return check


def unsigned_webhooks_are_refused(ctx, response, case) -> None:
    if case.method == "POST" and case.path.startswith("/webhooks/"):
        assert response.status_code in (403, 404, 405, 413), (
            f"an unsigned {case.path} was answered {response.status_code}, not 403")


@schema.parametrize()
@fuzz(60)
def test_gateway_answers_only_2xx_or_4xx_and_publishes_nothing_it_refuses(case) -> None:
    intake = INTAKE
    intake.accepted.clear()
    case.call_and_validate(checks=[not_a_server_error, nothing_published_when_rejected(intake),
                                   unsigned_webhooks_are_refused])
    intake.accepted.clear()
    case.call_and_validate(headers={SIGN: "1"}, checks=[not_a_server_error, nothing_published_when_rejected(intake)])


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("path, fixture, content_type", [
    ("/webhooks/telegram", "telegram/message_text.json", "application/json"),
    ("/webhooks/twilio/sms", "sms/sms_polish.txt", "application/x-www-form-urlencoded"),
    ("/webhooks/twilio/voice/recording", "phone/recording_completed.txt", "application/x-www-form-urlencoded"),
    ("/webhooks/meta", "whatsapp/image.json", "application/json"),
    ("/webhooks/email", "email/plain_question_en.eml", "message/rfc822"),
])
def test_the_signer_makes_requests_the_gateway_accepts(path, fixture, content_type) -> None:
    """The fuzzer's signed requests reach the parsers: a real payload signed by ProviderSigner is
    accepted and handed over once, and the same unsigned is refused with nothing handed over."""
    client = APP.test_client()
    body = (FIXTURES / fixture).read_bytes()
    INTAKE.accepted.clear()
    refused = client.post(path, data=body, content_type=content_type)
    assert refused.status_code == 403 and INTAKE.accepted == []
    accepted = client.post(path, data=body, content_type=content_type, headers={SIGN: "1"})
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    assert len(INTAKE.accepted) == 1


def test_the_signer_answers_meta_handshake() -> None:
    r = APP.test_client().get("/webhooks/meta?hub.mode=subscribe&hub.verify_token=x&hub.challenge=abc",
                              headers={SIGN: "1"})
    assert r.status_code == 200 and r.get_data(as_text=True) == "abc"

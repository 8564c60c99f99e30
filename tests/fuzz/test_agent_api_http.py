"""Schemathesis against the agent API's OpenAPI document (/api/v1/openapi.json), in process over
WSGI: the router's API as services/router/bootstrap.py builds it, on a SQLite database made by
shared.db (make_engine + migrate), a memory:// publisher that records what it publishes, and a
valid bearer token so the authenticated paths are exercised too. A few conversations are made
first by the router's own handler, and path parameters are sometimes their real ids.

Every answer is 2xx or 4xx, never 5xx; a 4xx stored and published nothing."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import schemathesis
from flask import Flask
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from sqlalchemy import func, select

from services.router import operations as ops
from services.router.bootstrap import build_api
from services.router.handlers import RouterDeps, handle_inbound
from services.router.models import Assignment, Message, RouterOutbox
from shared.bus.publisher import Publisher
from shared.config import load_config
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory, transaction
from shared.web import install_json_errors
from tests.conftest import EXAMPLE_CONFIG
from tests.fuzz.settings import fuzz
from tests.support.classify import Verdict

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)  # a Wednesday, in hours


class RecordingPublisher(Publisher):
    """Our publisher on memory://, recording every event it is asked to publish."""

    def __init__(self) -> None:
        super().__init__("memory://")
        self.published: list[Envelope] = []

    def publish(self, envelope: Envelope, **kwargs) -> None:
        self.published.append(envelope)


def build() -> tuple[Flask, object, RecordingPublisher, str, list[str]]:
    config = load_config(EXAMPLE_CONFIG)
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp(prefix='fuzz-api-')) / 'router.db'}")
    migrate(engine)
    sessions = session_factory(engine)
    publisher = RecordingPublisher()
    app = Flask("fuzz-agent-api")
    install_json_errors(app)
    app.register_blueprint(build_api(config, sessions, publisher, clock=lambda: NOW))
    deps = RouterDeps(config=config, sessions=sessions, classify=lambda *a: Verdict(),
                      detect_language=lambda text, hints: hints[0] if hints else "en")
    for n, (user, lang) in enumerate([("101", "pl"), ("102", "en"), ("103", "ru")]):
        msg = InboundMessage(channel="telegram", external_id=f"fuzz:{n}", sender=Identity("telegram", user),
                             reply_to=user, received_at=NOW, text="Where is my parcel?", language_hint=lang)
        handle_inbound(Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=f"c{n}",
                                     occurred_at=NOW), deps)
    with transaction(sessions) as s:
        token = ops.issue_token(s, "anna", NOW)  # anna leads the support team: she sees its conversations
        conversation_ids = list(s.scalars(select(Message.conversation_id)))
    return app, sessions, publisher, token, conversation_ids


# Built at import: schemathesis' lazy pytest loader (from_fixture) does not work with pytest 9.
APP, SESSIONS, PUBLISHER, TOKEN, CONVERSATIONS = build()
AUTH = {"Authorization": f"Bearer {TOKEN}"}
schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", APP)


@schema.hook
def before_generate_path_parameters(context, strategy):
    # Random ids only ever meet a 404: half the time, use a conversation that exists.
    if "{conversation_id}" in context.operation.path:
        return st.one_of(strategy, st.fixed_dictionaries({"conversation_id": st.sampled_from(CONVERSATIONS)}))
    return strategy


def stored() -> tuple[int, int, int]:
    with SESSIONS() as s:
        return tuple(s.scalar(select(func.count()).select_from(m)) for m in (Message, RouterOutbox, Assignment))


def nothing_changed_when_rejected(before: tuple[int, int, int], published_before: int):
    def check(ctx, response, case) -> None:
        if response.status_code >= 400:
            assert stored() == before, f"{case.method} {case.path} answered {response.status_code} but stored rows"
            assert len(PUBLISHER.published) == published_before, (
                f"{case.method} {case.path} answered {response.status_code} but published an event")
    return check


@schema.parametrize()
@fuzz(40)
def test_agent_api_answers_only_2xx_or_4xx_and_changes_nothing_it_refuses(case) -> None:
    for headers in (None, AUTH):  # as generated (no or a made-up token), then as anna
        check = nothing_changed_when_rejected(stored(), len(PUBLISHER.published))
        case.call_and_validate(headers=headers, checks=[not_a_server_error, check])


@pytest.mark.parametrize("path", ["/api/v1/conversations", f"/api/v1/conversations/{CONVERSATIONS[0]}"])
def test_the_token_reaches_the_authenticated_paths(path) -> None:
    client = APP.test_client()
    assert client.get(path).status_code == 401
    assert client.get(path, headers=AUTH).status_code == 200


def test_a_call_back_id_past_64_bits_is_not_found_not_a_server_error() -> None:
    # Found by the fuzz run above: SQLite cannot even compare such a number (OverflowError → 500).
    client = APP.test_client()
    assert client.post("/api/v1/callbacks/99999999999999999999/done", headers=AUTH).status_code == 404

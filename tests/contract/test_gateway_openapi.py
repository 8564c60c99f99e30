"""The gateway's OpenAPI document is valid OpenAPI 3 and lists exactly the routes the gateway serves.

The routes are made from the adapters' declared webhooks in `build_adapters` (the gateway's channel
registry), so this is what keeps the hand-written document from drifting from the registry."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from openapi_spec_validator import validate

from services.gateway.app import openapi_document
from services.gateway.bootstrap import build
from shared.settings import load_settings


def served_routes(app) -> set[tuple[str, str]]:
    return {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_the_document_is_valid_openapi() -> None:
    validate(openapi_document())


def test_the_document_and_the_served_routes_are_the_same(example_config, tmp_path) -> None:
    settings = load_settings({}, BROKER_URL="memory://", SWITCHBOARD_SPOOL_DIR=str(tmp_path))
    app, _ = build(settings, example_config, clock=lambda: datetime.now(UTC), embedded=False)
    documented = {(path, method) for path, item in openapi_document()["paths"].items() for method in item}
    assert served_routes(app) == documented


def test_the_document_is_served(example_config, tmp_path) -> None:
    settings = load_settings({}, BROKER_URL="memory://", SWITCHBOARD_SPOOL_DIR=str(tmp_path))
    app, _ = build(settings, example_config, clock=lambda: datetime.now(UTC))
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert "/webhooks/email" in response.get_json()["paths"]

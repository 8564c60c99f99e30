"""The gateway's OpenAPI document is valid OpenAPI 3 and lists exactly the routes the gateway serves.

The routes are made from the adapters' declared webhooks in `build_adapters` (the gateway's channel
registry) and the document from the same adapters' OpenAPI parts (services/gateway/openapi.py), so
what is served and what is documented come from one list."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from services.gateway import openapi
from services.gateway.bootstrap import build, build_adapters
from services.gateway.channels import Webhook
from shared.settings import load_settings

#: The document as services/gateway/openapi.yaml had it by hand for every channel, before each
#: adapter's part moved next to its module: the channels it had must be documented exactly so still.
SNAPSHOT = Path(__file__).with_name("gateway_openapi.snapshot.json")


@pytest.fixture
def document(example_config) -> dict:
    return openapi.assemble(build_adapters(load_settings({}), example_config, embedded=False).values())


def served_routes(app) -> set[tuple[str, str]]:
    return {(re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())
            for rule in app.url_map.iter_rules() if rule.endpoint != "static"
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def test_the_document_is_valid_openapi(document) -> None:
    validate(document)


def test_the_channels_there_were_are_documented_as_before(document) -> None:
    before = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    # A channel added since adds its own path and components; everything the snapshot has is unchanged.
    kept = {**document, "paths": {p: item for p, item in document["paths"].items() if p in before["paths"]},
            "components": {section: {name: value for name, value in entries.items()
                                     if name in before["components"].get(section, {})}
                           for section, entries in document["components"].items()}}
    assert kept == before
    assert set(before["paths"]) <= set(document["paths"])


def test_the_document_and_the_served_routes_are_the_same(example_config, tmp_path) -> None:
    settings = load_settings({}, BROKER_URL="memory://", SWITCHBOARD_SPOOL_DIR=str(tmp_path))
    app, _ = build(settings, example_config, clock=lambda: datetime.now(UTC), embedded=False)
    documented = {(path, method) for path, item in app.test_client().get("/openapi.json").get_json()["paths"].items()
                  for method in item}
    assert served_routes(app) == documented


def test_the_document_is_served(example_config, tmp_path, document) -> None:
    settings = load_settings({}, BROKER_URL="memory://", SWITCHBOARD_SPOOL_DIR=str(tmp_path))
    app, _ = build(settings, example_config, clock=lambda: datetime.now(UTC))
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    assert response.get_json() == json.loads(json.dumps(document))


class _Undocumented:
    """An adapter whose module (this test) has no OpenAPI part beside it."""

    channel_family = "fax"
    webhook = Webhook("/webhooks/fax", "fax")


def test_an_adapter_without_its_openapi_part_is_named() -> None:
    with pytest.raises(ValueError, match="_Undocumented has no OpenAPI part"):
        openapi.assemble([_Undocumented()])  # type: ignore[list-item]

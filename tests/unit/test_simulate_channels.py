"""`switchboard simulate` covers every channel, each at a route the gateway serves: its channels come
from shared/contracts.py and its paths from the adapters' declared webhooks, so neither can drift."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from services import simulate
from services.gateway.bootstrap import ADAPTERS, build_adapters
from services.gateway.channels import RawRequest, StatusParser
from shared.contracts import CHANNELS, InboundMessage
from shared.settings import load_settings


@pytest.fixture
def served_paths(example_config) -> set[str]:
    adapters = build_adapters(load_settings({}), example_config, embedded=True)
    return {adapter.webhook.path for adapter in adapters.values()}


def test_every_channel_can_be_simulated() -> None:
    # Phone is simulated as a whole call (build_call), every other channel as one message.
    assert {("phone" if c == "call" else c) for c in simulate.CHANNELS} == set(CHANNELS)


@pytest.mark.parametrize("channel", [c for c in simulate.CHANNELS if c != "call"])
def test_a_simulated_message_goes_to_a_served_route(channel, served_paths) -> None:
    assert simulate.build(channel, "Where is my parcel?").path in served_paths


def test_a_simulated_call_goes_to_served_routes(served_paths) -> None:
    paths = {request.path for request in simulate.build_call("Please call me back")}
    assert len(paths) == 5 and paths <= served_paths


def test_an_unknown_channel_names_the_ones_there_are() -> None:
    with pytest.raises(ValueError, match="telegram"):
        simulate.build("fax", "hello")


def test_the_cli_offers_exactly_the_simulated_channels() -> None:
    from services.cli import parser

    assert [parser().parse_args(["simulate", c, "hi"]).channel for c in simulate.CHANNELS] == list(simulate.CHANNELS)
    with pytest.raises(SystemExit):
        parser().parse_args(["simulate", "fax", "hi"])


@pytest.mark.parametrize("channel", [c for c in simulate.CHANNELS if c != "call"])
def test_a_simulated_message_is_taken_by_the_adapter_it_goes_to(channel, example_config, monkeypatch) -> None:
    # The adapter's own simulation, signed with the development secret `make run` accepts.
    for env in ("TELEGRAM_WEBHOOK_SECRET", "TWILIO_AUTH_TOKEN", "META_APP_SECRET", "EMAIL_RELAY_SECRET"):
        monkeypatch.delenv(env, raising=False)
    request = simulate.build(channel, "Where is my parcel?", sender="+48601234567" if channel != "email" else None)
    adapter = next(a for a in build_adapters(load_settings({}), example_config, embedded=True).values()
                   if a.webhook.path == request.path and not isinstance(a, StatusParser))
    raw = RawRequest(url="http://127.0.0.1:8080" + request.path, headers=request.headers, body=request.body,
                     form={k: [v] for k, v in parse_qsl(request.body.decode())}
                     if "form-urlencoded" in request.headers["Content-Type"] else {},
                     received_at=datetime.now(UTC))
    adapter.verify(raw)
    [message] = adapter.parse(raw)
    assert isinstance(message, InboundMessage)
    assert (message.channel, message.text) == (channel, "Where is my parcel?")


def test_the_registry_names_each_adapter_once() -> None:
    names = [line.name for line in ADAPTERS]
    assert len(names) == len(set(names))

"""What every parser property checks, and strategies shared by the parser properties."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from services.gateway.channels import Malformed
from shared.contracts import PAYLOAD_TYPES, DeliveryStatus, Envelope, decode, derive_id, encode

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)

#: Any JSON document json.loads can return (NaN and the infinities too: Python's json accepts them).
json_leaves = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
               | st.integers(min_value=-(2**70), max_value=2**70))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=16,
)


def sometimes_wrong(right: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the right shape, sometimes any JSON value in its place: how a hostile or a newer
    provider payload differs from the documented one."""
    return st.one_of(right, right, right, json_values)


def parsed_or_malformed(parse: Callable[[], Any]) -> Any:
    """The parser's result, or None when it refused with Malformed. Any other exception fails the
    property: at the gateway it would be a 500."""
    try:
        return parse()
    except Malformed as exc:
        assert str(exc), "a Malformed must name the problem"
        return None


def assert_publishable(items: list[Any]) -> None:
    """Each item (InboundMessage, DeliveryStatus, SurveyAnswer...) survives what the gateway does
    with it: wrapped, encoded against its contract, serialised to JSON for the bus, and decoded by
    the consumer into the very same value."""
    for item in items:
        assert (item.TYPE, item.VERSION) in PAYLOAD_TYPES, f"{type(item).__name__} has no contract"
        key = item.provider_message_id if isinstance(item, DeliveryStatus) else item.external_id
        envelope = Envelope.wrap(item, message_id=derive_id(item.channel, key), correlation_id="fuzz",
                                 occurred_at=NOW)
        wire = json.dumps(encode(envelope))
        assert decode(json.loads(wire)).payload == item

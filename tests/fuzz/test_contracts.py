"""The bus contracts on hostile bodies: a body of every message type with one field replaced by any
JSON value, dropped, or joined by an unknown one decodes to an envelope or is refused with a
ContractError (poison → the dead-letter queue), never another exception (which the consumer would
retry as a transient failure); and whatever decodes is encoded again to a body that decodes to the
same envelope."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.contracts import ContractError, Envelope, decode, encode
from tests.contract.bus_samples import envelopes
from tests.fuzz.settings import fuzz
from tests.fuzz.support import json_values

BODIES = [json.loads(json.dumps(encode(env))) for env in envelopes()]
# Values near a field's own shape as well as any JSON: the checks' edges, not only wrong types.
near_values = st.sampled_from([
    "", "sms", "fax", "yes", "5", "abcdefgh12", "2026-11-20", "2026-11-20T16:55:00", "2026-11-20T16:55:00Z",
    "yesterday", "a\x00b", "\ud800", "x" * 321, 0, -1, 1, 11, 2.0, 2.5, True, None, [], {}, ["+48601234567"],
    {"kind": "phone", "value": "+48601234567"}, [{"content_type": "text/plain"}], [{"content_type": 1}],
])


@st.composite
def hostile_bodies(draw) -> dict:
    body = json.loads(json.dumps(draw(st.sampled_from(BODIES))))
    target = body if draw(st.booleans()) and draw(st.booleans()) else body["payload"]
    if isinstance(target.get("sender"), dict) and draw(st.booleans()):
        target = target["sender"]
    change = draw(st.sampled_from(["replace", "replace", "drop", "add"]))
    if change == "replace":
        target[draw(st.sampled_from(sorted(target)))] = draw(near_values | json_values)
    elif change == "drop":
        del target[draw(st.sampled_from(sorted(target)))]
    else:
        target[draw(st.text(max_size=8))] = draw(near_values | json_values)
    return body


@fuzz(max_examples=400)
@given(hostile_bodies())
def test_a_hostile_body_decodes_or_is_a_contract_error(body: dict) -> None:
    try:
        envelope = decode(body)
    except ContractError as exc:
        assert str(exc).startswith(("the message does not match its contract", "unknown message type"))
        return
    wire = json.dumps(encode(anew(envelope)))
    # Compared as JSON text: a NaN in `meta` is never equal to itself.
    assert json.dumps(encode(anew(decode(json.loads(wire))))) == wire


def anew(envelope: Envelope) -> Envelope:
    """The same envelope without the wire form that decoding kept: encoding it dumps and checks."""
    return Envelope.wrap(envelope.payload, message_id=envelope.message_id, correlation_id=envelope.correlation_id,
                         occurred_at=envelope.occurred_at)

"""The gateway's read model of whom a call rings: the projection rules, pure (no database, no bus).

Events of one phone can arrive in any order (retries, competing consumers); the table only moves
forward, and a resolved conversation rings the team."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.owners import Known, rings, supersedes
from shared.contracts import Envelope, PhoneOwnership, decode, encode

AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def event(sequence: int, *, owner: str | None = "anna", is_open: bool = True) -> PhoneOwnership:
    return PhoneOwnership(conversation_id="c1", phones=("+48601234567",), owner_id=owner, open=is_open,
                          sequence=sequence, changed_at=AT)


def test_the_first_event_of_a_phone_is_taken() -> None:
    assert supersedes(event(5), None)


def test_a_later_assignment_replaces_an_earlier_one_and_never_the_reverse() -> None:
    assert supersedes(event(6, owner="jonas"), Known(5, True))
    assert not supersedes(event(5, owner="anna"), Known(6, True))  # the transfer's event came first


def test_a_resolution_closes_the_assignment_it_carries_and_a_late_copy_of_that_does_not_reopen() -> None:
    assert supersedes(event(6, is_open=False), Known(6, True))
    assert not supersedes(event(6, owner="jonas"), Known(6, False))
    assert not supersedes(event(5, is_open=False), Known(6, True))  # an older resolution: the conversation reopened


def test_a_reopening_or_a_new_conversation_after_a_resolution_is_taken() -> None:
    assert supersedes(event(7), Known(6, False))


def test_the_same_event_twice_changes_nothing() -> None:
    assert not supersedes(event(6), Known(6, True))
    assert not supersedes(event(6, is_open=False), Known(6, False))


@pytest.mark.parametrize(("owner", "is_open", "expected"), [
    ("anna", True, "anna"), (None, True, None), ("anna", False, None), (None, False, None)])
def test_only_an_open_conversations_owner_is_rung(owner, is_open, expected) -> None:
    assert rings(owner, is_open) == expected


def test_the_event_round_trips_and_refuses_what_a_gateway_would_not_store() -> None:
    env = Envelope.wrap(event(3), message_id="e1", correlation_id="c", occurred_at=AT)
    body = encode(env)
    assert body["type"] == "ownership.phone" and decode(body) == env
    from shared.contracts import ContractError

    for bad in ({"phones": []}, {"phones": ["+4860" * 10]}, {"sequence": -1}, {"extra": 1}):
        with pytest.raises(ContractError):
            decode({**body, "payload": {**body["payload"], **bad}})


def test_the_event_reaches_only_the_gateways_queue() -> None:
    from shared.bus.topology import GATEWAY_OWNERS, QUEUES

    takers = [q.name for q in QUEUES.values()
              if any(k.split(".")[0] in ("#", PhoneOwnership.TYPE.split(".")[0]) for k in q.bindings)]
    assert takers == [GATEWAY_OWNERS.name]

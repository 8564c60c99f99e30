"""Flood control's token bucket as pure logic: a burst earns `burst` notices, then one per `refill`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.router.flood import Bucket, Policy, level, take

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
POLICY = Policy(burst=5, refill=timedelta(minutes=2))


def run(times: list[datetime], buckets: int = 1) -> list[bool]:
    state: list[Bucket | None] = [None] * buckets
    out = []
    for at in times:
        allowed, state = take(state, POLICY, at)
        out.append(allowed)
    return out


def test_a_burst_earns_the_first_notices_only() -> None:
    # Twenty messages in twenty seconds: five notices, the rest stored without one.
    assert run([T0 + timedelta(seconds=i) for i in range(20)]) == [True] * 5 + [False] * 15


def test_the_bucket_refills_one_notice_per_refill_up_to_the_burst() -> None:
    assert run([T0] * 5 + [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2), T0 + timedelta(minutes=3)]) == \
        [True] * 5 + [False, True, False]
    assert level(Bucket(0.0, T0), POLICY, T0 + timedelta(days=1)) == 5.0  # never more than the burst


def test_a_sender_writing_at_a_human_pace_is_never_held_back() -> None:
    assert all(run([T0 + timedelta(minutes=2 * i) for i in range(50)]))


def test_every_bucket_must_have_a_token_and_a_refusal_takes_none() -> None:
    empty, full = Bucket(0.0, T0), Bucket(5.0, T0)
    allowed, after = take([full, empty], POLICY, T0)
    assert not allowed and [b.tokens for b in after] == [5.0, 0.0]
    allowed, after = take([full, Bucket(1.0, T0)], POLICY, T0)
    assert allowed and [b.tokens for b in after] == [4.0, 0.0]


def test_a_policy_that_never_notifies_is_refused() -> None:
    with pytest.raises(ValueError):
        Policy(burst=0, refill=timedelta(minutes=1))

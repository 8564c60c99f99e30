"""Which delay tier a failed message waits in: never sooner than the provider asked, the backoff's
jitter kept as a spread over neighbouring tiers, and a provider's retry_after read from any exception."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from services.notifier.senders import TransientSendError
from shared.bus.consumer import backoff, retry_after_of
from shared.bus.topology import RETRY_TIERS, choose_tier


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0])
def test_a_short_delay_waits_in_the_smallest_tier(delay: float) -> None:
    assert choose_tier(delay, u=0.99) == RETRY_TIERS[0]


@pytest.mark.parametrize("tier", RETRY_TIERS)
@pytest.mark.parametrize("u", [0.0, 0.5, 0.999])
def test_a_delay_equal_to_a_tier_waits_exactly_that_tier(tier: int, u: float) -> None:
    assert choose_tier(float(tier), u=u) == tier


def test_a_delay_between_two_tiers_goes_to_one_of_them_and_waits_as_long_on_average() -> None:
    # 10 s lies between the 5 s and 15 s tiers, half way: half the draws go each way.
    assert choose_tier(10.0, u=0.999) == 5
    assert choose_tier(10.0, u=0.0) == 15
    rng = random.Random(7)
    waits = [choose_tier(10.0, u=rng.random()) for _ in range(4000)]
    assert set(waits) == {5, 15}
    assert sum(waits) / len(waits) == pytest.approx(10.0, abs=0.3)


def test_past_the_largest_tier_the_largest() -> None:
    assert choose_tier(3600.0, u=0.0) == max(RETRY_TIERS)
    assert choose_tier(10.0, at_least=3600.0, u=0.0) == max(RETRY_TIERS)


@pytest.mark.parametrize("retry_after", [0.5, 1.0, 3.0, 5.0, 6.0, 42.0, 61.0, 299.0])
def test_never_sooner_than_the_provider_asked(retry_after: float) -> None:
    rng = random.Random(retry_after)
    for attempt in range(1, 13):
        for _ in range(50):
            delay = max(backoff(attempt, rng=rng), retry_after)
            assert choose_tier(delay, at_least=retry_after, u=rng.random()) >= retry_after


def test_a_retry_after_of_five_seconds_waits_five_seconds_not_longer() -> None:
    assert choose_tier(5.0, at_least=5.0, u=0.999) == 5
    # ... and 6 s cannot round down to 5: the next tier up.
    assert choose_tier(6.0, at_least=6.0, u=0.0) == 15


def test_a_burst_of_failures_is_spread_over_two_tiers_not_retried_in_one_instant() -> None:
    rng = random.Random(3)
    third_attempts = {choose_tier(backoff(3, rng=rng), u=rng.random()) for _ in range(200)}
    assert third_attempts == {1, 5}


@pytest.mark.parametrize("exc, expected", [
    (TransientSendError("telegram flood control", retry_after=7), 7.0),
    (TransientSendError("429", retry_after=2.5), 2.5),
    (TransientSendError("timed out"), None),
    (RuntimeError("no retry_after at all"), None),
])
def test_retry_after_is_read_from_the_exception(exc: Exception, expected: float | None) -> None:
    assert retry_after_of(exc) == expected


class _Odd(Exception):
    def __init__(self, retry_after: object):
        super().__init__("odd")
        self.retry_after = retry_after


@pytest.mark.parametrize("value, expected", [
    (timedelta(seconds=12), 12.0),  # python-telegram-bot's RetryAfter with PTB_TIMEDELTA=1
    ("30", None), (True, None), (-1, None), (0, None), (float("nan"), None), (float("inf"), None),
])
def test_a_retry_after_that_is_not_a_positive_number_of_seconds_is_ignored(value: object,
                                                                            expected: float | None) -> None:
    assert retry_after_of(_Odd(value)) == expected

"""The inbox's login throttle as pure logic: backoff per address and per agent, bounded for the agent,
never in the way of an agent at an address they use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.router.login_throttle import (
    ADDRESS,
    AGENT,
    Policy,
    Record,
    after_failure,
    login_wait,
    retry_after,
    seconds,
)

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)


def fail(times: int, policy: Policy, *, start: datetime = T0, every: timedelta = timedelta(0)) -> Record:
    record = None
    for i in range(times):
        record = after_failure(record, policy, start + every * i)
    assert record is not None
    return record


def test_the_first_failures_are_free_then_the_wait_doubles() -> None:
    policy = Policy(free=3, base=timedelta(seconds=1), cap=timedelta(minutes=10), forget_after=timedelta(hours=1))
    waits = [retry_after(fail(n, policy), policy, T0).total_seconds() for n in range(1, 9)]
    assert waits == [0, 0, 0, 1, 2, 4, 8, 16]


def test_twenty_wrong_passwords_in_two_seconds_are_not_all_checked() -> None:
    # The review's probe: 20 tries in 1.7 s. Tries are checked only once the wait has passed.
    record, checked, now = None, 0, T0
    for _ in range(20):
        wait = login_wait(address=record, agent=record, known_address=False, now=now)
        if wait == timedelta(0):
            checked += 1
            record = after_failure(record, AGENT, now)
        now += timedelta(milliseconds=85)
    assert checked == AGENT.free + 2  # the free ones, the one that starts a 1 s wait, one after it (then 2 s)


def test_the_agents_wait_is_bounded_however_long_the_attack() -> None:
    record = fail(10_000, AGENT)
    assert retry_after(record, AGENT, T0) == AGENT.cap == timedelta(minutes=1)
    assert retry_after(record, AGENT, T0 + AGENT.cap) == timedelta(0)


def test_an_addresss_wait_grows_to_its_own_longer_cap() -> None:
    assert retry_after(fail(40, ADDRESS), ADDRESS, T0) == timedelta(minutes=15)


def test_failures_are_forgotten_after_a_quiet_while() -> None:
    record = fail(8, AGENT)
    later = T0 + AGENT.forget_after
    assert retry_after(record, AGENT, later) == timedelta(0)
    assert after_failure(record, AGENT, later).failures == 1  # counting starts over


def test_an_attacker_failing_as_the_agent_does_not_lock_the_agent_out_at_a_known_address() -> None:
    attacked = fail(50, AGENT)
    assert login_wait(address=None, agent=attacked, known_address=False, now=T0) == timedelta(minutes=1)
    assert login_wait(address=None, agent=attacked, known_address=True, now=T0) == timedelta(0)


def test_a_known_address_that_fails_itself_is_throttled_like_any_other() -> None:
    address = fail(ADDRESS.free + 3, ADDRESS)
    assert login_wait(address=address, agent=fail(50, AGENT), known_address=True, now=T0) == timedelta(seconds=60)
    assert login_wait(address=address, agent=None, known_address=True, now=T0) == timedelta(seconds=4)


def test_a_token_login_names_no_agent_so_only_its_address_counts() -> None:
    assert login_wait(address=fail(2, ADDRESS), agent=None, known_address=False, now=T0) == timedelta(0)


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [seconds(timedelta(seconds=s)) for s in (0, 0.2, 1, 1.5, 59.01)] == [1, 1, 1, 2, 60]

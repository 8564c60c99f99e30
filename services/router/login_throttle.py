"""Login throttling for the inbox: how long a client must wait before its next password is checked.

Two counters of recent failures, each with exponential backoff after a few free tries:

* per client address, over every agent: slows one machine guessing many agents' passwords. Long
  cap (15 min): only the address that keeps failing waits.
* per agent, over every address: slows a guesser who spreads over many addresses. Short cap
  (1 min), because anybody who knows an agent's id can fail on purpose and the agent must not be
  locked out for long. It does not apply to an address the agent logged in from recently (and
  that is not throttled itself), nor to a login with the API token (256 random bits, only the
  address counter applies): an attacker who fails on purpose as "anna" delays nobody at Anna's
  usual desk.

A refused (429) try is not counted: only checked passwords are guesses, so a throttled attacker
cannot push the wait further by hammering. Failures are forgotten some time after the last one.

Pure: the records come from the database (inbox.py keeps them in `login_throttle`), `now` is a
parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    free: int  # failures answered without any wait
    base: timedelta  # the first wait after the free ones; each further failure doubles it
    cap: timedelta  # the longest wait
    forget_after: timedelta  # a record whose last failure is older than this starts over

    def wait_after(self, failures: int) -> timedelta:
        over = failures - self.free - 1
        if over < 0:
            return timedelta(0)
        return min(self.cap, self.base * (2 ** min(over, 30)))


ADDRESS = Policy(free=10, base=timedelta(seconds=1), cap=timedelta(minutes=15), forget_after=timedelta(hours=1))
AGENT = Policy(free=5, base=timedelta(seconds=1), cap=timedelta(minutes=1), forget_after=timedelta(minutes=15))
#: An address the agent logged in from within this long is "known" and skips the agent's counter.
KNOWN_ADDRESS_FOR = timedelta(days=30)


@dataclass(frozen=True)
class Record:
    failures: int
    last_failure_at: datetime


def is_current(record: Record | None, policy: Policy, now: datetime) -> bool:
    return record is not None and now - record.last_failure_at < policy.forget_after


def retry_after(record: Record | None, policy: Policy, now: datetime) -> timedelta:
    """How long from `now` until the next try may be checked (zero: now)."""
    if not is_current(record, policy, now):
        return timedelta(0)
    assert record is not None
    return max(timedelta(0), record.last_failure_at + policy.wait_after(record.failures) - now)


def after_failure(record: Record | None, policy: Policy, now: datetime) -> Record:
    failures = record.failures + 1 if is_current(record, policy, now) and record is not None else 1
    return Record(failures=failures, last_failure_at=now)


def seconds(wait: timedelta) -> int:
    """A Retry-After value: whole seconds, rounded up, at least 1."""
    whole = int(wait.total_seconds())
    return max(1, whole + (1 if wait.total_seconds() > whole else 0))


def login_wait(*, address: Record | None, agent: Record | None, known_address: bool, now: datetime,
               address_policy: Policy = ADDRESS, agent_policy: Policy = AGENT) -> timedelta:
    """The wait before this login may be checked. `agent` is None for a token login (no agent named)
    or an unknown agent id; `known_address`: the agent logged in from this address recently."""
    wait = retry_after(address, address_policy, now)
    if agent is not None and not (known_address and wait == timedelta(0)):
        wait = max(wait, retry_after(agent, agent_policy, now))
    return wait

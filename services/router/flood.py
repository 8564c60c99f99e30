"""Flood control per sender: a token bucket per customer (every identity they write from) and per
sender address, deciding whether a customer's message earns its owner a notice.

A burst (someone pasting twenty lines as twenty messages, a script, an attacker) is stored in full
— nothing accepted is lost and the inbox shows it — but only the first `burst` messages, then one
per `refill`, tell the owner; the rest wait in the conversation for the next notice or the inbox.

Why the router and not the gateway: gateway replicas each see only their share of the webhooks
(and what they spool while the broker is away), and they know addresses, not customers. The
router's buckets live in the one database every router replica shares, and the router has just
resolved which customer the address belongs to, so a sender who moves between channels or
addresses still drains one bucket.

Pure: the buckets come from `sender_buckets`, `now` is a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Policy:
    burst: int  # messages in a row that each earn a notice
    refill: timedelta  # then one more per this long

    def __post_init__(self) -> None:
        if self.burst < 1 or self.refill <= timedelta(0):
            raise ValueError("a bucket holds at least one token and refills at a positive rate")


def keys(customer_id: str, kind: str, value: str) -> list[str]:
    """The buckets a customer's message from this address draws on: the customer's and the address's."""
    return [f"customer:{customer_id}", f"address:{kind}:{value}"[:400]]


@dataclass(frozen=True)
class Bucket:
    tokens: float
    at: datetime  # when `tokens` was counted


def level(bucket: Bucket | None, policy: Policy, now: datetime) -> float:
    """Tokens in the bucket at `now`: a new sender's bucket is full; it refills up to `burst`."""
    if bucket is None:
        return float(policy.burst)
    elapsed = max(0.0, (now - bucket.at).total_seconds())
    return min(float(policy.burst), bucket.tokens + elapsed / policy.refill.total_seconds())


def take(buckets: list[Bucket | None], policy: Policy, now: datetime) -> tuple[bool, list[Bucket]]:
    """(whether this message earns a notice, the buckets after it). A notice takes one token from
    every bucket and needs one in each; a message that earns none takes nothing, so a sender who
    keeps writing is told about again as soon as a token is back."""
    levels = [level(b, policy, now) for b in buckets]
    allowed = all(tokens >= 1.0 for tokens in levels)
    return allowed, [Bucket(tokens - 1.0 if allowed else tokens, now) for tokens in levels]

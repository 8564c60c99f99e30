"""Outbound senders: one per channel family, one interface, a registry.

A sender delivers one text to one address and either returns the provider's message id or raises:
- `TransientSendError` (timeouts, 5xx, 429 with an optional retry_after): try again later;
- `PermanentSendError` (blocked bot, opted-out number, invalid address): record, never retry.
With a provider's credentials unset, the channel's sender is the sandbox one (records and prints).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol


class TransientSendError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """An HTTP Retry-After header (delta-seconds or an HTTP date) as seconds from `now`, or None
    when absent or unreadable; every HTTP provider (Twilio, Meta) answers a 429 with it."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class PermanentSendError(Exception):
    pass


class ChannelBusy(TransientSendError):
    """A provider already has as many sends waiting on it as it may: this one tries again later
    rather than take a consumer that another channel's message needs."""


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str | None


class Sender(Protocol):
    channel: str

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult: ...


class UnknownChannel(LookupError):
    pass


class Registry:
    """The senders by channel, and a bulkhead: at most `max_in_flight` sends wait on one provider
    at a time (SMS and phone share Twilio's), so a slow provider (each call up to its timeout)
    cannot take every consumer thread and hold up the other channels. None: no limit.

    A send that finds its provider full waits up to `wait` seconds for a place: a healthy provider
    frees one within milliseconds, so a busy channel costs no retries; only a slow one turns the
    wait into ChannelBusy, and the message goes back to the bus for later."""

    def __init__(self, senders: dict[str, Sender], *, max_in_flight: int | None = None, wait: float = 1.0):
        self._senders = senders
        self.max_in_flight = max_in_flight
        self.wait = wait
        # A provider's places, one semaphore per sender object (SMS and phone share Twilio's): a
        # send takes and gives back its own provider's alone, and a place given back wakes one
        # waiting send of that provider, not every waiting send of every provider to check again.
        self._places: dict[int, threading.Semaphore] = {}
        if max_in_flight is not None:
            for sender in senders.values():
                self._places.setdefault(id(sender), threading.Semaphore(max_in_flight))

    def for_channel(self, channel: str) -> Sender:
        try:
            return self._senders[channel]
        except KeyError:
            raise UnknownChannel(f"no sender is configured for channel {channel!r}") from None

    @contextmanager
    def slot(self, channel: str) -> Iterator[Sender]:
        """The channel's sender, holding one of its provider's places; ChannelBusy when none is free."""
        sender = self.for_channel(channel)
        places = self._places.get(id(sender))
        if places is None:  # no limit
            yield sender
            return
        if not places.acquire(timeout=self.wait):
            raise ChannelBusy(f"{self.max_in_flight} sends on {channel} are already waiting for its provider",
                              retry_after=1.0)
        try:
            yield sender
        finally:
            places.release()

    def close(self) -> None:
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if close:
                close()

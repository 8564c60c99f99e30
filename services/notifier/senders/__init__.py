"""Outbound senders: one per channel family, one interface, a registry.

A sender delivers one text to one address and either returns the provider's message id or raises:
- `TransientSendError` (timeouts, 5xx, 429 with an optional retry_after): try again later;
- `PermanentSendError` (blocked bot, opted-out number, invalid address): record, never retry.
With a provider's credentials unset, the channel's sender is the sandbox one (records and prints).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class TransientSendError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSendError(Exception):
    pass


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str | None


class Sender(Protocol):
    channel: str

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult: ...


class UnknownChannel(LookupError):
    pass


class Registry:
    def __init__(self, senders: dict[str, Sender]):
        self._senders = senders

    def for_channel(self, channel: str) -> Sender:
        try:
            return self._senders[channel]
        except KeyError:
            raise UnknownChannel(f"no sender is configured for channel {channel!r}") from None

    def close(self) -> None:
        for sender in self._senders.values():
            close = getattr(sender, "close", None)
            if close:
                close()

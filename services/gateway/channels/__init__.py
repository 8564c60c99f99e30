"""Inbound channel adapters: one module per provider family, one interface, one registry.

An adapter verifies the request (signature first, before parsing anything), then parses the raw
body into InboundMessages. It never knows what happens downstream. Errors are named so the web
layer can answer the provider with the right status:
- `Unauthenticated` → 403 (bad or missing signature/secret),
- `Malformed` → 400 with the problem named,
- an empty result → 200, nothing published (a known but irrelevant event: edits, statuses, typing).

`InboundAdapter` is what every adapter offers, its `webhook` (where providers call it) included. What only some offer is declared once each below
(a handshake, delivery statuses, a request-dependent answer); the web layer asks with isinstance,
so an adapter states its abilities by having the method, and the type checker sees the signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, overload, runtime_checkable

from shared.contracts import DeliveryStatus, InboundMessage, SurveyAnswer

# What a parsed request yields: a customer's message, or a press/reply answering one of our surveys.
Inbound = InboundMessage | SurveyAnswer


class Unauthenticated(Exception):
    """The request is not from the provider: wrong or missing signature or secret."""


class Malformed(Exception):
    """Authenticated but unparseable: the message names the problem for the 400 body."""


class Headers(Protocol):
    """The two reads adapters make of headers. Flask's are case-insensitive and no Mapping; a test's
    dict is. Both fit, so adapters never learn which web framework carried the request."""

    @overload
    def get(self, key: str) -> str | None: ...
    @overload
    def get(self, key: str, default: str) -> str: ...

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True)
class RawRequest:
    """What an adapter may look at: nothing Flask-specific, so adapters are tested without HTTP."""

    url: str  # the public URL the provider called (for URL-signed providers)
    headers: Headers
    body: bytes
    form: Mapping[str, list[str]]
    received_at: datetime

    def header(self, name: str) -> str:
        """The header's value, "" when absent. HTTP names are case-insensitive, and so is this
        whatever carried the request: Flask's headers are, a test's plain dict is not."""
        value = self.headers.get(name)
        if value is None:
            lowered = name.lower()
            value = next((v for k, v in self.headers.items() if k.lower() == lowered), None)
        return value or ""


@dataclass(frozen=True)
class Webhook:
    """Where the provider calls an adapter: the web layer makes one route per adapter from this, so
    a new channel adds no route by hand. POST always; GET too when the adapter is a
    HandshakeVerifier (the provider's subscription check on the same path)."""

    path: str
    # The channel whose switch (config `mode: off`) closes this route with a 404 before anything
    # is read; None when only the payload names the channel (Meta: Messenger, Instagram, WhatsApp).
    channel: str | None


@dataclass(frozen=True)
class SimulatedRequest:
    """One request as a provider would send it (`switchboard simulate`): the path, body and headers."""

    path: str
    body: bytes
    headers: dict[str, str]
    # Sent only when the previous answer contains this (Twilio follows the TwiML it got): None, always.
    only_after: str | None = None


@dataclass(frozen=True)
class Sample:
    """The customer message `switchboard simulate` makes up; each simulation uses what its provider carries."""

    text: str
    secret: str  # signs the request as the provider would (the adapter's secret_env, or the dev secret)
    name: str = "Alex Customer"
    lang: str = "en"
    sender: str | None = None
    user_id: int = 424242
    update_id: int | None = None
    subject: str | None = None
    public_url: str = "http://127.0.0.1:8080"
    business_number: str = "+48732125400"


@dataclass(frozen=True)
class Simulation:
    """How `switchboard simulate` makes a customer's message to an adapter, kept beside the adapter
    so a new channel is tried without a branch in services/simulate.py."""

    channels: tuple[str, ...]  # the channels this adapter's requests can carry
    secret_env: str  # the environment variable of the secret the gateway checks
    build: Callable[[str, Sample], SimulatedRequest]  # (channel, sample) → the signed request


class InboundAdapter(Protocol):
    channel_family: str
    webhook: Webhook

    def verify(self, request: RawRequest) -> None: ...

    # Sequence, not list: an adapter that only ever yields messages returns list[InboundMessage].
    def parse(self, request: RawRequest) -> Sequence[Inbound]: ...


@runtime_checkable
class HandshakeVerifier(Protocol):
    """Answers the provider's subscription check (Meta's GET hub.challenge) with the challenge."""

    def verify_handshake(self, args: Mapping[str, str]) -> str: ...


@runtime_checkable
class StatusParser(Protocol):
    """A status-only endpoint: every request is exactly one delivery status (Twilio's callback)."""

    def parse_status(self, request: RawRequest) -> DeliveryStatus: ...


@runtime_checkable
class StatusesParser(Protocol):
    """Delivery statuses that arrive in the same webhooks as messages (Meta)."""

    def parse_statuses(self, request: RawRequest) -> list[DeliveryStatus]: ...


@runtime_checkable
class Responder(Protocol):
    """The 2xx body depends on the request: a call's TwiML says what happens next. (body, content type)"""

    def respond(self, request: RawRequest) -> tuple[str, str]: ...


@runtime_checkable
class WebhookAnswerer(Protocol):
    """May answer with one provider API call in the response body (Telegram's answerCallbackQuery)."""

    def webhook_answer(self, request: RawRequest) -> dict[str, Any] | None: ...


@runtime_checkable
class FixedAnswer(Protocol):
    """The provider reads the body of every 2xx (Twilio would text it on): (body, content type)."""

    def success_response(self) -> tuple[str, str]: ...

"""Inbound channel adapters: one module per provider family, one interface, one registry.

An adapter verifies the request (signature first, before parsing anything), then parses the raw
body into InboundMessages. It never knows what happens downstream. Errors are named so the web
layer can answer the provider with the right status:
- `Unauthenticated` → 403 (bad or missing signature/secret),
- `Malformed` → 400 with the problem named,
- an empty result → 200, nothing published (a known but irrelevant event: edits, statuses, typing).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from shared.contracts import InboundMessage


class Unauthenticated(Exception):
    """The request is not from the provider: wrong or missing signature or secret."""


class Malformed(Exception):
    """Authenticated but unparseable: the message names the problem for the 400 body."""


@dataclass(frozen=True)
class RawRequest:
    """What an adapter may look at: nothing Flask-specific, so adapters are tested without HTTP."""

    url: str  # the public URL the provider called (for URL-signed providers)
    headers: Mapping[str, str]
    body: bytes
    form: Mapping[str, list[str]]
    received_at: datetime


class InboundAdapter(Protocol):
    channel_family: str

    def verify(self, request: RawRequest) -> None: ...

    def parse(self, request: RawRequest) -> list[InboundMessage]: ...

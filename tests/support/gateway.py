"""A fake of the gateway's Intake, for the tests that drive the gateway's HTTP edge."""

from __future__ import annotations

from shared.contracts import Envelope, encode


class RecordingIntake:
    """Records what the gateway would publish, instead of publishing it."""

    def __init__(self) -> None:
        self.accepted: list[Envelope] = []

    def accept(self, envelope: Envelope) -> str:
        encode(envelope)  # what the real intake does first: a contract violation would raise here
        self.accepted.append(envelope)
        return "published"

"""A classifier's verdict as the router reads it, for the fakes of our own classifier that drive the
router's logic in tests (each test's fake decides which verdict a text gets)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Verdict:
    category: str = "delivery"
    confidence: float = 0.9
    reason: dict = field(default_factory=dict)

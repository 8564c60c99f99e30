"""Hypothesis settings for the fuzz tier: a fixed budget per property, no deadline (2 shared cores
make timings meaningless), and a seed that is always printed so a failure can be replayed.

In CI (CI set) runs are derandomized: the same examples every time, so a red build is never luck.
Elsewhere the seed is FUZZ_SEED or a fresh random one; `pytest tests/fuzz` prints it in the header
and `FUZZ_SEED=<n> pytest tests/fuzz` replays that run.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, seed, settings

CI = bool(os.environ.get("CI"))
SEED = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
#: Multiplies every property's example budget: FUZZ_SCALE=10 for a long local run.
SCALE = float(os.environ.get("FUZZ_SCALE") or 1)


def describe() -> str:
    how = "derandomized (CI)" if CI else f"seed {SEED} (replay: FUZZ_SEED={SEED})"
    return f"fuzz: {how}, budget ×{SCALE:g}"


def fuzz(max_examples: int) -> Callable[[Any], Any]:
    """Decorator: `max_examples` (× FUZZ_SCALE) examples with this run's seed or derandomized."""
    budget = settings(max_examples=max(1, int(max_examples * SCALE)), deadline=None, derandomize=CI,
                      database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                             HealthCheck.filter_too_much])

    def decorate(test: Any) -> Any:
        return budget(test) if CI else budget(seed(SEED)(test))

    return decorate

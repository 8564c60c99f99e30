"""The notifier's clock: runs time-driven work (promise checks, notices queued until a shift starts,
surveys after their delay) every few seconds.

The work itself keeps its state in the database — a due time on a row, claimed and marked done in a
transaction — so nothing scheduled lives in process memory: a restart, or a second replica, picks
up exactly what is due. A job is `f(now) -> int` (how many things it did); one failing job is
logged and does not stop the others.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

log = logging.getLogger(__name__)

Job = Callable[[datetime], int]


class Ticker:
    def __init__(self, jobs: dict[str, Job], clock: Callable[[], datetime], *, interval: float = 5.0):
        self.jobs = dict(jobs)
        self.clock = clock
        self.interval = interval

    def tick_once(self) -> dict[str, int]:
        now = self.clock()
        done: dict[str, int] = {}
        for name, job in self.jobs.items():
            try:
                done[name] = job(now)
            except Exception:  # noqa: BLE001 - one broken job must not starve the others
                log.exception("scheduled job %s failed; it runs again at the next tick", name)
        return done

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.tick_once()
            stop.wait(self.interval)

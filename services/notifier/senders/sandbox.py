"""The sandbox sender: records every outbound message and prints it; sends nothing anywhere.

Used for every channel whose provider credentials are unset (always in `make run`), so that a
newcomer sees exactly what customers and agents would receive.
"""

from __future__ import annotations

import itertools
import sys
import threading
from dataclasses import dataclass
from typing import Any, TextIO

from services.notifier.senders import SendResult


@dataclass(frozen=True)
class Recorded:
    channel: str
    address: str
    text: str
    options: dict[str, Any]


class SandboxSender:
    def __init__(self, channel: str, *, out: TextIO | None = None):
        self.channel = channel
        self.out = out if out is not None else sys.stdout
        self.sent: list[Recorded] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        with self._lock:
            self.sent.append(Recorded(self.channel, address, text, dict(options or {})))
            n = next(self._ids)
            rule = "─" * 60
            print(f"\n{rule}\n[sandbox {self.channel} → {address}]\n{text}\n{rule}", file=self.out, flush=True)
        return SendResult(provider_message_id=f"sandbox-{self.channel}-{n}")

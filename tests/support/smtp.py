"""A real SMTP server for tests (aiosmtpd on loopback) that keeps every message it accepts."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller

from tests.support.procs import free_port


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


@dataclass
class SmtpServer:
    received: list[Received] = field(default_factory=list)
    #: The client connections messages came on (their address and port): few when a client reuses one.
    sessions: set[tuple[str, int]] = field(default_factory=set)
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        with self._lock:
            self.received.append(Received(envelope.mail_from, tuple(envelope.rcpt_tos), envelope.content))
            self.sessions.add(tuple(session.peer))
        return "250 Message accepted for delivery"

    def start(self) -> SmtpServer:
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self

    def to(self, address: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if address.lower() in (a.lower() for a in r.rcpt_tos)]

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()

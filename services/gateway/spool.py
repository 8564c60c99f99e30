"""The gateway's local spool: where accepted messages wait while the broker is unreachable.

A provider gets its 2xx only once a message is confirmed by the broker or committed here (SQLite,
synchronous=FULL: on disk). A forwarder thread publishes spooled messages in arrival order as soon
as the broker answers and deletes each only after its publish was confirmed; a crash in between
re-publishes it, which downstream dedupes by message id. While anything is spooled, new messages
are spooled behind it, so arrival order is kept.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

from shared.bus.publisher import BusUnavailable, Publisher
from shared.bus.topology import EVENTS

log = logging.getLogger(__name__)


class Spool:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " routing_key TEXT NOT NULL, message_id TEXT NOT NULL, correlation_id TEXT NOT NULL, body TEXT NOT NULL)"
        )
        self._pending = self._count()

    def _count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    @property
    def pending(self) -> int:
        return self._pending

    def put(self, routing_key: str, message_id: str, correlation_id: str, body: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spool (routing_key, message_id, correlation_id, body) VALUES (?,?,?,?)",
                             (routing_key, message_id, correlation_id, json.dumps(body)))
            self._pending += 1

    def peek(self, limit: int = 100) -> list[tuple[int, str, str, str, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, routing_key, message_id, correlation_id, body FROM spool ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [(seq, rk, mid, cid, json.loads(body)) for seq, rk, mid, cid, body in rows]

    def delete(self, seq: int) -> None:
        with self._lock:
            cur = self._db.execute("DELETE FROM spool WHERE seq = ?", (seq,))
            self._pending -= cur.rowcount

    def check(self) -> None:
        """Readiness: the spool file can be written."""
        with self._lock:
            self._db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Forwarder:
    """Drains the spool to the broker; wakes on every spooled message and every second."""

    def __init__(self, spool: Spool, publisher: Publisher, *, interval: float = 1.0):
        self.spool = spool
        self.publisher = publisher
        self.interval = interval
        self.wake = threading.Event()

    def drain_once(self) -> int:
        sent = 0
        while True:
            rows = self.spool.peek()
            if not rows:
                return sent
            for seq, routing_key, message_id, correlation_id, body in rows:
                self.publisher.publish_raw(body, exchange=EVENTS, routing_key=routing_key,
                                           message_id=message_id, correlation_id=correlation_id)
                self.spool.delete(seq)
                sent += 1

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.spool.pending:
                try:
                    n = self.drain_once()
                    if n:
                        log.info("forwarded %d spooled messages to the broker", n)
                except BusUnavailable as exc:
                    log.warning("broker still unavailable, %d messages spooled: %s", self.spool.pending, exc)
            self.wake.wait(self.interval)
            self.wake.clear()

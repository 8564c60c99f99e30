"""A barrier for tests that show that nothing (more) happened: wait until the system is at rest.

At rest means: every queue of the test's vhost (work queues, retry tiers, dead letters) holds no
message, ready or unacknowledged — so no consumer has one in hand — and nothing waits in the
database to leave: no router event pending publication, no notifier outbox row or agent notice due
and unsent, no survey due or being sent. Read twice in a row, so a message moving from one queue to
the next between two reads (published before its delivery is acked) is not missed. Then an
assertion that nothing was sent holds because nothing is left that could send it, not because some
seconds went by.

Queue counts come from `rabbitmqctl list_queues` (this machine's broker has no management API);
AMQP's passive declare would tell only the ready messages, not those a consumer holds.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import psycopg

from tests.support.wait import until

#: What waits in the database to leave, as (table, condition): each must count zero. Tables a test's
#: database does not have (yet) are skipped.
IN_FLIGHT = (
    ("router_outbox", "pending_since IS NOT NULL"),
    ("outbox", "status = 'pending'"),
    ("agent_notices", "status = 'pending' AND not_before <= now()"),
    ("surveys", "status = 'sending' OR (status = 'scheduled' AND due_at <= now())"),
)


def vhost_of(broker_url: str) -> str:
    path = urlsplit(broker_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def busy_queues(broker_url: str) -> dict[str, tuple[int, int]]:
    """Queue → (ready, unacknowledged), for every queue of the vhost that holds a message."""
    proc = subprocess.run(["rabbitmqctl", "list_queues", "-q", "-p", vhost_of(broker_url), "--formatter", "json",
                           "name", "messages_ready", "messages_unacknowledged"],
                          capture_output=True, text=True, timeout=60, check=True)
    rows = json.loads(proc.stdout or "[]")
    return {r["name"]: (int(r["messages_ready"] or 0), int(r["messages_unacknowledged"] or 0)) for r in rows
            if (r["messages_ready"] or 0) or (r["messages_unacknowledged"] or 0)}


def in_flight(database_url: str) -> dict[str, int]:
    """Table → rows waiting to leave (see IN_FLIGHT), for those that have any."""
    found: dict[str, int] = {}
    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        for table, condition in IN_FLIGHT:
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
                continue
            row = conn.execute(f"SELECT count(*) FROM {table} WHERE {condition}").fetchone()  # noqa: S608 - constants
            if row and row[0]:
                found[table] = row[0]
    return found


def at_rest(broker_url: str, database_url: str | None = None, *, also: Callable[[], bool] | None = None,
            timeout: float = 60.0) -> None:
    """Return once the bus is drained and nothing is in flight, seen twice in a row; `also`: a
    further condition of the test's own (e.g. nothing scheduled any more)."""
    quiet_reads = [0]

    def quiet() -> bool:
        state = {"queues": busy_queues(broker_url), "database": in_flight(database_url) if database_url else {},
                 "also": also() if also is not None else True}
        if state["queues"] or state["database"] or not state["also"]:
            quiet_reads[0] = 0
            last_state[0] = state
            return False
        quiet_reads[0] += 1
        return quiet_reads[0] >= 2

    last_state: list[dict] = [{}]
    until(quiet, timeout=timeout, interval=0.2,
          message=lambda: f"the bus drained and nothing in flight (last seen busy: {last_state[0]})")

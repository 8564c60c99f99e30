"""PostgreSQL's cost per message, in process: what the router's and the notifier's batches write
and what their backends spend, on a fresh database of this script's own.

The machine's PostgreSQL has no pg_stat_statements (and is shared, so its WAL position moves with
everyone's work): the WAL is read with pg_walinspect and only this database's records (and the
commits of their transactions) are counted; tuples from pg_stat_user_tables once every backend
has exited (their statistics are flushed then); CPU from /proc/<pid>/stat of this script's
backends (pg_backend_pid() at connect). Messages come from new Telegram customers, as in the
bench: each opens a conversation, is acknowledged, and its owner is notified.

    python -m tests.bench.pg_cost [--messages 550] [--router-batch 11] [--notifier-batch 5] [--history 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from shared.config import load_config
from shared.contracts import Envelope, Identity, InboundMessage, derive_id
from shared.db import make_engine, migrate, session_factory
from tests.bench import growth
from tests.support import infra

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)  # a Monday morning: the owners are on shift
TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pid: int) -> float:
    """utime + stime of a backend, in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


class Watched:
    """An engine whose backends, statements and commits are counted."""

    def __init__(self, url: str):
        self.engine = make_engine(url)
        self.pids: dict[int, float] = {}
        self.statements: Counter[str] = Counter()
        self.commits = 0
        event.listen(self.engine, "connect", self._connect)
        event.listen(self.engine, "before_cursor_execute", self._statement)
        event.listen(self.engine, "commit", self._commit)

    def _connect(self, dbapi_conn, _record) -> None:
        with dbapi_conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        dbapi_conn.commit()
        self.pids[pid] = backend_cpu(pid)
        if os.environ.get("PG_COST_PIDS"):  # for a profiler: perf record -p $(cat file)
            with open(os.environ["PG_COST_PIDS"], "a") as out:
                out.write(f"{pid}\n")

    def _statement(self, _conn, _cursor, statement, _params, _context, _many) -> None:
        self.statements[" ".join(statement.split())[:90]] += 1

    def _commit(self, _conn) -> None:
        self.commits += 1

    def cpu(self) -> float:
        return sum(backend_cpu(pid) - start for pid, start in self.pids.items())


def envelope(n: int, at: datetime) -> Envelope:
    user = str(5_000_000_000 + n)
    msg = InboundMessage(
        channel="telegram", external_id=f"123456:{n}", sender=Identity("telegram", user), sender_name=f"Customer {n}",
        text=["Where is my parcel? Order {n}.", "I want to return the shoes from order {n}",
              "Payment failed twice for order {n}, what now?"][n % 3].format(n=n),
        subject=None, received_at=at, reply_to=user, language_hint="en")
    return Envelope.wrap(msg, message_id=derive_id("telegram", msg.external_id), correlation_id=str(uuid.uuid4()),
                         occurred_at=at)


class WalReader:
    """This database's WAL read as it is written (other databases' work recycles the shared WAL)."""

    def __init__(self, url: str):
        self.url, self.records = url, Counter()
        self.covered = self.missed = 0  # messages whose WAL was read, or recycled before it was
        self.bytes, self.fpi = Counter(), Counter()
        self.engine = make_engine(url, pool_size=1)
        with self.engine.connect() as conn:
            self.oid = conn.execute(text("SELECT oid FROM pg_database WHERE datname = current_database()")).scalar_one()
            self.at = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()

    def read(self, messages: int = 0) -> None:
        with self.engine.connect() as conn:
            end = conn.execute(text("SELECT pg_current_wal_lsn()::text")).scalar_one()
            try:
                rows = self._records(conn, end)
            except DBAPIError:
                self.missed += messages
                self.at = end
                return
        self.covered += messages
        self.at = end
        for kind, n, size, fpi in rows:
            self.records[kind] += int(n)
            self.bytes[kind] += int(size)
            self.fpi[kind] += int(fpi)

    def _records(self, conn, end: str) -> list:
        return conn.execute(text(
                    "WITH r AS (SELECT * FROM pg_get_wal_records_info(CAST(:s AS pg_lsn), CAST(:e AS pg_lsn))), "
                    "mine AS (SELECT * FROM r WHERE block_ref LIKE :pat), "
                    "xids AS (SELECT DISTINCT xid FROM mine WHERE xid <> 0), "
                    "commits AS (SELECT * FROM r WHERE resource_manager = 'Transaction' "
                    "AND xid IN (SELECT xid FROM xids)) "
                    "SELECT resource_manager || '/' || record_type, count(*), sum(record_length), sum(fpi_length) "
                    "FROM (SELECT * FROM mine UNION ALL SELECT * FROM commits) x GROUP BY 1"),
                    {"s": self.at, "e": end, "pat": f"% 1663/{self.oid}/%"}).all()

    def result(self) -> dict:
        self.engine.dispose()
        return {k: {"n": self.records[k], "bytes": self.bytes[k], "fpi": self.fpi[k]} for k in self.records}


def run(url: str, config, first: int, count: int, router_batch: int, notifier_batch: int,
        wal: WalReader | None = None) -> dict:
    from services.notifier.handlers import NotifierDeps, handle_batch
    from services.notifier.senders import Registry
    from services.notifier.senders.sandbox import SandboxSender
    from services.router.handlers import RouterDeps, handle_inbound_batch
    from tests.integration.test_router_store import fake_classify

    router, notifier = Watched(url), Watched(url)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    pool = ThreadPoolExecutor(8, thread_name_prefix="pg-cost-send")
    try:
        rdeps = RouterDeps(config=config, sessions=session_factory(router.engine), classify=fake_classify,
                           detect_language=lambda text, hints: "en")
        senders = Registry({ch: SandboxSender(ch, out=devnull) for ch in ("telegram", "email", "sms")})
        ndeps = NotifierDeps(config=config, sessions=session_factory(notifier.engine), senders=senders,
                             compose_ack=lambda ev, at: f"Thanks, we have your message ({ev.reference}).",
                             clock=lambda: AT + timedelta(seconds=1), send_pool=pool)
        events: list[Envelope] = []
        for start in range(first, first + count, router_batch):
            batch = [envelope(n, AT) for n in range(start, min(start + router_batch, first + count))]
            for result in handle_inbound_batch(batch, rdeps):
                assert not isinstance(result, Exception), result
                events.extend(result)
            while len(events) >= notifier_batch:
                chunk, events = events[:notifier_batch], events[notifier_batch:]
                for result in handle_batch(chunk, ndeps):
                    assert not isinstance(result, Exception), result
            if wal is not None:
                wal.read(min(router_batch, first + count - start))
        if events:
            handle_batch(events, ndeps)
        return {"router_cpu_s": router.cpu(), "notifier_cpu_s": notifier.cpu(),
                "router_statements": router.statements, "notifier_statements": notifier.statements,
                "router_commits": router.commits, "notifier_commits": notifier.commits}
    finally:
        pool.shutdown()
        router.engine.dispose()
        notifier.engine.dispose()
        devnull.close()


def table_stats(url: str) -> dict[str, dict[str, int]]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            rows = conn.execute(text(
                "SELECT t.relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, coalesce(idx_scan, 0), seq_scan, "
                "(SELECT coalesce(sum(i.idx_tup_read), 0) FROM pg_stat_user_indexes i WHERE i.relid = t.relid) "
                "FROM pg_stat_user_tables t")).all()
            return {r[0]: dict(zip(("ins", "upd", "hot", "del", "idx_scan", "seq_scan", "idx_tup_read"),
                                   map(int, r[1:]), strict=True)) for r in rows}
    finally:
        engine.dispose()


def history(url: str, n: int, config) -> None:
    """`n` stored conversations as tests/bench/growth.py loads them (migrated, analysed)."""
    growth.load(url, n, config)


def measure(messages: int, router_batch: int, notifier_batch: int, hist: int, warmup: int = 550,
            verbose: bool = True) -> dict:
    config = load_config(ROOT / "deploy" / "switchboard.yaml")
    name, url = infra.new_database()
    try:
        engine = make_engine(url, pool_size=1)
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_walinspect"))
        engine.dispose()
        if hist:
            history(url, hist, config)
        # Warm up, then statistics as autovacuum would have them on a database in use: the planner
        # picks what it would in production (an unanalysed table of a few rows is scanned whole).
        run(url, config, 1_000_000, warmup, router_batch, notifier_batch)
        engine = make_engine(url, pool_size=1)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM ANALYZE"))
        engine.dispose()
        time.sleep(0.5)
        before, reader = table_stats(url), WalReader(url)
        result = run(url, config, 2_000_000, messages, router_batch, notifier_batch, reader)
        time.sleep(1.0)  # exited backends' statistics reach the shared ones
        after = table_stats(url)
        reader.read()
        wal = reader.result()
        per_wal = 1 / reader.covered if reader.covered else 0.0
    finally:
        infra.drop_database(name)
    per = 1 / messages
    tables = {}
    for table, a in after.items():
        b = before.get(table, dict.fromkeys(a, 0))
        d = {k: round((a[k] - b[k]) * per, 2) for k in a if a[k] != b[k]}
        if d:
            tables[table] = d

    wal_bytes = sum(w["bytes"] for w in wal.values())
    fpi = sum(w["fpi"] for w in wal.values())
    out = {
        "messages": messages,
        "router_backend_cpu_ms_per_msg": round(result["router_cpu_s"] * 1000 * per, 3),
        "notifier_backend_cpu_ms_per_msg": round(result["notifier_cpu_s"] * 1000 * per, 3),
        "wal_read_for_messages": reader.covered,
        "wal_bytes_per_msg": round(wal_bytes * per_wal),
        "wal_bytes_per_msg_without_fpi": round((wal_bytes - fpi) * per_wal),
        "wal_records_per_msg": round(sum(w["n"] for w in wal.values()) * per_wal, 2),
        "commits_per_msg": round((result["router_commits"] + result["notifier_commits"]) * per, 3),
        "statements_per_msg": round((result["router_statements"].total() + result["notifier_statements"].total())
                                    * per, 2),
        "tuples_per_msg": tables,
        "wal_by_record": {k: {"n": round(v["n"] * per_wal, 2), "bytes": round(v["bytes"] * per_wal)}
                          for k, v in wal.items()},
    }
    if verbose:
        out["statements"] = {"router": {k: round(v * per, 2) for k, v in result["router_statements"].most_common()},
                             "notifier": {k: round(v * per, 2)
                                          for k, v in result["notifier_statements"].most_common()}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=550)
    parser.add_argument("--router-batch", type=int, default=11)
    parser.add_argument("--notifier-batch", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=550, help="messages before the measured ones")
    parser.add_argument("--history", type=int, default=5000, help="conversations stored before (growth's load)")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.messages, args.router_batch, args.notifier_batch, args.history, args.warmup), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The notifier's CPU per message and its PostgreSQL work, in process (issue 15).

Batches of new conversations (conversation.opened, acknowledged) go through the notifier's batch
handler, with the team on shift around the clock as in `make bench` (tests/bench/stack.py
on_shift_around_the_clock): each event's acknowledgement and its owner's notice on Telegram, two
sends per event (counted from the outbox after the run and printed), with its real Telegram sender against the fake Bot API, which runs in a
child process so that its CPU is not counted, and a fresh PostgreSQL database of its own.

Printed: the notifier's CPU per event (time.process_time of this process), the CPU of the
database's backends per event (/proc/<pid>/stat of this database's connections), and, in a
separate counted pass, round trips and commits per batch.

    .venv/bin/python -m tests.bench.notifier_cost [--batches 400] [--size 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import yaml

from services.notifier.bootstrap import build_deps
from services.notifier.handlers import handle_batch
from services.notifier.senders import Registry
from services.notifier.senders.telegram import TelegramSender
from shared.config import load_config_text
from shared.contracts import ConversationOpened, Envelope
from shared.db import make_engine, migrate, session_factory
from shared.log import setup_logging
from tests.bench.stack import on_shift_around_the_clock
from tests.support import infra

NOW = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)  # any hour: the team is on shift around the clock
OWNERS = (("anna", "Anna Kowalska"), ("taras", "Taras Melnyk"), ("jonas", "Jonas Petrauskas"),
          ("maria", "Maria Georgieva"))
_FAKE = ("import sys; from tests.fakes.telegram_api import FakeBotApi; f = FakeBotApi().start(); "
         "print(f.port, flush=True); sys.stdin.read()")


def opened(n: int) -> Envelope:
    ev = ConversationOpened(
        conversation_id=f"conv-{n}", opening=1, reference=f"SB-{n:010d}", customer_id=f"cust-{n}",
        customer_name="Piotr", channel="telegram", reply_to=str(1000 + n), language="en", category="delivery",
        owner_id=OWNERS[n % len(OWNERS)][0], owner_name=OWNERS[n % len(OWNERS)][1], assignment_reason="r",
        received_at=NOW, promise_due=NOW + timedelta(hours=8), inbound_message_id=f"in-{n}", acknowledge=True)
    return Envelope.wrap(ev, message_id=f"ev-{n}", correlation_id=f"c-{n}", occurred_at=NOW)


def _backend_ticks(url: str) -> dict[int, int]:
    with psycopg.connect(url, autocommit=True) as probe:
        pids = [r[0] for r in probe.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")]
    ticks = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks[pid] = int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return ticks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, default=400)
    parser.add_argument("--size", type=int, default=5)
    parser.add_argument("--log-level", default=None,
                        help="the services' logging (shared.log.setup_logging) at this level, to /dev/null: "
                             "production runs at INFO; default: none, as in make bench (WARNING)")
    args = parser.parse_args()
    if args.log_level:
        setup_logging("notifier", args.log_level, stream=open(os.devnull, "w"))  # noqa: SIM115 - the run's
    fake = subprocess.Popen([sys.executable, "-c", _FAKE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = int(fake.stdout.readline())
    name, url = infra.new_database()
    raw_url = url.replace("postgresql+psycopg://", "postgresql://")
    engine = make_engine(url)
    try:
        migrate(engine)
        path = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "switchboard.yaml")
        with open(path) as f:
            raw = yaml.safe_load(f)
        on_shift_around_the_clock(raw)
        config = load_config_text(yaml.safe_dump(raw, allow_unicode=True), path)
        sender = TelegramSender("123:abc", api_base=f"http://127.0.0.1:{port}/bot")
        pool = ThreadPoolExecutor(8)
        deps = build_deps(config, session_factory(engine), Registry({"telegram": sender}, max_in_flight=6),
                          lambda: NOW, send_pool=pool)
        n = 0

        def batch() -> None:
            nonlocal n
            envelopes = [opened(n + i) for i in range(args.size)]
            n += args.size
            results = handle_batch(envelopes, deps)
            assert all(r == [] for r in results), results

        for _ in range(30):  # warm-up: connections, PTB's getMe, imports
            batch()
        # Round trips and commits, counted in a pass of their own (counting costs CPU too).
        trips, commits = [], [0]
        execute, commit = psycopg.Cursor.execute, psycopg.Connection.commit

        def counted_execute(cursor, query, params=None, **kw):
            text = str(query)
            trips.append(text)
            commits[0] += text.rstrip().upper().endswith("COMMIT")
            return execute(cursor, query, params, **kw)

        def counted_commit(connection):
            commits[0] += 1
            return commit(connection)

        psycopg.Cursor.execute, psycopg.Connection.commit = counted_execute, counted_commit
        try:
            for _ in range(20):
                batch()
        finally:
            psycopg.Cursor.execute, psycopg.Connection.commit = execute, commit
        before = _backend_ticks(raw_url)
        cpu = time.process_time()
        for _ in range(args.batches):
            batch()
        cpu = time.process_time() - cpu
        after = _backend_ticks(raw_url)
        pg = sum(t - before.get(pid, 0) for pid, t in after.items()) / os.sysconf("SC_CLK_TCK")
        events = args.batches * args.size
        print(f"batches of {args.size}, {events} events; load {os.getloadavg()[0]:.1f}")
        print(f"notifier CPU {1000 * cpu / events:.3f} ms per event; PostgreSQL backends {1000 * pg / events:.3f} ms "
              f"per event (tick {1000 / os.sysconf('SC_CLK_TCK'):.0f} ms)")
        print(f"round trips {len(trips) / 20:.1f} per batch, commits {commits[0] / 20:.1f} per batch")
        with psycopg.connect(raw_url) as probe:
            kinds = dict(probe.execute("SELECT kind, count(*) FROM outbox WHERE status = 'sent' GROUP BY kind"))
        print(f"sent per event: {', '.join(f'{k} {v / n:.2f}' for k, v in sorted(kinds.items()))}")
        if os.environ.get("VERBOSE"):
            for t in trips[: len(trips) // 20]:
                print("  ", " ".join(t.split())[:150])
        pool.shutdown()
        sender.close()
    finally:
        engine.dispose()
        infra.drop_database(name)
        fake.stdin.close()
        fake.wait(10)


if __name__ == "__main__":
    main()

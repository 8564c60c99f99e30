"""What the services cost when there is little to do: idle CPU per process per second, then CPU per
message, latency, batch sizes and the database's work per message at slow streams (issue 15's
low-rate latency target: at 20 webhooks/s most batches hold one message, so every per-batch cost and
every background loop is paid by few messages).

The services-mode stack of `make bench` (tests/bench/stack.py), warmed up with a few messages; one
idle window, 10 s after the warm-up (a KPI roll-up round and the tickers' ticks fall in it); then for each rate, an open-loop
stream of signed Telegram webhooks. Printed per window:
- CPU from /proc (tests/bench/cpu.py, as the bench counts it): ms per second idle, ms per message
  while streaming, by process (gateway, router, notifier, RabbitMQ, PostgreSQL);
- webhook → acknowledgement p50/p95/p99, the consumers' mean batch sizes and the mean of each
  latency stage the services observe (published, routed, sent);
- the database's statistics per message (per second idle): transactions and tuples
  (pg_stat_database), and per table and index the scans and rows read (pg_stat_user_tables and
  _indexes) — a sequential scan, or an index read whole, on the message path shows here first.

RabbitMQ and PostgreSQL's auxiliary processes are shared with whatever else runs on the machine.

    python -m tests.bench.quiet [--idle-seconds 30] [--rates 10,20] [--seconds 30]
"""

from __future__ import annotations

import argparse
import itertools
import re
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from tests.bench import cpu
from tests.bench.bench import PROCESSES, CpuMeter, batch_counters, batch_sizes, drain, metric_lines
from tests.bench.stack import Msg, Poster, Stack, percentile, run_stream

_STAGE = re.compile(r'^switchboard_stage_latency_seconds_(sum|count)\{[^}]*stage="([^"]+)"[^}]*\}\s+(\S+)')

Counts = dict[str, float]


def database(stack: Stack) -> Counts:
    """pg_stat_database's counters of the stack's database, and per table and index: scans and
    rows read (`relation.seq_scan`, `.seq_read`, `.idx_scan`, `.idx_read`)."""
    out: Counts = {}
    with stack.engine.connect() as conn:
        row = conn.execute(text("SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_inserted, "
                                "tup_updated, tup_deleted FROM pg_stat_database "
                                "WHERE datname = current_database()")).mappings().one()
        out.update({k: float(v) for k, v in row.items()})
        for name, seq, seq_read, idx, idx_read in conn.execute(text(
                "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), coalesce(idx_tup_fetch, 0) "
                "FROM pg_stat_user_tables UNION ALL "
                "SELECT indexrelname, 0, 0, idx_scan, idx_tup_read FROM pg_stat_user_indexes")):
            out.update({f"{name}.seq_scan": seq, f"{name}.seq_read": seq_read, f"{name}.idx_scan": idx,
                        f"{name}.idx_read": idx_read})
    return out


def stages(stack: Stack) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) of each latency stage, over the three services' /metrics."""
    out: dict[str, tuple[float, float]] = {}
    for _name, line in metric_lines(stack, ("gateway", "router", "notifier")):
        m = _STAGE.match(line)
        if m:
            total, count = out.get(m.group(2), (0.0, 0.0))
            value = float(m.group(3))
            out[m.group(2)] = (total + value, count) if m.group(1) == "sum" else (total, count + value)
    return out


def per(before: Counts, after: Counts, n: float, *, top: int = 12) -> tuple[Counts, Counts]:
    """(the database's counters, the busiest tables and indexes by rows read), divided by n."""
    diff = {k: (v - before.get(k, 0.0)) / n for k, v in after.items()}
    totals = {k: round(v, 2) for k, v in diff.items() if "." not in k}
    reads = {k: round(v, 2) for k, v in diff.items() if k.endswith(("_read", "_scan")) and v}
    busiest = sorted({k.rsplit(".", 1)[0] for k in reads},
                     key=lambda r: -(reads.get(f"{r}.seq_read", 0) + reads.get(f"{r}.idx_read", 0)))[:top]
    return totals, {k: v for k, v in reads.items() if k.rsplit(".", 1)[0] in busiest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--rates", default="10,20", help="webhooks/s of the slow streams, comma-separated")
    parser.add_argument("--seconds", type=float, default=30, help="length of each stream")
    parser.add_argument("--analyze", action="store_true",
                        help="ANALYZE the database after the warm-up, as autovacuum would (this machine's is off)")
    args = parser.parse_args(argv)
    numbers = itertools.count(30_000_000)
    stack = Stack(workdir=Path(tempfile.mkdtemp(prefix="sbquiet-")), log_level="WARNING")
    try:
        stack.start()
        meter = CpuMeter(stack)
        warm = Poster(stack, threads=8)
        run_stream(warm, [Msg("telegram", next(numbers)) for _ in range(60)], 30)
        drain(stack, warm.accepted, 120)
        time.sleep(10)  # the warm-up's notices and bus events settle before the idle window
        if args.analyze:
            with stack.engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").execute(text("ANALYZE"))

        cpu0, db0, t0 = meter.sample(), database(stack), time.monotonic()
        time.sleep(args.idle_seconds)
        cpu1, db1, t1 = meter.sample(), database(stack), time.monotonic()
        seconds = cpu.cpu_seconds(cpu0, cpu1)
        totals, reads = per(db0, db1, t1 - t0)
        print("idle, ms CPU per second:", {p: round(seconds[p] / (t1 - t0) * 1000, 2) for p in PROCESSES}, flush=True)
        print("  database per second:", totals)
        print("  tables and indexes per second:", reads)

        for rate in (float(r) for r in args.rates.split(",")):
            poster = Poster(stack, threads=32)
            msgs = [Msg("telegram", next(numbers)) for _ in range(int(rate * args.seconds))]
            batches0, stages0, cpu0, db0 = batch_counters(stack), stages(stack), meter.sample(), database(stack)
            run_stream(poster, msgs, rate)
            drain(stack, poster.accepted, 300)
            cpu1, db1, stages1, batches1 = meter.sample(), database(stack), stages(stack), batch_counters(stack)
            n = max(1, len(poster.accepted))
            acked = stack.ack_times()
            lat = [(acked[m.address] - poster.sent_at[m.address]) * 1000 for m in poster.accepted]
            mean = {s: round((v[0] - stages0.get(s, (0, 0))[0]) / max(1, v[1] - stages0.get(s, (0, 0))[1]) * 1000, 1)
                    for s, v in stages1.items()}
            totals, reads = per(db0, db1, n)
            print(f"{rate:g}/s: ms CPU per message:", meter.per_message(cpu0, cpu1, n), flush=True)
            print(f"  latency ms: p50 {percentile(lat, 50):.1f}  p95 {percentile(lat, 95):.1f}  "
                  f"p99 {percentile(lat, 99):.1f}; stage means {mean}")
            print("  messages per batch:", batch_sizes(batches0, batches1))
            print("  database per message:", totals)
            print("  tables and indexes per message:", reads)
    finally:
        stack.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

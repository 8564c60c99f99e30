"""`make bench`: Switchboard's figures in services mode, measured in one run on one machine.

1. the raw RabbitMQ ceiling: pika, persistent messages with publisher confirms, to a quorum queue,
   from as many publishers as the pipeline gets concurrent webhooks;
2. the pipeline as fast as it goes: signed Telegram webhooks → gateway → RabbitMQ → router →
   notifier → acknowledgement received at the fake Bot API; then a mixed-channel variant
   (Telegram, Twilio SMS, Messenger); for each, the CPU time every process spent per message over
   that run (tests/bench/cpu.py: gateway, router, notifier, RabbitMQ's beam.smp, PostgreSQL's
   postmaster, auxiliary processes and the bench database's backends) and the consumers' batch
   sizes when the services report them;
3. webhook → acknowledgement latency (p50/p95/p99), open loop, at 100 and at 20 webhooks/s offered;
4. memory (RSS) of each service at start, after warm-up and after a soak;
5. the router's cost per message with 1 k and with 1 M stored conversations (tests/bench/growth.py);
6. the leads' figures at 1 M conversations (tests/bench/kpi_bench.py): GET /api/v1/kpis and
   /dashboard/ over 7, 90 and 365 days, the first conversation page, the router's RSS around them;
7. the categoriser: router start-up (classifier built, language models loaded) and classification
   time per message (tests/bench/classify_cost.py).

    python -m tests.bench.bench                    # 1-minute soak
    python -m tests.bench.bench --soak-minutes 10  # the long soak
    CLUSTER=1 python -m tests.bench.bench          # against the local 3-node cluster (make cluster-up)
    BENCH_QUICK=1 python -m tests.bench.bench      # 1-3 only, fewer messages (a few minutes)
Results on stdout and in var/bench/latest.json (cluster mode: var/bench/cluster.json), with
PASS/FAIL for each target of issue 15 (throughput, CPU per message, p99 at 100/s and at 20/s).

Cluster mode measures 1-3 with two gateways (behind a loopback balancer), two routers and two
notifiers, BROKER_URL the failover list of the three nodes, every queue a quorum queue replicated
on all three; the ceiling is measured the same way, to a quorum queue of the cluster. The soak
and 5-6 (the router's database, not the bus) are single-broker figures only.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pika
from sqlalchemy import text

from services.router.survey_replies import STOP_WORDS, normalise
from tests.bench import classify_cost, cpu, growth, kpi_bench
from tests.bench.stack import Msg, Poster, Stack, machine, percentile, run_stream
from tests.support.cluster import NODES, LocalCluster
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "bench" / "latest.json"
OUT_CLUSTER = ROOT / "var" / "bench" / "cluster.json"
CONCURRENCY = 8  # concurrent webhooks; the gateway answers on 8 threads


def broker_ceiling(amqp_url: str, *, concurrency: int, seconds: float, body_size: int) -> float:
    """Confirmed persistent publishes per second to a quorum queue, `concurrency` publishers."""
    params = pika.URLParameters(amqp_url)
    with pika.BlockingConnection(params) as conn:
        ch = conn.channel()
        ch.queue_declare("bench.ceiling", durable=True, arguments={"x-queue-type": "quorum"})
    body = b"x" * body_size
    counts = [0] * concurrency
    deadline = time.monotonic() + seconds

    def publisher(i: int) -> None:
        with pika.BlockingConnection(params) as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            props = pika.BasicProperties(delivery_mode=2, content_type="application/json")
            while time.monotonic() < deadline:
                ch.basic_publish("", "bench.ceiling", body, props, mandatory=True)  # returns once confirmed
                counts[i] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=publisher, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    with pika.BlockingConnection(params) as conn:
        conn.channel().queue_delete("bench.ceiling")
    return sum(counts) / elapsed


def drain(stack: Stack, msgs: list[Msg], timeout: float) -> float:
    """Wait until every message is acknowledged; returns when the last one was (wall clock)."""
    addresses = [m.address for m in msgs]

    def done() -> bool:
        acks = stack.acks()  # once per poll: per address it made the 10-minute soak's drain quadratic
        return all(acks[a] for a in addresses)

    until(done, timeout=timeout, interval=0.25, message=f"{len(msgs)} acknowledgements")
    return time.time()


def settle_notices(stack: Stack, before: int, expected: int, timeout: float = 30) -> int:
    """Wait (a bounded while) until `expected` notices were sent since `before` (stack.notices()), so
    the CPU window holds the notices' work as well as the acknowledgements'; returns how many were.
    Out of hours (Stack.on_shift False) none are due and it returns at once."""
    if not stack.on_shift:
        return stack.notices() - before
    try:
        until(lambda: stack.notices() - before >= expected, timeout=timeout, interval=0.1,
              message=f"{expected} notices")
    except AssertionError:
        pass  # reported as fewer notices per message than messages, not as a failed run
    return stack.notices() - before


SERVICES = ("gateway", "router", "notifier")
PROCESSES = (*SERVICES, "rabbitmq", "postgresql")


class CpuMeter:
    """CPU seconds of each process group (tests/bench/cpu.py) over a window of the bench."""

    def __init__(self, stack: Stack):
        self.stack = stack
        ports = ([stack.cluster.amqp_port(n) for n in NODES] if stack.cluster
                 else [int(urlsplit(stack.rabbit_url).port or 5672)])
        self.brokers = [pid for pid in (cpu.listening_pid(port) for port in ports) if pid]
        self.groups = [cpu.Group(name, self._service_pids(name)) for name in SERVICES]
        self.groups.append(cpu.Group("rabbitmq", lambda: cpu.descendants(self.brokers)))
        self.groups.append(cpu.Group("postgresql", self._pg_pids, with_children=True, own_only=self._postmaster))
        self.groups.append(cpu.Group("bench_driver", lambda: [os.getpid()], with_children=False))
        self._postmaster_pid: int | None = None

    def _service_pids(self, service: str):
        def pids() -> set[int]:
            roots = [p.pid for name, p in self.stack.services.procs.items() if name.rstrip("0123456789") == service]
            return cpu.descendants(roots)
        return pids

    def _pg_pids(self) -> list[int]:
        # The bench database's backends and the server's own processes (no database); another
        # test run's backends are not ours to count.
        with self.stack.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND (datname = current_database() OR datname IS NULL)")).scalars().all()
        if rows and self._postmaster_pid is None:
            got = cpu.read_stat(rows[0])
            self._postmaster_pid = got[1].ppid if got else None
        return list(rows)

    def _postmaster(self) -> list[int]:
        return [self._postmaster_pid] if self._postmaster_pid else []

    def sample(self) -> cpu.Sample:
        return cpu.sample(self.groups)

    def per_message(self, start: cpu.Sample, end: cpu.Sample, messages: int) -> dict[str, float]:
        seconds = cpu.cpu_seconds(start, end)
        out = {name: round(seconds[name] / max(1, messages) * 1000, 2) for name in PROCESSES}
        out["total"] = round(sum(out[name] for name in PROCESSES), 2)
        out["bench_driver"] = round(seconds["bench_driver"] / max(1, messages) * 1000, 2)  # not in the total
        return out


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([-+0-9.eEinfNa]+)")


def metric_lines(stack: Stack, services: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """(service, line) of each service's /metrics (Prometheus text); a service not answering has none."""
    for name in services:
        port = stack.services.ports.get(name)
        if port is None:
            continue
        try:
            body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        except httpx.HTTPError:
            continue
        for line in body.splitlines():
            yield name, line


def batch_counters(stack: Stack) -> dict[str, float]:
    """The `*batch*` samples of the consumers' /metrics (a histogram's _sum and _count), by series.

    The micro-batching consumers report their batch sizes as Prometheus metrics; before they do,
    there is nothing here and the bench prints "batching: off"."""
    out: dict[str, float] = {}
    for name, line in metric_lines(stack, ("router", "notifier")):
        m = _SAMPLE.match(line)
        if m and "batch" in m.group(1) and m.group(1).endswith(("_sum", "_count")):
            out[f"{name}:{m.group(1)}{m.group(2) or ''}"] = float(m.group(3))
    return out


def batch_sizes(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean batch size over the window per series: Δ_sum / Δ_count."""
    out = {}
    for key, count in after.items():
        if not key.split("{", 1)[0].endswith("_count"):
            continue
        sum_key = key.replace("_count", "_sum", 1)
        n = count - before.get(key, 0.0)
        if n > 0 and sum_key in after:
            out[key.replace("_count", "", 1)] = round((after[sum_key] - before.get(sum_key, 0.0)) / n, 2)
    return out


def analyze(stack: Stack) -> None:
    """Table statistics, as autovacuum keeps them on a deployed PostgreSQL (deploy/'s server runs
    with the defaults). This machine's server has autovacuum off, so the bench database would be
    planned as if empty all run long: sequential scans where a deployment uses its indexes."""
    with stack.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))


def throughput(stack: Stack, msgs: list[Msg], timeout: float, meter: CpuMeter | None = None) -> dict:
    analyze(stack)
    poster = Poster(stack, threads=CONCURRENCY)
    batches_before = batch_counters(stack) if meter else {}
    notices_before = stack.notices()
    cpu_start = meter.sample() if meter else None
    start = time.time()
    run_stream(poster, msgs, None)
    accepted_s = time.time() - start
    end = drain(stack, poster.accepted, timeout)
    notices = settle_notices(stack, notices_before, len(poster.accepted))
    cpu_end = meter.sample() if meter else None
    refused = len(msgs) - len(poster.accepted)
    out = {"messages": len(msgs), "refused": refused, "webhooks_per_s": round(len(msgs) / accepted_s, 1),
           "msgs_per_s": round(len(poster.accepted) / (end - start), 1),
           "notices_per_msg": round(notices / max(1, len(poster.accepted)), 2)}
    if meter and cpu_start and cpu_end:
        out["cpu_ms_per_msg"] = meter.per_message(cpu_start, cpu_end, len(poster.accepted))
        out["batch_sizes"] = batch_sizes(batches_before, batch_counters(stack))
    return out


def latency(stack: Stack, msgs: list[Msg], rate: float, timeout: float, meter: CpuMeter | None = None) -> dict:
    poster = Poster(stack, threads=CONCURRENCY * 4)
    analyze(stack)
    notices_before = stack.notices()
    cpu_start = meter.sample() if meter else None
    run_stream(poster, msgs, rate)
    drain(stack, poster.accepted, timeout)
    notices = settle_notices(stack, notices_before, len(poster.accepted))
    cpu_end = meter.sample() if meter else None
    acked = stack.ack_times()
    lat = [(acked[m.address] - poster.sent_at[m.address]) * 1000 for m in poster.accepted]
    out = {"offered_rate": rate, "messages": len(msgs), "accepted": len(poster.accepted),
           "p50_ms": round(percentile(lat, 50), 1), "p95_ms": round(percentile(lat, 95), 1),
           "p99_ms": round(percentile(lat, 99), 1), "max_ms": round(max(lat), 1),
           "notices_per_msg": round(notices / max(1, len(poster.accepted)), 2)}
    if meter and cpu_start and cpu_end:
        out["cpu_ms_per_msg"] = meter.per_message(cpu_start, cpu_end, len(poster.accepted))
    return out


def describe_batches(sizes: dict[str, float]) -> str:
    """'router.inbound 11.5 messages' per batching queue (its `queue` label), or "batching: off"."""
    if not sizes:
        return "batching: off"
    parts = []
    for key, mean in sizes.items():
        queue = re.search(r'queue="([^"]*)"', key)
        parts.append(f"{queue.group(1) if queue else key} {mean}")
    return ", ".join(parts) + " messages per batch"


def describe_cpu(c: dict[str, float]) -> str:
    parts = "  ".join(f"{name} {c[name]:.2f}" for name in PROCESSES)
    return f"{parts}  = {c['total']:.2f} ms CPU per message (bench driver and fakes {c['bench_driver']:.2f}, not counted)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1500, help="messages for the throughput runs")
    parser.add_argument("--rate", type=float, default=100, help="offered webhooks/s for the latency run")
    parser.add_argument("--latency-seconds", type=float, default=15)
    parser.add_argument("--low-rate", type=float, default=20, help="a second, unsaturated latency run")
    parser.add_argument("--soak-minutes", type=float, default=1, help="10 for the figure in the spec")
    parser.add_argument("--soak-rate", type=float, default=50)
    parser.add_argument("--conversations", type=int, default=1_000_000, help="the large database for the router")
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--skip-kpis", action="store_true", help="skip the leads' figures at 1 M conversations")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    quick = os.environ.get("BENCH_QUICK") == "1"
    if quick:
        # The pipeline's figures only (1-3), on fewer messages: a few minutes instead of ~half an hour.
        args.messages = min(args.messages, 600)
        args.latency_seconds = min(args.latency_seconds, 8)
        args.soak_minutes = 0
        args.skip_growth = args.skip_kpis = True
    clustered = os.environ.get("CLUSTER") == "1"
    if clustered:
        args.skip_growth = args.skip_kpis = True
    args.out = args.out or (OUT_CLUSTER if clustered else OUT)

    result: dict = {"machine": machine(), "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "quick": quick,
                    "mode": "cluster: 3 RabbitMQ nodes, 2 gateways, 2 routers, 2 notifiers" if clustered
                    else "single broker, 1 of each service"}
    numbers = itertools.count(10_000_000)

    def batch(n: int, channels: tuple[str, ...] = ("telegram",)) -> list[Msg]:
        return [Msg(channels[i % len(channels)], next(numbers)) for i in range(n)]

    def varied(n: int) -> list[Msg]:
        texts = varied_texts()
        return [Msg("telegram", next(numbers), text=texts[i % len(texts)][0], lang=texts[i % len(texts)][1])
                for i in range(n)]

    # Before the stack starts, so the services' own load does not blur the categoriser's figures.
    result["classifier"] = classify_cost.measure()
    print(classify_cost.describe(result["classifier"]), flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="sbbench-"))
    stack = Stack(workdir=workdir, proxied=False, log_level="WARNING", cluster=LocalCluster() if clustered else None,
                  replicas=2 if clustered else 1)
    result["workload"] = stack.workload
    print(f"bench: services mode, {result['mode']}, logs in {workdir}", flush=True)
    print(f"work per message: {stack.workload}", flush=True)
    try:
        stack.start()
        meter = CpuMeter(stack)
        rss_start = stack.rss_kib()
        ceiling = broker_ceiling(stack.rabbit_url, concurrency=CONCURRENCY, seconds=5, body_size=1200)
        print(f"broker ceiling: {ceiling:.0f} confirmed msgs/s ({CONCURRENCY} publishers)", flush=True)

        throughput(stack, batch(100), timeout=120)  # warm-up: connections, caches, the classifier
        tg = throughput(stack, batch(args.messages), timeout=600, meter=meter)
        print(f"e2e telegram: {tg}", flush=True)
        print(f"  cpu: {describe_cpu(tg['cpu_ms_per_msg'])}; {describe_batches(tg['batch_sizes'])}", flush=True)
        mixed = throughput(stack, batch(args.messages, ("telegram", "sms", "messenger")), timeout=600, meter=meter)
        print(f"e2e mixed:    {mixed}", flush=True)
        # The four TEXTS repeat but for their numbers, and the router caches per word and per short
        # text: the same run over distinct customers' words in seven languages says what that is worth.
        various = throughput(stack, varied(args.messages), timeout=600, meter=meter)
        print(f"e2e varied:   {various}", flush=True)
        print(f"  cpu: {describe_cpu(various['cpu_ms_per_msg'])}", flush=True)
        lat = latency(stack, batch(int(args.rate * args.latency_seconds)), args.rate, timeout=600, meter=meter)
        print(f"latency:      {lat}", flush=True)
        # The same at a rate far below saturation: the pipeline's own latency, without queueing.
        lat_low = latency(stack, batch(int(args.low_rate * max(10.0, args.latency_seconds))), args.low_rate,
                          timeout=300, meter=meter)
        print(f"latency low:  {lat_low}", flush=True)

        soak_s = 0 if clustered else args.soak_minutes * 60
        soak_msgs = batch(int(soak_s * args.soak_rate))
        warm = int(len(soak_msgs) * 0.2)
        poster = Poster(stack, threads=CONCURRENCY * 2)
        run_stream(poster, soak_msgs[:warm], args.soak_rate)
        rss_warm = stack.rss_kib()
        run_stream(poster, soak_msgs[warm:], args.soak_rate)
        drain(stack, poster.accepted, timeout=600)
        rss_end = stack.rss_kib()
        growth_pct = {n: round((rss_end[n] - rss_warm[n]) / rss_warm[n] * 100, 1) for n in rss_end}
        print(f"memory KiB: start {rss_start} after warm-up {rss_warm} after soak {rss_end}", flush=True)
        if clustered:
            # The nodes' own memory: three brokers on the machine the services share.
            result["cluster_nodes"] = {stack.cluster.node_name(n): stack.cluster.ctl(
                n, "eval", "erlang:memory(total) div 1048576.").strip() + " MiB" for n in (1, 2, 3)}
    finally:
        stack.close()

    result.update({
        "e2e_msgs_per_s": tg["msgs_per_s"], "broker_ceiling_msgs_per_s": round(ceiling, 1),
        "ratio": round(tg["msgs_per_s"] / ceiling, 3), "cpu_ms_per_msg": tg["cpu_ms_per_msg"],
        "batch_sizes": tg["batch_sizes"], "p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"],
        "p99_ms": lat["p99_ms"], "offered_rate": args.rate, "concurrency": CONCURRENCY,
        "e2e_telegram": tg, "e2e_mixed": mixed, "e2e_mixed_msgs_per_s": mixed["msgs_per_s"],
        "e2e_varied_texts": various, "latency": lat,
        "latency_low_rate": lat_low,
        "soak": {"minutes": soak_s / 60, "rate": args.soak_rate, "messages": len(soak_msgs),
                 "rss_kib_start": rss_start, "rss_kib_after_warmup": rss_warm, "rss_kib_end": rss_end,
                 "growth_pct": growth_pct},
        "soak_rss_growth_pct": max(growth_pct.values()),
    })
    result["router_cost_ratio_1m_vs_1k"] = None
    if not args.skip_growth:
        try:
            g = growth.measure(conversations=args.conversations)
            result["router_growth"] = g
            result["router_cost_ratio_1m_vs_1k"] = g["ratio"]
        except Exception as exc:  # noqa: BLE001 - keep the pipeline's figures; say what is missing
            result["router_growth_error"] = f"{type(exc).__name__}: {exc}"
            print(f"router growth failed: {result['router_growth_error']}", flush=True)

    result["kpi_ms_by_period_days"] = None
    result["router_rss_mib_after_kpis"] = None
    if not args.skip_kpis:
        try:
            result.update(kpi_bench.measure(conversations=args.conversations))
        except Exception as exc:  # noqa: BLE001 - keep the other figures; say what is missing
            result["kpi_bench_error"] = f"{type(exc).__name__}: {exc}"
            print(f"kpi bench failed: {result['kpi_bench_error']}", flush=True)

    result["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_summary(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten {args.out}")
    return 1 if "router_growth_error" in result or "kpi_bench_error" in result else 0


VARIED = ROOT / "tests" / "data" / "classify"
VARIED_SOURCE = "tests/data/classify's texts in 7 languages"


def varied_texts() -> list[tuple[str, str]]:
    """(text, language) of the categoriser's evaluation sets (tests/data/classify: held-out and
    fresh customers' messages, nobody's bench template), in a fixed shuffled order."""
    out = []
    for path in sorted(VARIED.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if normalise(row["text"]) not in STOP_WORDS:  # an opt-out is answered by no acknowledgement
                    out.append((row["text"], row.get("lang") or "en"))
    random.Random(15).shuffle(out)
    return out


#: Issue 15's targets, checked here and only here (never in a timed test).
E2E_TARGET = 250.0  # msgs/s, signed Telegram webhook → acknowledgement
CPU_TARGET = 8.0  # ms of CPU per message, summed over the five processes
P99_TARGET_AT_100 = 250.0  # ms
P99_TARGET_AT_20 = 100.0  # ms


def print_summary(r: dict) -> None:
    low = r["latency_low_rate"]
    c = r["cpu_ms_per_msg"]
    cores = r["machine"]["cpus"] or 1
    targets = [
        ("end to end (telegram)", f"{r['e2e_msgs_per_s']} msgs/s", f"≥ {E2E_TARGET:.0f}",
         r["e2e_msgs_per_s"] >= E2E_TARGET),
        ("end to end (mixed)", f"{r['e2e_mixed_msgs_per_s']} msgs/s", "", None),
        ("end to end (varied texts)", f"{r['e2e_varied_texts']['msgs_per_s']} msgs/s, CPU "
         f"{r['e2e_varied_texts']['cpu_ms_per_msg']['total']} ms per message (Telegram, {VARIED_SOURCE})", "", None),
        ("broker ceiling", f"{r['broker_ceiling_msgs_per_s']} msgs/s", "", None),
        ("ratio to ceiling", f"{r['ratio']} (end to end / ceiling, same run)", "", None),
        ("CPU per message", f"{c['total']} ms (gateway {c['gateway']}, router {c['router']}, notifier "
         f"{c['notifier']}, RabbitMQ {c['rabbitmq']}, PostgreSQL {c['postgresql']})", f"≤ {CPU_TARGET:.0f} ms",
         c["total"] <= CPU_TARGET),
        ("CPU bound on this machine", f"{cores * 1000 / c['total']:.0f} msgs/s ({cores} cores / total)"
         if c["total"] else "n/a", "", None),
        ("batch sizes (mean)", describe_batches(r["batch_sizes"]), "", None),
        (f"latency at {r['offered_rate']:.0f}/s", f"p50 {r['p50_ms']} ms  p95 {r['p95_ms']} ms  p99 {r['p99_ms']} ms",
         f"p99 ≤ {P99_TARGET_AT_100:.0f} ms" if r["offered_rate"] == 100 else "",
         r["p99_ms"] <= P99_TARGET_AT_100 if r["offered_rate"] == 100 else None),
        (f"latency at {low['offered_rate']:.0f}/s",
         f"p50 {low['p50_ms']} ms  p95 {low['p95_ms']} ms  p99 {low['p99_ms']} ms",
         f"p99 ≤ {P99_TARGET_AT_20:.0f} ms" if low["offered_rate"] == 20 else "",
         low["p99_ms"] <= P99_TARGET_AT_20 if low["offered_rate"] == 20 else None),
        ("router cost 1M / 1k", f"{r['router_cost_ratio_1m_vs_1k']}", "≤ 1.5",
         None if r["router_cost_ratio_1m_vs_1k"] is None else r["router_cost_ratio_1m_vs_1k"] <= 1.5),
        ("router start-up: classifier", f"{r['classifier']['classifier_startup_s'] * 1000:.0f} ms (language models "
         f"{r['classifier']['language_models_startup_s'] * 1000:.0f} ms)", "≤ 300 ms", r["classifier"]["classifier_startup_s"] <= 0.30),
        ("classification per message", f"{r['classifier']['classify_ms_per_message']:.3f} ms", "≤ 0.27 ms",
         r["classifier"]["classify_ms_per_message"] <= 0.27),
    ]
    if r["soak"]["messages"]:
        targets.append((f"RSS growth, {r['soak']['minutes']} min soak", f"{r['soak_rss_growth_pct']} %", "flat", None))
    for days, k in (r.get("kpi_ms_by_period_days") or {}).items():
        worst = max(k["kpis_p95_ms"], k["dashboard_p95_ms"])
        targets.append((f"KPIs over {days} days", f"API p95 {k['kpis_p95_ms']} ms  dashboard p95 "
                        f"{k['dashboard_p95_ms']} ms", "p95 ≤ 1 s", worst <= 1000))
    if r.get("kpi_ms_by_period_days"):
        targets.append(("first conversation page", f"p95 {r['conversations_first_page_p95_ms']} ms", "≤ 200 ms",
                        r["conversations_first_page_p95_ms"] <= 200))
        targets.append(("router RSS after a year's KPIs", f"{r['router_rss_mib_before_kpis']} → "
                        f"{r['router_rss_mib_after_kpis']} MiB", "≤ 1.2 ×", r["router_rss_ratio_after_kpis"] <= 1.2))
    print(f"\n{'figure':<32}{'measured':<90}{'target':<16}")
    for name, value, target, ok in targets:
        mark = "" if ok is None else ("PASS" if ok else "FAIL")
        print(f"{name:<32}{value:<90}{target:<16}{mark}")
    print(f"mode: {r['mode']}{' (BENCH_QUICK=1)' if r.get('quick') else ''}")
    print(f"work per message: {r['workload']}; notices per message measured: telegram run "
          f"{r['e2e_telegram']['notices_per_msg']}, at {r['offered_rate']:.0f}/s {r['latency']['notices_per_msg']}, "
          f"at {low['offered_rate']:.0f}/s {low['notices_per_msg']}")
    print(f"machine: {r['machine']['cpus']} CPUs, load average at start {r['machine']['loadavg_at_start']}, "
          f"at end {r['machine'].get('loadavg_at_end')} (pid {os.getpid()})")
    print("CPU: RabbitMQ and PostgreSQL's own processes serve whatever else uses this machine's servers during"
          " the run; their figures include it.")


if __name__ == "__main__":
    sys.exit(main())

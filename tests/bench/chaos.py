"""`make chaos`: a stream of signed Telegram webhooks while one fault at a time hits the stack.

Faults, in order: the router killed with SIGKILL and restarted, the notifier likewise, a RabbitMQ
restart, PostgreSQL stopped for 10 s, the Bot API answering 500 then 429 for a while, and the
broker down for 30 s while webhooks keep arriving (the gateway spools, then forwards).

Broker and database outages are made by cutting a TCP proxy between the services and the real
servers (every connection dropped, new ones refused), so the machine's RabbitMQ and PostgreSQL,
which other test runs share, are never touched. After each fault the stream is drained and
checked: every accepted message stored once, in one conversation, acknowledged once.

    python -m tests.bench.chaos            # all faults, table on stdout, var/chaos/latest.json
    python -m tests.bench.chaos --only router_kill9 provider_500_429
    CLUSTER=1 python -m tests.bench.chaos  # cluster mode (make cluster-up first), see CLUSTER_FAULTS
Exit status 1 when anything was lost or duplicated.

Cluster mode: the local 3-node RabbitMQ cluster (deploy/local-cluster.sh), BROKER_URL its failover
list, two gateways (behind a loopback balancer), two routers and two notifiers. Its faults are
made on the real nodes: a SIGKILL of the node leading router.inbound, a 20 s partition of the node
leading notifier.events (iptables between the nodes' addresses), a rolling restart, one router
and one notifier replica SIGKILLed at once, and PostgreSQL cut for 10 s. Webhooks keep arriving
until the fault is repaired (a node back and clustered again), not only for a fixed time.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tests.bench.stack import Msg, Poster, Stack, run_stream
from tests.support.cluster import NODES, LocalCluster
from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "chaos" / "latest.json"

RATE = 20.0  # offered webhooks per second during a fault


@dataclass
class Row:
    fault: str
    mode: str  # "single broker" or "cluster" (3 RabbitMQ nodes, 2 replicas of every service)
    sent: int
    accepted: int
    routed: int
    acknowledged: int
    lost: int
    duplicated: int
    seconds: float
    error: str | None = None  # the fault could not be made or repaired: the row proves nothing


@dataclass
class Fault:
    name: str
    stream_s: float  # how long webhooks keep arriving
    at_s: float  # when the fault starts, from the stream's start
    inject: Callable[[Stack], None]  # runs in its own thread: break, wait, repair
    #: Keep the webhooks coming until the fault is repaired, however long that takes (cluster
    #: faults: a node's restart takes 10-40 s on a busy machine).
    until_repaired: bool = False


def _kill_restart(name: str) -> Callable[[Stack], None]:
    def inject(stack: Stack) -> None:
        stack.services.kill(name)  # SIGKILL: no chance to finish the message in hand
        stack.services.start(name)

    return inject


def _cut(proxy: str, seconds: float) -> Callable[[Stack], None]:
    def inject(stack: Stack) -> None:
        p = getattr(stack, proxy)
        p.cut()
        try:
            time.sleep(seconds)
        finally:
            p.restore()

    return inject


def _provider_errors(stack: Stack) -> None:
    # Transient answers the notifier must retry: a burst of 500s, then 429s with retry_after.
    stack.bot.fail_next(40, status=500)
    until(lambda: not stack.bot._failures, timeout=60, interval=0.2, message="the 500 burst consumed")
    stack.bot.fail_next(30, status=429, retry_after=1)
    until(lambda: not stack.bot._failures, timeout=60, interval=0.2, message="the 429 burst consumed")


FAULTS = [
    Fault("router_kill9", 12, 3, _kill_restart("router")),
    Fault("notifier_kill9", 12, 3, _kill_restart("notifier")),
    Fault("rabbitmq_restart", 15, 3, _cut("broker_proxy", 5)),
    Fault("postgres_stop_10s", 18, 3, _cut("pg_proxy", 10)),
    Fault("provider_500_429", 15, 2, _provider_errors),
    Fault("broker_down_30s", 40, 4, _cut("broker_proxy", 30)),
]


# -- cluster mode --------------------------------------------------------------------------------


def _cluster(stack: Stack) -> LocalCluster:
    assert stack.cluster is not None
    return stack.cluster


def _any_running(cluster: LocalCluster, but: int | None = None) -> int:
    for n in NODES:
        if n != but:
            try:
                if cluster.running_nodes(via=n):
                    return n
            except RuntimeError:
                continue
    raise RuntimeError("no cluster node answers")


def _whole(cluster: LocalCluster, timeout: float = 180) -> None:
    """Wait until all three nodes run in one cluster again (the next fault starts from a whole one)."""
    names = {cluster.node_name(n) for n in NODES}

    def whole() -> bool:
        try:
            return cluster.running_nodes(via=_any_running(cluster)) == names
        except RuntimeError:
            return False

    until(whole, timeout=timeout, interval=2, message="the cluster whole again")


def _node_kill9_leader(stack: Stack) -> None:
    cluster = _cluster(stack)
    leader = cluster.leader("router.inbound", via=_any_running(cluster), vhost=stack.vhost)
    print(f"  SIGKILL {cluster.node_name(leader)} (leads router.inbound)", flush=True)
    cluster.kill(leader)
    time.sleep(5)
    cluster.start(leader)
    _whole(cluster)


def _node_partition_20s(stack: Stack) -> None:
    cluster = _cluster(stack)
    node = cluster.leader("notifier.events", via=_any_running(cluster), vhost=stack.vhost)
    print(f"  cut {cluster.node_name(node)} (leads notifier.events) off for 20 s", flush=True)
    cluster.cut(node)
    try:
        time.sleep(20)
    finally:
        cluster.heal()
    _whole(cluster)


def _rolling_restart(stack: Stack) -> None:
    cluster = _cluster(stack)
    for n in NODES:
        print(f"  restart {cluster.node_name(n)}", flush=True)
        cluster.stop(n)
        cluster.start(n)
        _whole(cluster)


def _replicas_kill9(stack: Stack) -> None:
    procs = stack.services.procs
    victims = ["router", "notifier"]
    for name in victims:  # both signals first, then the waits: the same moment
        procs[name].send_signal(9)
    for name in victims:
        procs[name].wait(timeout=30)
    for name in victims:
        stack.services.start(name)


CLUSTER_FAULTS = [
    Fault("node_kill9_leader", 10, 3, _node_kill9_leader, until_repaired=True),
    Fault("node_partition_20s", 10, 3, _node_partition_20s, until_repaired=True),
    Fault("rolling_restart", 10, 3, _rolling_restart, until_repaired=True),
    Fault("replicas_kill9", 10, 3, _replicas_kill9, until_repaired=True),
    Fault("postgres_stop_10s", 15, 3, _cut("pg_proxy", 10)),
]
CLUSTER_RATE = 10.0  # webhooks/s: six services and three nodes share this machine's two cores


def run_fault(stack: Stack, fault: Fault, numbers: itertools.count, drain_s: float, *, rate: float = RATE,
              mode: str = "single broker") -> Row:
    poster = Poster(stack, threads=8)
    # Until repaired: a stream long enough for any repair, stopped 2 s after the repair.
    count = int((fault.stream_s if not fault.until_repaired else 900) * rate)
    msgs = [Msg("telegram", next(numbers)) for _ in range(count)]
    started = time.monotonic()
    errors: list[BaseException] = []
    stop = threading.Event()

    def chaos() -> None:
        try:
            time.sleep(fault.at_s)
            fault.inject(stack)
        except BaseException as exc:  # noqa: BLE001 - reported with the row, never leaves a fault in place
            errors.append(exc)
        finally:
            if fault.until_repaired:
                time.sleep(max(2.0, fault.stream_s - (time.monotonic() - started)))
                stop.set()

    injector = threading.Thread(target=chaos, name=f"fault-{fault.name}")
    injector.start()
    run_stream(poster, msgs, rate, stop=stop)
    injector.join()
    msgs = msgs[:sum(poster.statuses.values())]
    if errors:
        print(f"  fault {fault.name} failed to inject or repair: {errors[0]!r}")

    accepted = {m.address: m for m in poster.accepted}

    def drained() -> bool:
        acks = stack.acks()
        return all(acks[a] for a in accepted)

    try:
        until(drained, timeout=drain_s, interval=0.5, message=f"{fault.name}: every accepted message acknowledged")
    except AssertionError as exc:
        print(f"  {exc}".splitlines()[0][:200])
    # A sentinel behind the stream: once it is acknowledged, redelivered duplicates ahead of it in
    # the queues have been handled too; then a short pause for any straggling retry.
    sentinel = Msg("telegram", next(numbers))
    if poster.post(sentinel) == 200:
        try:
            until(lambda: stack.acks()[sentinel.address], timeout=drain_s, interval=0.2, message="the sentinel")
        except AssertionError:
            pass
    time.sleep(2)

    acks = stack.acks()
    ids = [m.external_id for m in accepted.values()]
    stored, convs = stack.stored(ids)
    routed = sum(1 for i in ids if stored[i])
    acknowledged = sum(1 for a in accepted if acks[a])
    lost = sum(1 for m in accepted.values() if not stored[m.external_id] or not acks[m.address])
    duplicated = (sum(max(0, acks[a] - 1) for a in accepted) + sum(max(0, stored[i] - 1) for i in ids)
                  + sum(max(0, convs[i] - 1) for i in ids))
    for m in accepted.values():
        # Which message and which kind: the services' logs (kept in the work dir) tell the rest.
        if acks[m.address] > 1 or stored[m.external_id] > 1 or convs[m.external_id] > 1:
            print(f"  duplicated: {m.address} / {m.external_id}: acknowledged {acks[m.address]}, "
                  f"stored {stored[m.external_id]}, conversations {convs[m.external_id]}", flush=True)
    return Row(fault.name, mode, sent=len(msgs), accepted=len(accepted), routed=routed, acknowledged=acknowledged,
               lost=lost, duplicated=duplicated, seconds=round(time.monotonic() - started, 1),
               error=repr(errors[0]) if errors else None)


def print_table(rows: list[Row]) -> None:
    head = ("fault", "mode", "sent", "accepted", "routed", "acknowledged", "lost", "duplicated", "seconds")
    print(f"{head[0]:<20}" + "".join(f"{h:>14}" for h in head[1:]))
    for r in rows:
        vals = asdict(r)
        print(f"{r.fault:<20}" + "".join(f"{vals[h]:>14}" for h in head[1:]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run only these faults", choices=sorted({f.name for f in FAULTS + CLUSTER_FAULTS}))
    parser.add_argument("--drain", type=float, default=120, help="seconds to wait for the stream to settle")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    clustered = os.environ.get("CLUSTER") == "1"
    mode, rate, all_faults = ("cluster", CLUSTER_RATE, CLUSTER_FAULTS) if clustered else ("single broker", RATE, FAULTS)
    faults = [f for f in all_faults if not args.only or f.name in args.only]

    workdir = Path(tempfile.mkdtemp(prefix="sbchaos-"))
    cluster = None
    if clustered:
        cluster = LocalCluster()
        try:
            _whole(cluster, timeout=10)
        except AssertionError:
            print("chaos: CLUSTER=1 needs the local cluster: make cluster-up", file=sys.stderr)
            return 2
    stack = Stack(workdir=workdir, proxied=True, log_level="INFO", cluster=cluster, replicas=2 if clustered else 1)
    rows: list[Row] = []
    numbers = itertools.count(1)
    print(f"chaos ({mode}): {len(faults)} faults at {rate:.0f} webhooks/s; logs in {workdir}", flush=True)
    try:
        stack.start()
        for fault in faults:
            print(f"- {fault.name} ...", flush=True)
            row = run_fault(stack, fault, numbers, args.drain, rate=rate, mode=mode)
            rows.append(row)
            print(f"  {asdict(row)}", flush=True)
    finally:
        stack.close()
    print()
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # One table for both modes: this run's rows replace the earlier rows of its mode only.
    kept = []
    if args.out.exists():
        try:
            kept = [r for r in json.loads(args.out.read_text()) if r.get("mode", "single broker") != mode]
        except (ValueError, AttributeError):
            kept = []
    args.out.write_text(json.dumps(kept + [{k: v for k, v in asdict(r).items() if k not in ("seconds", "error")}
                                           for r in rows], indent=2))
    print(f"\nwritten {args.out}")
    bad = [r for r in rows if r.lost or r.duplicated or r.accepted < r.sent or r.error]
    if bad or len(rows) < len(faults):
        print("FAILED: " + ", ".join(f"{r.fault} (lost {r.lost}, duplicated {r.duplicated}, "
                                     f"refused {r.sent - r.accepted}, fault error {r.error})" for r in bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

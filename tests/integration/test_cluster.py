"""Clients that know the cluster: against a real 3-node RabbitMQ cluster (deploy/local-cluster.sh,
its own ports and var/ directory for this test), the node the consumer and the gateway's publisher
are connected to is killed with SIGKILL; both carry on with a surviving node (the topology declared
there), and every message published before, during and after is handled, none lost."""

from __future__ import annotations

import threading
import time

import pytest

from shared.bus import publisher as publisher_module
from shared.bus.consumer import Worker
from shared.bus.publisher import BusUnavailable, Publisher
from shared.bus.topology import QUEUES, ROUTER_INBOUND
from shared.contracts import Envelope
from tests.integration.test_bus import inbound_envelope
from tests.support.cluster import ROOT, LocalCluster, free_base
from tests.support.wait import until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # a cluster starts in 30-60 s on a busy machine


@pytest.fixture(scope="module")
def cluster():
    base = free_base()
    c = LocalCluster(base, ROOT / "var" / f"cluster-test-{base}")
    try:
        c.up()
        yield c
    finally:
        c.down()


def publish_until_confirmed(publisher: Publisher, envelope: Envelope, deadline: float = 60) -> int:
    """What the gateway does with a publish that was not confirmed (spool, forward later), in short:
    try again until the cluster confirms it. Returns how many attempts were refused."""
    refused = 0
    end = time.monotonic() + deadline
    while True:
        try:
            publisher.publish(envelope)
            return refused
        except BusUnavailable:
            refused += 1
            if time.monotonic() > end:
                raise
            time.sleep(0.2)


class FirstNode:
    """Pins where connections start in the failover list (a random node otherwise)."""

    @staticmethod
    def randrange(n: int) -> int:
        return 0


def test_killing_the_clients_node_moves_them_to_a_survivor_and_loses_nothing(cluster: LocalCluster,
                                                                             monkeypatch) -> None:
    monkeypatch.setattr(publisher_module, "_start", FirstNode())
    url = cluster.url()
    assert url.count(";") == 2  # one failover URL naming the three nodes
    seen: list[str] = []
    lock = threading.Lock()

    def handler(env: Envelope) -> list[Envelope]:
        with lock:
            seen.append(env.correlation_id)
        return []

    stop = threading.Event()
    worker = Worker(url=url, spec=ROUTER_INBOUND, handler=handler, publisher=Publisher(url))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    gateway = Publisher(url, confirm_timeout=5, declare_topology=True)
    try:
        assert worker.ready.wait(30)
        for n in range(1, 11):
            gateway.publish(inbound_envelope(n))
        until(lambda: len(seen) == 10, timeout=30, message="the first ten handled")
        # Both clients took the first node (pinned); it leads router.inbound (declared there).
        assert set(cluster.connection_nodes(via=2)) == {cluster.node_name(1)}
        assert cluster.leader(ROUTER_INBOUND.name, via=2) == 1

        cluster.kill(1)
        for n in range(11, 41):
            publish_until_confirmed(gateway, inbound_envelope(n))
        until(lambda: len(set(seen)) == 40, timeout=90, message="every message handled after the kill")
        until(worker.ready.is_set, timeout=30, message="the consumer attached again")
        on = set(cluster.connection_nodes(via=2))
        assert on and cluster.node_name(1) not in on  # carried on with a survivor
        assert cluster.leader(ROUTER_INBOUND.name, via=2) in (2, 3)  # a new leader was elected
        # The topology is there on the survivors: every queue, tiers and dead letters included.
        listed = cluster.ctl(2, "list_queues", "name", "type")
        for spec in QUEUES.values():
            for name in (spec.name, *spec.retry_tiers, spec.dlq):
                assert f"{name}\tquorum" in listed
    finally:
        stop.set()
        thread.join(15)
        gateway.close()
        cluster.start(1)  # leave the cluster whole for the module's other tests
    assert sorted(set(seen), key=lambda c: int(c.split("-")[1])) == [f"corr-{n}" for n in range(1, 41)]
    # At least once: a delivery in flight at the kill may come again; none is missing.
    assert len(seen) >= 40


def test_a_retry_waiting_in_its_tier_survives_the_loss_of_the_tiers_leader(cluster: LocalCluster) -> None:
    """A handler's retry waits in a quorum tier: killing the node that leads the tier loses
    nothing; it expires back to the work queue (dead-lettered at least once) on the survivors."""
    from shared.bus.consumer import ATTEMPTS_HEADER
    from shared.bus.publisher import connect, ensure_connected
    from shared.bus.topology import PLUMBING, declare

    url = cluster.url()
    with connect(url) as conn:
        ensure_connected(conn)
        declare(conn)
    tier = ROUTER_INBOUND.retry_tier(15)
    Publisher(url).publish(inbound_envelope(99), exchange=PLUMBING, routing_key=tier,
                           headers={ATTEMPTS_HEADER: 1})
    leader = cluster.leader(tier, via=1)
    cluster.kill(leader)  # the retry is waiting out its 15 s there
    seen: list[str] = []
    stop = threading.Event()
    worker = Worker(url=url, spec=ROUTER_INBOUND, handler=lambda env: seen.append(env.correlation_id) or [],
                    publisher=Publisher(url))
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        until(lambda: "corr-99" in seen, timeout=90, message="the retry back from its tier after the leader's loss")
        survivor = next(n for n in (1, 2, 3) if n != leader)
        assert cluster.leader(tier, via=survivor) != leader  # a new leader held it
    finally:
        stop.set()
        thread.join(15)
        cluster.start(leader)


def test_connections_spread_over_the_nodes(cluster: LocalCluster) -> None:
    from shared.bus.publisher import connect, ensure_connected

    conns = [connect(cluster.url()) for _ in range(30)]
    try:
        for conn in conns:
            ensure_connected(conn)
        on = cluster.connection_nodes(via=1)
    finally:
        for conn in conns:
            conn.release()
    assert {cluster.node_name(n) for n in (1, 2, 3)} == set(on)  # 30 random starts: all three (p > 0.9999)

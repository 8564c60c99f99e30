"""The local 3-node RabbitMQ cluster (deploy/local-cluster.sh) from Python: the cluster tests, and
`CLUSTER=1 make chaos` / `make bench`. Every action is the script's, so what the tests do to a
node is what an operator would type."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local-cluster.sh"
NODES = (1, 2, 3)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base(rng: random.Random | None = None) -> int:
    """A port base whose AMQP (base+N), distribution (20000+base+N) and epmd (base-1300) ports are
    all free: a test's own cluster never meets another clone's."""
    rng = rng or random.Random()
    for _ in range(50):
        base = rng.randrange(6100, 6900, 10)
        ports = [base - 1300, *(base + n for n in NODES), *(20000 + base + n for n in NODES)]
        if all(_free(p) for p in ports):
            return base
    raise RuntimeError("no free port range for a local cluster")


class LocalCluster:
    def __init__(self, base: int | None = None, directory: Path | None = None):
        self.base = base or int(os.environ.get("CLUSTER_PORT_BASE") or 5680)
        self.dir = directory or Path(os.environ.get("CLUSTER_DIR") or ROOT / "var" / "cluster")

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CLUSTER_PORT_BASE": str(self.base), "CLUSTER_DIR": str(self.dir)}

    def run(self, *args: str, timeout: float = 300, check: bool = True) -> str:
        done = subprocess.run(["bash", str(SCRIPT), *args], env=self._env(), capture_output=True, text=True,
                              timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"local-cluster.sh {' '.join(args)}: {done.stderr or done.stdout}")
        return done.stdout

    def up(self) -> None:
        self.run("up")

    def down(self) -> None:
        self.run("down", check=False)

    def url(self) -> str:
        return self.run("url").strip()

    def amqp_port(self, n: int) -> int:
        return self.base + n

    def node_url(self, n: int) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port(n)}//"

    def node_name(self, n: int) -> str:
        return f"sb{n}@127.{(self.base >> 8) & 255}.{self.base & 255}.{10 + n}"  # as local-cluster.sh names it

    def kill(self, n: int) -> None:
        self.run("kill", str(n))

    def start(self, n: int) -> None:
        self.run("start", str(n))

    def stop(self, n: int) -> None:
        self.run("stop", str(n))

    def cut(self, n: int) -> None:
        self.run("cut", str(n))

    def heal(self) -> None:
        self.run("heal")

    def ctl(self, n: int, *args: str, timeout: float = 60) -> str:
        return self.run("ctl", str(n), "-q", *args, timeout=timeout)

    def running_nodes(self, via: int) -> set[str]:
        out = self.ctl(via, "eval", "rabbit_nodes:all_running().", timeout=30)
        return {name for name in (self.node_name(n) for n in NODES) if name in out}

    def connection_nodes(self, via: int) -> list[str]:
        """The node each client connection of the cluster is attached to."""
        out = self.ctl(via, "list_connections", "port", timeout=30)  # the server's AMQP port: its node
        by_port = {self.amqp_port(n): self.node_name(n) for n in NODES}
        return [by_port[int(line)] for line in out.split() if line.isdigit() and int(line) in by_port]

    def leader(self, queue: str, via: int, vhost: str = "/") -> int:
        """The node (1-3) that leads a quorum queue."""
        out = self.ctl(via, "list_queues", "-p", vhost, "name", "leader", timeout=30)
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == queue:
                return next(n for n in NODES if parts[1] == self.node_name(n))
        raise LookupError(f"no leader for {queue}: {out}")

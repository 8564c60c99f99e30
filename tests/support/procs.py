"""Running Switchboard's services as real processes in tests (services mode)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Embedded:
    """`switchboard run` as a process: where it answers, its environment, its output."""

    base: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen


@contextmanager
def embedded_run(tmp_path: Path, config: Path, extra_env: dict[str, str] | None = None) -> Iterator[Embedded]:
    """The embedded mode (one process, SQLite in tmp_path, no broker) on a free port, ready when the
    block starts and sent SIGTERM when it ends; `proc.returncode` then says whether it stopped cleanly.
    The caller's TELEGRAM_, BROKER_ and DATABASE_ variables are left out."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "BROKER_", "DATABASE_"))}
    env.update({"PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path}/switchboard.db",
                "SWITCHBOARD_SPOOL_DIR": str(tmp_path / "spool"), "PYTHONUNBUFFERED": "1",
                "SWITCHBOARD_CONFIG": str(config), **(extra_env or {})})
    log = tmp_path / "run.out"
    with open(log, "w+") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "switchboard"), "run"], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            try:
                return httpx.get(base + "/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            until(ready, timeout=60, interval=0.2, message="embedded mode ready")
            yield Embedded(base, env, log, proc)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


@dataclass
class Services:
    env: dict[str, str]
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: Settings of one replica over `env` ("router2": its own ROUTER_PORT, ...).
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The port webhooks go to when it is not the gateway's own (a balancer in front of replicas).
    front_port: int | None = None

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.front_port or self.ports['gateway']}"

    def start(self, name: str, wait: bool = True) -> None:
        """Start service `name`; a replica is named after its service with a number ("router2")."""
        log = open(self.workdir / f"{name}.log", "ab")
        module = name.rstrip("0123456789")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", f"services.{module}"], cwd=ROOT,
                                            env={**self.env, **self.overrides.get(name, {})},
                                            stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = 60) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/readyz"

        def ready() -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until(ready, timeout=timeout, interval=0.2, message=f"{name} ready")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(timeout=30)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def services_env(*, broker_url: str, database_url: str, workdir: Path, extra: dict[str, str] | None = None
                 ) -> tuple[dict[str, str], dict[str, int]]:
    ports = {"gateway": free_port(), "router": free_port(), "notifier": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEGRAM_", "TWILIO_", "META_", "SMTP_", "IMAP_"))}
    env.update({
        "SWITCHBOARD_CONFIG": str(ROOT / "deploy" / "switchboard.yaml"),
        "BROKER_URL": broker_url,
        "DATABASE_URL": database_url,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{ports['gateway']}",
        "GATEWAY_PORT": str(ports["gateway"]),
        "ROUTER_PORT": str(ports["router"]),
        "NOTIFIER_PORT": str(ports["notifier"]),
        "SWITCHBOARD_SPOOL_DIR": str(workdir / "spool"),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    })
    return env, ports


def _agent_addresses() -> frozenset[str]:
    agents = yaml.safe_load((ROOT / "deploy" / "switchboard.yaml").read_text())["agents"]
    return frozenset(str(a["notify"]["address"]) for a in agents if a.get("notify"))


#: Where the example config's agents get their notices (Telegram chats, e-mail addresses).
AGENT_ADDRESSES = _agent_addresses()


def to_customers(sent: list) -> list:
    """What was sent to customers (fake Bot API sends, SMTP mails), the agents' notices left out:
    the services run on the real clock, so whether an agent is on shift — and is notified at once
    — depends on when the test runs."""
    return [s for s in sent
            if not ({getattr(s, "chat_id", None)} | set(getattr(s, "rcpt_tos", ()))) & AGENT_ADDRESSES]


#: The Telegram bot the end-to-end tests run against the fake Bot API, and its webhook secret.
TELEGRAM_TOKEN = "123456:E2E-token"
TELEGRAM_SECRET = "e2e-secret_token"


def edited_config(workdir: Path, edit: Callable[[dict], None]) -> Path:
    """The example config (deploy/switchboard.yaml) changed by `edit`, written to `workdir`."""
    data = yaml.safe_load((ROOT / "deploy" / "switchboard.yaml").read_text())
    edit(data)
    path = workdir / "switchboard.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


@contextmanager
def running_services(*, broker_url: str, database_url: str, workdir: Path, telegram_api: str,
                     edit_config: Callable[[dict], None] | None = None, extra: dict[str, str] | None = None
                     ) -> Iterator[Services]:
    """Router, notifier and gateway as processes (in that order, each ready before the next),
    against the Bot API at `telegram_api` (webhooks signed with TELEGRAM_SECRET), the example
    config changed by `edit_config`, and `extra` settings (other providers' fakes). Stopped
    afterwards, with the tail of each one's log printed for a failing test's report."""
    settings = {"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_API_BASE": telegram_api,
                "TELEGRAM_WEBHOOK_SECRET": TELEGRAM_SECRET, **(extra or {})}
    if edit_config is not None:
        settings["SWITCHBOARD_CONFIG"] = str(edited_config(workdir, edit_config))
    env, ports = services_env(broker_url=broker_url, database_url=database_url, workdir=workdir, extra=settings)
    svc = Services(env=env, workdir=workdir, ports=ports)
    try:
        for name in ("router", "notifier", "gateway"):
            svc.start(name)
        yield svc
    finally:
        svc.stop_all()
        for name in ("gateway", "router", "notifier"):
            print(f"--- {name} log tail ---\n{svc.log(name)}")

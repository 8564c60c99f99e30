"""SIGTERM (what `docker stop` and Kubernetes send) mid-stream: nothing lost, nothing doubled.

The three services run as processes against the real RabbitMQ and PostgreSQL and a fake Bot API.
A stream of webhooks keeps coming while one service is told to stop; it must exit on its own,
cleanly (exit code 0), within its grace period, and after a restart every message is routed and
acknowledged exactly once.
"""

from __future__ import annotations

import signal
import sqlite3
import threading

import httpx
import pytest

from tests.support.db import db_count
from tests.support.procs import TELEGRAM_SECRET as SECRET
from tests.support.procs import TELEGRAM_TOKEN as TOKEN
from tests.support.procs import Services, services_env, to_customers
from tests.support.tcpproxy import TcpProxy
from tests.support.telegram import post, update
from tests.support.wait import until

pytestmark = pytest.mark.e2e


def terminate(svc: Services, name: str, timeout: float = 20) -> int:
    """SIGTERM, then the exit code; a process that has to be killed fails the test."""
    proc = svc.procs[name]
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def start_services(rabbit_url, pg_url, fake_bot_api, tmp_path, gateway_broker: str | None = None) -> Services:
    env, ports = services_env(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path, extra={
        "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE": fake_bot_api.base_url, "TELEGRAM_WEBHOOK_SECRET": SECRET,
    })
    svc = Services(env=env, workdir=tmp_path, ports=ports)
    svc.gateway_env = {**env, "BROKER_URL": gateway_broker or rabbit_url}  # type: ignore[attr-defined]
    return svc


def start_gateway(svc: Services, *, ready: bool = True) -> None:
    # The gateway alone may reach the broker through a proxy the test cuts.
    base, svc.env = svc.env, svc.gateway_env  # type: ignore[attr-defined]
    try:
        svc.start("gateway", wait=ready)
    finally:
        svc.env = base
    if not ready:  # the broker is away: alive (and spooling), not ready
        until(lambda: _answers(f"{svc.gateway}/healthz"), timeout=60, interval=0.2, message="gateway alive")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def assert_each_routed_once(svc: Services, fake_bot_api, pg_url, users: list[int]) -> None:
    until(lambda: len(to_customers(fake_bot_api.sent)) >= len(users), timeout=90, message=f"{len(users)} acknowledgements")
    # A sentinel behind everything: once it is acknowledged, any redelivered duplicate was handled.
    assert post(svc, update(929999, 899999, "sentinel", "S", "en")).status_code == 200
    until(lambda: fake_bot_api.sent_to(899999), timeout=30, message="the sentinel's acknowledgement")
    assert sorted(int(s.chat_id) for s in to_customers(fake_bot_api.sent)) == sorted(users) + [899999]
    assert db_count(pg_url, "SELECT count(*) FROM messages") == len(users) + 1
    assert db_count(pg_url, "SELECT count(*) FROM outbox WHERE status = 'sent' AND kind <> 'notice'") == len(users) + 1


class Stream:
    """Webhooks posted from a few threads, the way a provider retries: until answered 200."""

    def __init__(self, svc: Services, first_update: int, users: list[int], threads: int = 3):
        self.svc, self.users = svc, users
        self.todo = [(first_update + i, user) for i, user in enumerate(users)]
        self.answered: list[int] = []
        self.refused: list[tuple[int, int]] = []  # not served: connection refused or reset
        self.errors: list[str] = []  # anything else, e.g. a 5xx: never acceptable
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while True:
            with self.lock:
                if not self.todo:
                    return
                update_id, user = self.todo.pop(0)
            try:
                answer = post(self.svc, update(update_id, user, f"Where is my order {user}?", f"C{user}", "en"))
            except httpx.TransportError:
                with self.lock:
                    self.refused.append((update_id, user))
                continue
            with self.lock:
                if answer.status_code == 200:
                    self.answered.append(user)
                else:
                    self.errors.append(f"{update_id}: {answer.status_code} {answer.text[:200]}")

    def start(self) -> Stream:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(timeout=60)

    def retry_refused(self) -> None:
        for update_id, user in self.refused:
            assert post(self.svc, update(update_id, user, f"Where is my order {user}?", f"C{user}", "en")
                        ).status_code == 200
            self.answered.append(user)
        self.refused.clear()


@pytest.fixture
def cleanup():
    started: list[Services] = []
    yield started.append
    for svc in started:
        svc.stop_all()
        for name in ("gateway", "router", "notifier"):
            print(f"--- {name} log tail ---\n{svc.log(name)}")


def test_router_sigterm_mid_stream_then_restart(rabbit_url, pg_url, fake_bot_api, tmp_path, cleanup) -> None:
    svc = start_services(rabbit_url, pg_url, fake_bot_api, tmp_path)
    cleanup(svc)
    for name in ("router", "notifier"):
        svc.start(name)
    start_gateway(svc)
    users = [810000 + i for i in range(60)]
    stream = Stream(svc, 920000, users).start()
    until(lambda: len(to_customers(fake_bot_api.sent)) >= 5, timeout=30, message="the first acknowledgements")
    assert terminate(svc, "router") == 0
    assert '"router stopped"' in svc.log("router")
    stream.join()  # the gateway keeps accepting while the router is away: the queue holds them
    assert stream.errors == [] and stream.refused == [] and sorted(stream.answered) == users
    svc.start("router")
    assert_each_routed_once(svc, fake_bot_api, pg_url, users)


def test_gateway_sigterm_answers_in_flight_and_keeps_its_spool(rabbit_url, pg_url, fake_bot_api, tmp_path,
                                                                 cleanup) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    vhost = rabbit_url.rsplit("/", 1)[1]
    svc = start_services(rabbit_url, pg_url, fake_bot_api, tmp_path,
                         gateway_broker=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}")
    cleanup(svc)
    try:
        for name in ("router", "notifier"):
            svc.start(name)
        start_gateway(svc)

        # 1. SIGTERM while webhooks stream in: each is answered 200 or never served (the provider
        #    retries those); none gets an error, none that got 200 is lost.
        first = [820000 + i for i in range(60)]
        stream = Stream(svc, 930000, first).start()
        until(lambda: len(stream.answered) >= 10, timeout=30, message="webhooks answered")
        assert terminate(svc, "gateway") == 0
        stream.join()
        print(f"at SIGTERM: {len(stream.answered)} answered, {len(stream.refused)} never served")
        assert stream.errors == []
        assert '"gateway stopped"' in svc.log("gateway")

        # 2. The broker goes away: the restarted gateway spools; SIGTERM keeps the spool on disk.
        proxy.cut()
        start_gateway(svc, ready=False)
        spooled = [830000 + i for i in range(5)]
        for i, user in enumerate(spooled):
            answer = post(svc, update(940000 + i, user, f"Where is my order {user}?", f"C{user}", "en"))
            assert answer.status_code == 200 and answer.json()["accepted"][0]["outcome"] == "spooled"
        assert terminate(svc, "gateway") == 0
        with sqlite3.connect(tmp_path / "spool" / "gateway.sqlite") as db:
            assert db.execute("SELECT count(*) FROM spool").fetchone()[0] == len(spooled)

        # 3. The broker is back, the gateway restarts, forwards its spool; the providers retry.
        proxy.restore()
        start_gateway(svc)
        stream.retry_refused()
        assert_each_routed_once(svc, fake_bot_api, pg_url, first + spooled)
        assert sorted(stream.answered) == first
    finally:
        proxy.close()

"""`make up` for real: the compose stack on this machine's Docker engine (dockerd started when none
answers), every image built here (the services, and RabbitMQ and PostgreSQL from Debian's
packages), nothing pulled. Every container must become healthy; a signed Telegram webhook sent to
the gateway's published port must be acknowledged at a fake Bot API running on the machine; with
one of the two router containers killed (SIGKILL), the next message must be acknowledged too.
Then `make down`, and the test's volumes, project and (if it started it) dockerd are removed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.fakes.telegram_api import FakeBotApi
from tests.support.procs import free_port
from tests.support.wait import until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(3600)]  # a first build of five images takes minutes

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "123456:COMPOSE-token"
SECRET = "compose-secret_token"


def sh(*argv: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = True
       ) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(scope="module")
def engine():
    """The Docker engine: the one that answers, else a dockerd of our own, stopped afterwards."""
    # No docker CLI yet: compose.sh installs Debian's docker.io and docker-compose.
    started = shutil.which("docker") is None or sh("docker", "info", check=False).returncode != 0
    sh("bash", "deploy/compose.sh", "engine-up", timeout=600)
    yield
    if started:
        sh("bash", "deploy/compose.sh", "engine-down", timeout=120, check=False)


def bridge_address() -> str:
    """The machine's address on Docker's default bridge: what host.docker.internal resolves to."""
    config = json.loads(sh("docker", "network", "inspect", "bridge").stdout)[0]["IPAM"]["Config"][0]
    if "Gateway" in config:
        return config["Gateway"]
    # Not always recorded (dockerd 20.10): the bridge interface's own address.
    out = sh("ip", "-4", "-o", "addr", "show", "docker0").stdout
    return out.split(" inet ", 1)[1].split("/", 1)[0]


def webhook(gateway: str, n: int) -> int:
    user = 6_100_000_000 + n
    update = {"update_id": 900_000 + n, "message": {
        "message_id": n, "date": int(time.time()), "text": f"Where is my parcel? Order {n}.",
        "from": {"id": user, "is_bot": False, "first_name": f"C{n}", "language_code": "en"},
        "chat": {"id": user, "type": "private", "first_name": f"C{n}"}}}
    response = httpx.post(f"{gateway}/webhooks/telegram", json=update, timeout=30,
                          headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 200, response.text
    return user


def acknowledged(bot: FakeBotApi, user: int) -> bool:
    with bot._lock:
        return any(s.chat_id == str(user) for s in bot.sent)


def test_make_up_serves_a_webhook_and_survives_a_router_kill(engine) -> None:
    bot = FakeBotApi()
    bot.bind_host = bridge_address()
    bot.start()
    port = free_port()
    project = f"sbdeploy{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "COMPOSE_PROJECT": project, "GATEWAY_HOST_PORT": str(port),
           "RABBITMQ_MANAGEMENT_PORT": str(free_port()), "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET,
           "TELEGRAM_API_BASE": f"http://host.docker.internal:{bot.port}/bot"}  # PTB appends the token
    gateway = f"http://127.0.0.1:{port}"
    try:
        sh("make", "up", env=env, timeout=3000)  # returns once every container is healthy
        ps = sh("bash", "deploy/compose.sh", "ps", env=env).stdout
        for service in ("rabbitmq", "postgres", "gateway", "router", "notifier"):
            assert service in ps

        first = webhook(gateway, 1)
        until(lambda: acknowledged(bot, first), timeout=120, interval=0.5, message="the first acknowledgement")

        routers = sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
                     "--filter", "label=com.docker.compose.service=router").stdout.split()
        assert len(routers) == 2  # deploy.replicas honoured
        sh("docker", "kill", "--signal", "KILL", routers[0])
        second = webhook(gateway, 2)
        until(lambda: acknowledged(bot, second), timeout=120, interval=0.5,
              message="acknowledged with one router killed")
        with bot._lock:
            to_customers = [s.chat_id for s in bot.sent if s.chat_id in (str(first), str(second))]
        assert sorted(to_customers) == sorted([str(first), str(second)])  # each once
    finally:
        logs = sh("bash", "deploy/compose.sh", "ps", env=env, check=False)
        print(logs.stdout, logs.stderr)
        sh("make", "down", env=env, timeout=300, check=False)
        sh("bash", "deploy/compose.sh", "down", env={**env, "DOWN_VOLUMES": "1"}, timeout=300, check=False)
        bot.stop()
    left = sh("docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    assert left == []  # make down removed every container

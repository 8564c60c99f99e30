"""The service images, built for real with buildah and started far enough to answer.

`deploy/images.sh` (what `make images` runs) builds the three images from the Dockerfiles in
deploy/docker/ on a Debian base it makes itself. Each image is then run the way an orchestrator
would: its own ENTRYPOINT as its own (non-root) USER, pointed at this machine's RabbitMQ and
PostgreSQL (fresh vhost and database); it must answer /healthz, /readyz and /metrics, its own
HEALTHCHECK command must pass inside it, and SIGTERM must stop it cleanly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.procs import free_port
from tests.support.wait import until

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(1800)]  # a first build takes minutes

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("gateway", "router", "notifier")
TAG = "test"


@pytest.fixture(scope="module")
def images() -> dict[str, str]:
    build = subprocess.run(["bash", "deploy/images.sh"], cwd=ROOT, env={**os.environ, "TAG": TAG},
                           capture_output=True, text=True, timeout=1800)
    assert build.returncode == 0, f"deploy/images.sh failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"
    return {svc: f"localhost/switchboard-{svc}:{TAG}" for svc in SERVICES}


def image_config(image: str) -> dict:
    out = subprocess.run(["buildah", "inspect", "--type", "image", image], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["Docker"]["config"]


def service_pid(root: int, service: str) -> int:
    """The service's own process, somewhere below `buildah run`."""
    todo, seen = [root], []
    while todo:
        pid = todo.pop()
        seen.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            todo += [int(child) for child in task.read_text().split()]
    for pid in seen:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if argv[0].endswith(b"python3") and f"services.{service}".encode() in argv:
            return pid
    raise AssertionError(f"no services.{service} process below {root}")


@pytest.fixture
def container():
    made: list[str] = []

    def make(image: str) -> str:
        name = f"sb-test-{uuid.uuid4().hex[:8]}"
        subprocess.run(["buildah", "from", "--name", name, image], check=True, capture_output=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["buildah", "rm", name], capture_output=True)


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_built_as_the_dockerfile_says(images, service) -> None:
    config = image_config(images[service])
    assert config["Entrypoint"] == ["python3", "-m", f"services.{service}"]
    assert config["User"] == "10001:10001"  # never root
    assert config["Healthcheck"]["Test"][0] == "CMD" and "/healthz" in " ".join(config["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["SWITCHBOARD_CONFIG"] == "/etc/switchboard/switchboard.yaml"
    port = env[f"{service.upper()}_PORT"]
    assert f"{port}/tcp" in config["ExposedPorts"]


@pytest.mark.parametrize("service", SERVICES)
def test_image_starts_answers_and_stops_on_sigterm(images, service, container, rabbit_url, pg_url, tmp_path) -> None:
    ctr = container(images[service])
    config = image_config(images[service])
    port = free_port()
    env = {"BROKER_URL": rabbit_url, "DATABASE_URL": pg_url, f"{service.upper()}_PORT": str(port),
           "TELEGRAM_WEBHOOK_SECRET": "image-test-secret"}
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    log_path = tmp_path / f"{service}.log"
    with open(log_path, "wb") as log:
        # chroot isolation shares this machine's network: the service reaches the local broker and
        # database at 127.0.0.1, and we reach its port.
        proc = subprocess.Popen(["buildah", "run", "--isolation", "chroot", *env_args, ctr, "--",
                                 *config["Entrypoint"]], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def answers(path: str) -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{service} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                return httpx.get(base + path, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        until(lambda: answers("/healthz"), timeout=90, interval=0.3, message=f"{service} /healthz")
        until(lambda: answers("/readyz"), timeout=30, interval=0.3, message=f"{service} /readyz")
        metrics = httpx.get(base + "/metrics", timeout=5).text
        assert "switchboard_broker_up 1.0" in metrics and 'switchboard_queue_depth{queue="router.inbound"}' in metrics

        # The image's own HEALTHCHECK, run inside it as an orchestrator would.
        check = subprocess.run(["buildah", "run", "--isolation", "chroot", "--env", f"{service.upper()}_PORT={port}",
                                ctr, "--", *config["Healthcheck"]["Test"][1:]], capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stderr

        # SIGTERM to the service itself, as a container runtime signals its PID 1 (buildah would
        # kill its child outright on a signal of its own).
        os.kill(service_pid(proc.pid, service), signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
        assert any(line["msg"] == f"{service} stopped" for line in lines), log_path.read_text()[-3000:]
        assert all(line["service"] == service for line in lines)  # structured JSON logs, from the image too
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


"""The real RabbitMQ and PostgreSQL of this machine, made ready for a test run.

When one is not running, we start it the way this machine's services are started; if it still
does not answer we fail with a message that says so — an integration test never skips silently.
Each run gets a fresh RabbitMQ vhost and fresh PostgreSQL databases, dropped afterwards.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
import uuid

import pytest

RABBIT_HOST, RABBIT_PORT = "127.0.0.1", 5672
PG_HOST, PG_PORT = "127.0.0.1", 5432


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _port_open(host, port):
            return True
        time.sleep(0.5)
    return False


def ensure_rabbitmq() -> None:
    if _port_open(RABBIT_HOST, RABBIT_PORT):
        return
    if shutil.which("rabbitmq-server"):
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
        if _wait_port(RABBIT_HOST, RABBIT_PORT, 60):
            subprocess.run(["rabbitmqctl", "await_startup"], check=False, capture_output=True, timeout=60)
            return
    pytest.fail("RabbitMQ is not running on 127.0.0.1:5672 and `rabbitmq-server -detached` did not start it",
                pytrace=False)


def ensure_postgres() -> None:
    if _port_open(PG_HOST, PG_PORT):
        return
    versions = sorted(os.path.basename(p) for p in glob.glob("/etc/postgresql/*"))
    if versions and shutil.which("pg_ctlcluster"):
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                       check=False, capture_output=True)
        if _wait_port(PG_HOST, PG_PORT, 60):
            return
    pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster did not start it", pytrace=False)


def _rabbitmqctl(*args: str) -> None:
    if not shutil.which("rabbitmqctl"):
        pytest.fail("rabbitmqctl is needed to make a fresh vhost for the tests", pytrace=False)
    proc = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {proc.stderr.strip()}", pytrace=False)


def new_vhost() -> tuple[str, str]:
    """A fresh vhost; returns (its name, the amqp URL for it)."""
    ensure_rabbitmq()
    name = f"sbtest-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    return name, f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{name}"


def drop_vhost(name: str) -> None:
    subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


def _admin():
    import psycopg

    return psycopg.connect(host=PG_HOST, port=PG_PORT, user="postgres", dbname="postgres", autocommit=True)


def new_database() -> tuple[str, str]:
    ensure_postgres()
    name = f"sbtest_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"


def drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""The pool's ping (shared.db.make_engine): a connection that was working a moment ago is handed
out without one; one idle for longer is pinged, and a dead one replaced before anybody uses it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shared.db import make_engine

pytestmark = pytest.mark.integration

IDLE = 1.0


@pytest.fixture
def engine(pg_url, monkeypatch):
    engine = make_engine(pg_url, pool_size=1, ping_after_idle=IDLE)
    pings: list[int] = []
    real = engine.dialect.do_ping

    def counted(dbapi_conn) -> bool:
        pings.append(1)
        return real(dbapi_conn)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    engine.pings = pings  # type: ignore[attr-defined]
    yield engine
    engine.dispose()


def backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def kill(pg_url, pid: int) -> None:
    other = make_engine(pg_url, pool_size=1)
    try:
        with other.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()
            conn.commit()
    finally:
        other.dispose()
    time.sleep(0.1)  # the backend is gone


def test_a_connection_busy_a_moment_ago_is_not_pinged_an_idle_one_is(engine) -> None:
    pid = backend_pid(engine)  # a fresh connection: just proven by connecting
    for _ in range(5):
        assert backend_pid(engine) == pid
    assert engine.pings == []
    time.sleep(IDLE + 0.1)
    assert backend_pid(engine) == pid
    assert engine.pings == [1]


def test_a_connection_that_died_while_idle_is_replaced_before_it_is_used(engine, pg_url) -> None:
    pid = backend_pid(engine)
    kill(pg_url, pid)
    time.sleep(IDLE)
    assert backend_pid(engine) != pid  # the ping found it dead: a new one, and no error for the caller


def test_a_connection_that_died_right_after_its_use_fails_once_then_the_pool_starts_afresh(pg_url) -> None:
    # The price of not pinging a busy connection: its first statement fails (the bus retries
    # that message), and the pool's every connection is replaced.
    engine = make_engine(pg_url, pool_size=1, ping_after_idle=60)
    try:
        pid = backend_pid(engine)
        kill(pg_url, pid)
        with pytest.raises(DBAPIError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        assert backend_pid(engine) != pid
    finally:
        engine.dispose()

"""/healthz and /readyz: ready means the broker (and the database, the spool) answer right now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.gateway.bootstrap import build
from shared.db import make_engine, ping
from shared.settings import load_settings
from tests.support.tcpproxy import TcpProxy

pytestmark = pytest.mark.integration


def test_gateway_is_ready_only_while_the_broker_answers(example_config, rabbit_url, pg_url, tmp_path) -> None:
    proxy = TcpProxy("127.0.0.1", 5672)
    vhost = rabbit_url.rsplit("/", 1)[1]
    settings = load_settings({"BROKER_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}",
                              "SWITCHBOARD_SPOOL_DIR": str(tmp_path)})
    engine = make_engine(pg_url)
    app, _ = build(settings, example_config, clock=lambda: datetime.now(UTC),
                   extra_checks={"database": lambda: ping(engine)})
    client = app.test_client()
    try:
        assert client.get("/healthz").json == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json["checks"] == {"broker": "ok", "spool": "ok", "database": "ok"}
        proxy.cut()
        down = client.get("/readyz")
        assert down.status_code == 503 and down.json["checks"]["broker"] != "ok"
        assert down.json["checks"]["database"] == "ok"
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        proxy.restore()
        assert client.get("/readyz").status_code == 200
    finally:
        proxy.close()
        engine.dispose()

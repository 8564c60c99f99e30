"""The body limit holds before the body is read: a 100 MB upload is refused from its Content-Length
(or as soon as a chunked body passes the limit), with our JSON error, by the servers as they are run
(waitress through shared.web.HttpServer) — the gateway's app and the router's."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.telegram import TelegramAdapter
from shared.service import service_app
from shared.settings import load_settings
from shared.web import HttpServer, server_options
from tests.contract.test_gateway_http import NOW, SECRET
from tests.support.gateway import RecordingIntake

LIMIT = 256 * 1024
HUNDRED_MB = 100 * 1024 * 1024


@pytest.fixture
def settings():
    return load_settings({"SWITCHBOARD_MAX_BODY_BYTES": str(LIMIT)})


@pytest.fixture(params=["gateway", "router"])
def served(request, example_config, settings):
    if request.param == "gateway":
        app = create_app(GatewayDeps(config=example_config, intake=RecordingIntake(),
                                     adapters={"telegram": TelegramAdapter(secret=SECRET, bot_id="123456")},
                                     public_base_url="https://support.example", max_body_bytes=LIMIT,
                                     clock=lambda: NOW))
        path = "/webhooks/telegram"
    else:
        app = service_app("router", settings, {})

        @app.post("/api/v1/echo")
        def echo():
            from flask import request as req

            return {"bytes": len(req.get_data())}

        path = "/api/v1/echo"
    server = HttpServer(app, "127.0.0.1", 0, **server_options(settings)).start()
    yield server.port, path
    server.stop(grace=1)


def test_a_100_mb_upload_is_refused_before_its_body_is_sent(served) -> None:
    port, path = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.putrequest("POST", path)
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(HUNDRED_MB))
    conn.endheaders()
    conn.send(b"{" + b" " * 65_536)  # the first 64 KB of the 100 MB; the rest is never sent
    started = time.monotonic()
    response = conn.getresponse()  # today's main waits here for the 100 MB: a timeout
    assert response.status == 413
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(response.read())["error"] == "request_entity_too_large"
    assert time.monotonic() - started < 2


def test_a_chunked_body_is_cut_off_once_past_the_limit(served) -> None:
    port, path = served
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (65_536, b" " * 65_536)
    sent = 0
    try:
        while sent < HUNDRED_MB:
            sock.sendall(chunk)
            sent += 65_536
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed the connection after its answer
    # It stopped reading once past the limit: what we got to send is the limit plus the sockets' buffers.
    assert sent < 20 * 1024 * 1024
    sock.settimeout(5)
    head = sock.recv(200)
    assert head.startswith(b"HTTP/1.1 413")


def test_a_body_at_the_limit_reaches_the_app(served) -> None:
    port, path = served
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("POST", path, body=b" " * LIMIT, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    # The app answers it (the gateway: not signed; the router: echoes the size), no server-level 413.
    assert response.status in (200, 403)
    if response.status == 200:
        assert json.loads(response.read()) == {"bytes": LIMIT}

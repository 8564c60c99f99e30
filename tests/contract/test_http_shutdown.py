"""The services' HTTP server stops gracefully: no new connections, requests in flight answered."""

from __future__ import annotations

import threading

import httpx
import pytest
from flask import Flask

from shared.web import HttpServer


def test_stop_answers_the_request_in_flight_and_refuses_new_ones() -> None:
    app = Flask("slow")
    entered, release = threading.Event(), threading.Event()

    @app.post("/work")
    def work():
        entered.set()
        release.wait(30)
        return {"done": True}

    server = HttpServer(app, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{server.port}/work"
    answers: list[httpx.Response] = []
    client = threading.Thread(target=lambda: answers.append(httpx.post(url, timeout=10)))
    client.start()
    assert entered.wait(5)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    # Stopping has closed the door while the first request is still being worked on...
    def refused() -> bool:
        try:
            httpx.post(url, timeout=1)
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout):
            # Refused, or reset (or left unanswered) when it raced the close into the listen
            # backlog: never served.
            return True
        return False

    from tests.support.wait import until

    until(refused, timeout=15, message="new connections refused")
    assert stopper.is_alive()  # ...and waits for it
    release.set()
    stopper.join(10)
    client.join(10)
    assert not stopper.is_alive()
    assert [a.status_code for a in answers] == [200] and answers[0].json() == {"done": True}
    with pytest.raises(httpx.ConnectError):
        httpx.post(url, timeout=1)

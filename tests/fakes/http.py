"""What every fake provider API shares: a real HTTP server on a free loopback port, in a thread.

The fakes differ in what they answer; how they listen, read a body, answer and stop is here once.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHandler(BaseHTTPRequestHandler):
    """A request handler with the fakes' common manners: silent, and not upset by a client that gave
    up waiting (the timeout tests close the connection before the answer is written)."""

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send(self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up: nothing to answer

    def send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.send(status, json.dumps(body).encode(), "application/json", headers)


class FakeServer:
    """Mixin for a fake's dataclass: `serve(Handler)` starts it, `port` and `stop()` follow."""

    server: ThreadingHTTPServer
    port: int
    #: Where it listens; the compose test sets the Docker bridge's address, for containers to reach.
    bind_host: str = "127.0.0.1"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = ThreadingHTTPServer((self.bind_host, 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits up to one interval, and tests start and stop many.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

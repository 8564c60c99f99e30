"""What every fake provider API shares: a real HTTP server on a free loopback port, in a thread.

The fakes differ in what they answer; how they listen, read a body, answer and stop is here once.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHandler(BaseHTTPRequestHandler):
    """A request handler with the fakes' common manners: silent, and not upset by a client that gave
    up waiting (the timeout tests close the connection before the answer is written).

    HTTP/1.1 with keep-alive, as the real provider APIs: a client's pooled connection carries many
    requests (every answer has its Content-Length, and every handler reads the request's body)."""

    protocol_version = "HTTP/1.1"
    # The status line and headers, then the body, are two writes: without TCP_NODELAY the second
    # waits for the client's delayed ACK (~40 ms) on a kept-alive connection, as no real API does.
    disable_nagle_algorithm = True

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


class _Server(ThreadingHTTPServer):
    """Counts the TCP connections it accepts and keeps the open ones, to close them when stopped."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        super().__init__(address, handler)
        self.accepted = 0
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        with self.lock:
            self.accepted += 1
            self.open.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self.lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.lock:
            open_, self.open = list(self.open), set()
        for sock in open_:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone


class FakeServer:
    """Mixin for a fake's dataclass: `serve(Handler)` starts it, `port` and `stop()` follow."""

    server: _Server
    port: int
    #: Where it listens; the compose test sets the Docker bridge's address, for containers to reach.
    bind_host: str = "127.0.0.1"

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.server = _Server((self.bind_host, 0), handler)
        self.port = self.server.server_address[1]
        # A short poll interval: shutdown() waits up to one interval, and tests start and stop many.
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def connections(self) -> int:
        """TCP connections accepted so far: a client that keeps its connections alive opens few."""
        with self.server.lock:
            return self.server.accepted

    def stop(self) -> None:
        self.server.shutdown()
        # A stopped provider answers nothing, also on connections a client kept alive.
        self.server.close_connections()
        self.server.server_close()

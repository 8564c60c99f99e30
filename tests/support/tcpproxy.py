"""A TCP relay on loopback that a test can cut and restore: a broker outage without touching the
machine's real broker."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.enabled = True
        self.accepted = 0  # connections relayed so far
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.enabled:
                client.close()
                continue
            upstream = self._connect_upstream()
            if upstream is None:
                client.close()
                continue
            # The timeout was for connecting only: left on, it would cut any connection idle for 5 s
            # (an idle publisher's), an outage nobody asked for.
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
                self.accepted += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _connect_upstream(self) -> socket.socket | None:
        try:
            return socket.create_connection(self.upstream, timeout=5)
        except OSError:
            return None

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every connection and refuse new ones, like a broker that went away."""
        self.enabled = False
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.enabled = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


class TcpBalancer(TcpProxy):
    """The loopback load balancer in front of several gateway replicas (a test harness, not a product
    part): each new connection goes to the next upstream in turn, skipping one that refuses, as a
    load balancer's health check would."""

    def __init__(self, upstreams: list[tuple[str, int]]):
        self.upstreams = list(upstreams)
        self._next = 0
        super().__init__(*self.upstreams[0])

    def _connect_upstream(self) -> socket.socket | None:
        for _ in range(len(self.upstreams)):
            target = self.upstreams[self._next % len(self.upstreams)]
            self._next += 1
            try:
                return socket.create_connection(target, timeout=5)
            except OSError:
                continue
        return None

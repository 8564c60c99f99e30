"""Pieces every service's Flask app shares: JSON errors, health endpoints, serving."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from shared.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 3 * 1024 * 1024  # SWITCHBOARD_MAX_BODY_BYTES's default


def error(status: int, code: str, message: str, **extra: object):
    """A JSON error body that names the problem: what clients and providers' dashboards show."""
    body = {"error": code, "message": message, **extra}
    return jsonify(body), status


def install_json_errors(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        # A bug of ours, never the client's: log it whole, answer without internals.
        log.exception("unhandled error")
        return error(500, "internal_error", "an internal error occurred; it has been logged")


def health_blueprint(checks: dict[str, Callable[[], None]], *, broker_url: str | None = None,
                     metrics: bool = True) -> Blueprint:
    """/healthz: the process answers. /readyz: every dependency answers (broker, database...).
    /metrics: Prometheus text (shared/metrics.py), with the broker's queue depths given its URL;
    `metrics=False` when METRICS_PORT serves it apart (metrics_blueprint)."""
    bp = Blueprint("health", __name__)
    if metrics:
        bp.register_blueprint(metrics_blueprint(broker_url))

    @bp.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @bp.get("/readyz")
    def readyz():
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - any failure means not ready; say which
                ok = False
                results[name] = f"{type(exc).__name__}: {exc}"[:300]
        return jsonify(status="ok" if ok else "unavailable", checks=results), 200 if ok else 503

    return bp


def server_options(settings: Settings) -> dict[str, Any]:
    """HttpServer's options from the settings: the trusted proxy and the body limit."""
    return {"trusted_proxy": settings.trusted_proxy, "trusted_proxy_count": settings.trusted_proxy_count,
            "max_body_bytes": settings.max_body_bytes}


def metrics_blueprint(broker_url: str | None = None) -> Blueprint:
    """GET /metrics; one Scrape (so one broker connection) for the life of the blueprint."""
    from shared.metrics import Scrape

    bp = Blueprint("metrics", __name__)
    scrape = Scrape(broker_url)

    @bp.get("/metrics")
    def metrics():
        body, content_type = scrape.render()
        return Response(body, 200, content_type=content_type)

    return bp


def start_metrics_server(settings: Settings, host: str = "0.0.0.0") -> HttpServer | None:
    """With METRICS_PORT set, /metrics alone on that port (for the scraper's network only); the
    service's main port then serves no /metrics."""
    if settings.metrics_port is None:
        return None
    app = Flask("switchboard.metrics")
    install_json_errors(app)
    app.register_blueprint(metrics_blueprint(settings.broker_url))
    server = HttpServer(app, host, settings.metrics_port, threads=2, max_body_bytes=1024).start()
    log.info("metrics on :%d", server.port)
    return server


class HttpServer:
    """A waitress server in a thread that can be stopped (SIGTERM, tests).

    `max_body_bytes`: waitress answers 413 from the Content-Length (or as soon as a chunked body
    passes it) before reading the body, so a 100 MB upload costs us its headers, not 100 MB; the
    apps' own limit (MAX_CONTENT_LENGTH) is a second wall. `trusted_proxy`: the reverse proxy whose
    X-Forwarded-For and X-Forwarded-Proto waitress believes (the client's address for the login
    throttle, https for Secure cookies); from anybody else those headers are dropped.
    """

    def __init__(self, app: Flask, host: str, port: int, threads: int = 8, *, trusted_proxy: str | None = None,
                 trusted_proxy_count: int = 1, max_body_bytes: int | None = DEFAULT_MAX_BODY):
        from waitress.server import create_server

        proxy: dict[str, Any] = {}
        if trusted_proxy:
            proxy = {"trusted_proxy": trusted_proxy, "trusted_proxy_count": trusted_proxy_count,
                     "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"}}
        # waitress refuses a Content-Length >= its limit: one more byte lets exactly max_body_bytes in.
        limit = (max_body_bytes or DEFAULT_MAX_BODY) + 1
        self.server = create_server(app, host=host, port=port, threads=threads, clear_untrusted_proxy_headers=True,
                                    ident="switchboard", max_request_body_size=limit, **proxy)
        self.server.channel_class = _JsonErrorChannel
        self.port = int(self.server.effective_port)  # waitress gives a string for 0.0.0.0
        self._thread: threading.Thread | None = None

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.server.run, name=f"http:{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.run()

    def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let the requests in flight be answered (up to `grace` seconds), then close.

        Waitress's own close drops the listening socket but its worker threads are daemons: a
        process that exits right after would cut a provider's webhook off mid-request. So we wait
        until no request is queued, running, half-read or waiting to be flushed.
        """
        from waitress import wasyncore

        server = self.server
        wasyncore.dispatcher.close(server)  # the listening socket only: no new connections
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self._busy():
            time.sleep(0.02)
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=max(0.1, deadline - time.monotonic()))
        server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
        if self._thread:
            self._thread.join(timeout=5)

    def _busy(self) -> bool:
        dispatcher = self.server.task_dispatcher
        if dispatcher.queue or dispatcher.active_count:
            return True
        for channel in list(self.server._map.values()):
            if getattr(channel, "requests", None) or getattr(channel, "request", None) is not None \
                    or getattr(channel, "total_outbufs_len", 0):
                return True
        return False


def _json_error_task():
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JsonErrorTask(ErrorTask):
        """waitress's own refusals (413 before the body is read, 400 for a broken request) as our JSON
        errors instead of its plain text."""

        def execute(self) -> None:
            e = self.request.error
            body = json.dumps({"error": e.reason.lower().replace(" ", "_"), "message": e.body}).encode()
            self.status = f"{e.code} {e.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JsonErrorChannel(HTTPChannel):
        error_task_class = JsonErrorTask

    return JsonErrorChannel


_JsonErrorChannel = _json_error_task()

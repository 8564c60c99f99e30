"""The common life of a consumer service (router, notifier) in services mode.

Logs, config, database (migrated at start), one bus worker, a small HTTP server for /healthz and
/readyz, and a clean stop on SIGTERM: the worker finishes the message in hand, then everything
closes.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence

from flask import Blueprint, Flask
from sqlalchemy import Engine

from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher, connect, ensure_connected
from shared.config import Config, ConfigCheck
from shared.db import make_engine, migrate, ping, session_factory
from shared.log import setup_logging
from shared.runtime import install_signal_handlers, load_or_exit, start_thread
from shared.settings import Settings
from shared.web import HttpServer, health_blueprint, install_json_errors, server_options, start_metrics_server

log = logging.getLogger(__name__)

BuildWorker = Callable[[Settings, Config, Engine, Publisher], Worker]
# Extra HTTP endpoints a service serves next to its health checks (the router's agent API).
BuildBlueprints = Callable[[Settings, Config, Engine, Publisher], list[Blueprint]]
# Background loops a service runs beside its consumer (the notifier's ticker), stopped by `stop`.
BuildBackground = Callable[[Settings, Config, Engine, Publisher, threading.Event], list[threading.Thread]]


def broker_check(url: str) -> Callable[[], None]:
    def check() -> None:
        with connect(url) as conn:
            ensure_connected(conn, timeout=2)

    return check


def consumer_count(default: int) -> int:
    """How many consumer threads a service runs: SWITCHBOARD_CONSUMERS, else the service's default."""
    return max(1, int(os.environ.get("SWITCHBOARD_CONSUMERS") or default))


def service_app(name: str, settings: Settings, checks: dict[str, Callable[[], None]]) -> Flask:
    """The Flask app of a consumer service: JSON errors, health endpoints, the body limit."""
    app = Flask(f"switchboard.{name}")
    # The agent API's and the inbox's bodies are small; nothing may make us hold more than this
    # (waitress refuses a larger Content-Length before reading it, see shared/web.py).
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    install_json_errors(app)
    app.register_blueprint(health_blueprint(checks, broker_url=settings.broker_url,
                                            metrics=settings.metrics_port is None))
    return app


def run_consumer_service(name: str, default_port: int, build_worker: BuildWorker,
                         blueprints: BuildBlueprints | None = None,
                         background: BuildBackground | None = None, *, consumers: int = 1,
                         config_checks: Sequence[ConfigCheck] = ()) -> None:
    """`consumers`: the service's default number of consumer threads (SWITCHBOARD_CONSUMERS overrides);
    `config_checks`: the service's own checks of the config, run as it is loaded."""
    setup_logging(name, os.environ.get("LOG_LEVEL", "INFO"))
    settings, config = load_or_exit(config_checks)
    stop = threading.Event()
    install_signal_handlers(stop)
    # Competing consumers in one process, as replicas would be: each has its own connection, and the
    # handlers are idempotent and claim with constraints, so they need no order between them. The
    # handlers mostly wait on the database and the providers; more of them fill those waits.
    consumers = consumer_count(consumers)
    # A database connection for every consumer at once, and a few for the web threads and loops.
    engine = make_engine(settings.database_url, pool_size=max(10, consumers + 4))
    migrate(engine)
    publisher = Publisher(settings.broker_url)
    worker = build_worker(settings, config, engine, publisher)

    app = service_app(name, settings, {"broker": broker_check(settings.broker_url), "database": lambda: ping(engine)})
    for blueprint in blueprints(settings, config, engine, publisher) if blueprints else []:
        app.register_blueprint(blueprint)
    port = int(os.environ.get(f"{name.upper()}_PORT") or default_port)
    server = HttpServer(app, "0.0.0.0", port, **server_options(settings)).start()
    log.info("%s health endpoints on :%d", name, server.port)
    metrics_server = start_metrics_server(settings)

    threads = [start_thread(lambda: worker.run(stop), f"{name}-worker-{i}") for i in range(consumers)]
    threads += background(settings, config, engine, publisher, stop) if background else []
    stop.wait()
    for thread in threads:
        thread.join(timeout=30)
    server.stop()
    if metrics_server is not None:
        metrics_server.stop(grace=1)
    publisher.close()
    engine.dispose()
    log.info("%s stopped", name)


__all__ = ["run_consumer_service", "session_factory"]

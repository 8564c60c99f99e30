"""The embedded mode: gateway, router and notifier in one process, for `make run` and demos.

Same handlers as services mode; only the wiring differs: kombu's in-memory transport instead of
RabbitMQ, a SQLite file under ./var instead of PostgreSQL, sandbox senders (unless provider
credentials are set) that print every outbound message. Needs no broker and no credentials.
"""

from __future__ import annotations

import ipaddress
import logging
import sys
import threading
from dataclasses import dataclass
from functools import partial
from typing import TextIO

from services.gateway.bootstrap import build as build_gateway
from services.gateway.bootstrap import start_pollers
from services.gateway.owners import build_worker as build_owners_worker
from services.notifier import bootstrap as notifier
from services.notifier.senders import Registry
from services.router import bootstrap as router
from services.router.kpi_store import backfill_first_responses, run_rollups
from services.router.operations import run_relay
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.config import Config
from shared.db import make_engine, migrate, ping, session_factory
from shared.errors import ConfigError
from shared.runtime import start_thread, utc_now
from shared.settings import Settings
from shared.web import HttpServer, server_options, start_metrics_server

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    server: HttpServer
    workers: list[Worker]
    threads: list[threading.Thread]
    senders: Registry
    stop: threading.Event
    metrics_server: HttpServer | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def wait_ready(self, timeout: float = 30.0) -> bool:
        return all(w.ready.wait(timeout) for w in self.workers)

    def shutdown(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        self.server.stop()
        if self.metrics_server is not None:
            self.metrics_server.stop(grace=1)
        self.senders.close()


# Secrets the embedded mode replaces with the public DEV_TELEGRAM_SECRET when they are unset.
DEV_SECRET_SETTINGS = {"telegram_webhook_secret": "TELEGRAM_WEBHOOK_SECRET", "twilio_auth_token": "TWILIO_AUTH_TOKEN",
                       "meta_app_secret": "META_APP_SECRET", "meta_verify_token": "META_VERIFY_TOKEN",
                       "email_relay_secret": "EMAIL_RELAY_SECRET"}


def development_secrets(settings: Settings) -> list[str]:
    """The variables whose unset value makes the embedded mode use the published development secret
    (SURVEY_SECRET is derived from the others, so it is only as secret as they are)."""
    return [name for field, name in DEV_SECRET_SETTINGS.items() if not getattr(settings, field)]


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(settings: Settings, host: str) -> None:
    """Refuse to listen beyond this machine while anyone who read the README could sign a webhook."""
    unset = development_secrets(settings)
    if unset and not is_loopback(host):
        raise ConfigError("embedded mode's address", [
            f"{host}: the embedded mode listens beyond this machine (loopback) only when no development secret "
            f"is in use; set {', '.join(unset)}, or bind 127.0.0.1"])


def start(settings: Settings, config: Config, *, host: str = "127.0.0.1", port: int | None = None,
          sandbox_out: TextIO | None = None) -> Embedded:
    check_bind(settings, host)
    stop = threading.Event()
    engine = make_engine(settings.database_url)
    migrate(engine)
    sessions = session_factory(engine)
    with connect(settings.broker_url) as conn:
        declare(conn)
    publisher = Publisher(settings.broker_url)
    senders = notifier.build_senders(settings, config, sandbox_out=sandbox_out if sandbox_out is not None else sys.stdout)
    router_deps = router.build_deps(config, sessions)
    notifier_deps = notifier.build_deps(config, sessions, senders, utc_now,
                                        survey_links=notifier.build_survey_links(settings, embedded=True))
    workers = [
        router.build_worker(settings.broker_url, router_deps, publisher),
        notifier.build_worker(settings.broker_url, notifier_deps, publisher),
    ]
    app, intake = build_gateway(settings, config, clock=utc_now, embedded=True, owners=lambda: engine,
                                extra_checks={"database": lambda: ping(engine)},
                                extra_blueprints=[router.build_api(config, sessions, publisher, router_deps),
                                                  *router.build_pages(config, sessions, publisher,
                                                                     secure_cookies=settings.secure_cookies)])
    # The gateway's read model of whom a call rings, from the router's ownership.phone events.
    workers.append(build_owners_worker(settings.broker_url, lambda: engine, publisher))
    threads = [start_thread(partial(w.run, stop), w.name) for w in workers]
    threads.append(start_thread(lambda: intake.forwarder.run(stop), "spool-forwarder"))
    threads.append(start_thread(lambda: run_relay(sessions, publisher, utc_now, stop), "router-relay"))
    # First responses kept before their business time was (migration 0012): filled in beside the work.
    threads.append(start_thread(lambda: backfill_first_responses(sessions, config.business_calendar),
                                "router-kpi-backfill"))
    # The KPI report's daily roll-ups: the days marked since (or by migration 0017), rebuilt.
    threads.append(start_thread(lambda: run_rollups(sessions, config.business_calendar, stop), "router-kpi-rollups"))
    threads.extend(start_pollers(settings, config, intake, stop, clock=utc_now))
    ticker = notifier.build_ticker(notifier_deps, publisher=publisher)
    threads.append(start_thread(lambda: ticker.run(stop), "notifier-ticker"))
    server = HttpServer(app, host, port if port is not None else (settings.port or 8080),
                        **server_options(settings)).start()
    return Embedded(server=server, workers=workers, threads=threads, senders=senders, stop=stop,
                    metrics_server=start_metrics_server(settings, host))

"""`python -m services.gateway`: the webhook gateway in services mode (RabbitMQ), port 8080."""

from __future__ import annotations

import logging
import os
import threading
from functools import partial

from services.gateway.bootstrap import build, declare_topology, owners_engine, start_pollers
from services.gateway.owners import build_worker as build_owners_worker
from shared.log import setup_logging
from shared.runtime import install_signal_handlers, load_or_exit, start_thread, utc_now
from shared.web import HttpServer, server_options, start_metrics_server

log = logging.getLogger("services.gateway")


def main() -> None:
    setup_logging("gateway", os.environ.get("LOG_LEVEL", "INFO"))
    settings, config = load_or_exit()
    stop = threading.Event()
    install_signal_handlers(stop)
    try:
        declare_topology(settings.broker_url)
    except Exception as exc:  # noqa: BLE001 - the gateway still accepts webhooks into its spool
        log.warning("broker unavailable at start (%s); webhooks will be spooled", exc)
    owners = owners_engine(settings, embedded=False)
    app, intake = build(settings, config, clock=utc_now, owners=owners)
    forwarder = start_thread(lambda: intake.forwarder.run(stop), "spool-forwarder")
    # The read model of whom a call rings, from the router's ownership.phone events: reconnects by
    # itself while the broker or the database is away (calls ring the team meanwhile).
    owners_worker = build_owners_worker(settings.broker_url, owners, intake.publisher)
    owners_thread = start_thread(partial(owners_worker.run, stop), owners_worker.name)
    pollers = start_pollers(settings, config, intake, stop, clock=utc_now)
    server = HttpServer(app, "0.0.0.0", int(os.environ.get("GATEWAY_PORT") or settings.port or 8080),
                        **server_options(settings)).start()
    log.info("gateway listening on :%d", server.port)
    metrics_server = start_metrics_server(settings)
    stop.wait()
    server.stop()  # no new webhooks; the ones in flight are answered
    if metrics_server is not None:
        metrics_server.stop(grace=1)
    intake.forwarder.wake.set()
    forwarder.join(timeout=10)
    owners_thread.join(timeout=10)
    for poller in pollers:
        poller.join(timeout=40)  # a poll in progress finishes its message: at worst it is polled again
    intake.publisher.close()
    intake.spool.close()
    log.info("gateway stopped")


if __name__ == "__main__":
    main()

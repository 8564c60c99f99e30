"""`python -m services.router`: the router in services mode (RabbitMQ + PostgreSQL), port 8081.

Port 8081 serves the health checks, the agent API (/api/v1/), the inbox (/inbox/) and the dashboard
(/dashboard/).
"""

import threading

from services.router.bootstrap import build_api, build_deps, build_pages, build_worker
from services.router.kpi_store import backfill_first_responses, run_rollups
from services.router.macros import check_config_macros
from services.router.operations import run_relay
from shared.db import session_factory
from shared.runtime import start_thread, utc_now
from shared.service import run_consumer_service


def main() -> None:
    built: dict = {}  # the worker's deps, shared with the API so a correction retrains its classifier

    def worker(settings, config, engine, publisher):
        built["deps"] = build_deps(config, session_factory(engine))
        # First responses stored before their business time was kept (migration 0012): filled in
        # batches beside the work, so a large history does not hold up the start.
        start_thread(lambda: backfill_first_responses(session_factory(engine), config.business_calendar),
                     "router-kpi-backfill")
        # The KPI report's daily roll-ups: the days marked since (or by migration 0017), rebuilt.
        start_thread(lambda: run_rollups(session_factory(engine), config.business_calendar, threading.Event()),
                     "router-kpi-rollups")
        return build_worker(settings.broker_url, built["deps"], publisher, batch_size=settings.batch_size,
                            batch_wait_ms=settings.batch_wait_ms)

    def blueprints(settings, config, engine, publisher):
        sessions = session_factory(engine)
        # Agent API events whose publish failed are re-published from here; the daemon thread ends
        # with the process.
        start_thread(lambda: run_relay(sessions, publisher, utc_now, threading.Event()), "router-relay")
        return [build_api(config, sessions, publisher, built.get("deps")), *build_pages(config, sessions, publisher,
                                                                                    secure_cookies=settings.secure_cookies)]

    # 2 consumers: one batch's database round trips and confirm waits overlap the other's work; with
    # 4, batches stayed at one message at 100 msgs/s and the threads queued for the GIL (quiet
    # machine, tests/bench/quiet.py, 2026-12-07: p99 webhook → acknowledgement 102 ms with 2,
    # 291 ms with 4, 325 ms with 1). More throughput: replicas, or SWITCHBOARD_CONSUMERS.
    run_consumer_service("router", 8081, worker, blueprints, consumers=2, config_checks=(check_config_macros,))


if __name__ == "__main__":
    main()

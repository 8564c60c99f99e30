"""`python -m services.notifier`: the notifier in services mode (RabbitMQ + PostgreSQL), port 8082."""

from concurrent.futures import ThreadPoolExecutor

from services.notifier.bootstrap import (
    build_deps,
    build_senders,
    build_survey_links,
    build_ticker,
    build_worker,
)
from services.notifier.texts import check_config_templates
from shared.db import session_factory
from shared.runtime import start_thread, utc_now
from shared.service import run_consumer_service

#: Consumer threads, each taking micro-batches of events; two for the reason the router has two
#: (services/router/__main__.py: measured latency at 100 msgs/s with 1, 2 and 4).
CONSUMERS = 2
#: Threads the consumers' batches send on, shared: sends to different conversations are in flight
#: together (a slow provider's calls, each with its own timeout, wait in their own threads); a
#: conversation's messages still leave in order (handlers.handle_batch, outbox.WaitingForEarlier).
SEND_THREADS = 8


def main() -> None:
    built: dict = {}  # one set of deps (and senders) for the consumer and the ticker

    def deps(settings, config, engine):
        if "deps" not in built:
            # The bulkhead: one provider may hold all but two of the sending threads, so however
            # slow it gets, the other channels keep two.
            senders = build_senders(settings, config, max_in_flight=max(1, SEND_THREADS - 2))
            built["deps"] = build_deps(config, session_factory(engine), senders, utc_now,
                                       survey_links=build_survey_links(settings, embedded=False),
                                       send_pool=ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="notifier-send"))
        return built["deps"]

    def worker(settings, config, engine, publisher):
        return build_worker(settings.broker_url, deps(settings, config, engine), publisher,
                            batch_size=settings.batch_size, batch_wait_ms=settings.batch_wait_ms)

    def background(settings, config, engine, publisher, stop):
        ticker = build_ticker(deps(settings, config, engine), publisher=publisher)
        return [start_thread(lambda: ticker.run(stop), "notifier-ticker")]

    run_consumer_service("notifier", 8082, worker, background=background, consumers=CONSUMERS,
                         config_checks=(check_config_templates,))


if __name__ == "__main__":
    main()

"""`python -m services.notifier`: the notifier in services mode (RabbitMQ + PostgreSQL), port 8082."""

from services.notifier.bootstrap import (
    build_deps,
    build_senders,
    build_survey_links,
    build_ticker,
    build_worker,
)
from shared.db import session_factory
from shared.runtime import start_thread, utc_now
from shared.service import run_consumer_service


def main() -> None:
    built: dict = {}  # one set of deps (and senders) for the consumer and the ticker

    def deps(settings, config, engine):
        if "deps" not in built:
            built["deps"] = build_deps(config, session_factory(engine), build_senders(settings, config), utc_now,
                                       survey_links=build_survey_links(settings, embedded=False))
        return built["deps"]

    def worker(settings, config, engine, publisher):
        return build_worker(settings.broker_url, deps(settings, config, engine), publisher)

    def background(settings, config, engine, publisher, stop):
        ticker = build_ticker(deps(settings, config, engine))
        return [start_thread(lambda: ticker.run(stop), "notifier-ticker")]

    # Eight competing consumers: sends to a slow provider (each call has its own timeout) wait in
    # their own threads, not in front of every other channel; a conversation's messages still leave
    # in order (handlers.WaitingForEarlier).
    run_consumer_service("notifier", 8082, worker, background=background, consumers=8)


if __name__ == "__main__":
    main()

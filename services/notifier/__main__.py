"""`python -m services.notifier`: the notifier in services mode (RabbitMQ + PostgreSQL), port 8082."""

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
from shared.service import consumer_count, run_consumer_service

#: Consumer threads: sends to a slow provider (each call has its own timeout) wait in their own
#: threads; a conversation's messages still leave in order (outbox.WaitingForEarlier).
CONSUMERS = 8


def main() -> None:
    built: dict = {}  # one set of deps (and senders) for the consumer and the ticker

    def deps(settings, config, engine):
        if "deps" not in built:
            # The bulkhead: one provider may hold all but two of the consumers, so however slow it
            # gets, the other channels keep two.
            senders = build_senders(settings, config, max_in_flight=max(1, consumer_count(CONSUMERS) - 2))
            built["deps"] = build_deps(config, session_factory(engine), senders, utc_now,
                                       survey_links=build_survey_links(settings, embedded=False))
        return built["deps"]

    def worker(settings, config, engine, publisher):
        return build_worker(settings.broker_url, deps(settings, config, engine), publisher)

    def background(settings, config, engine, publisher, stop):
        ticker = build_ticker(deps(settings, config, engine), publisher=publisher)
        return [start_thread(lambda: ticker.run(stop), "notifier-ticker")]

    run_consumer_service("notifier", 8082, worker, background=background, consumers=CONSUMERS,
                         config_checks=(check_config_templates,))


if __name__ == "__main__":
    main()

"""`python -m services.notifier`: the notifier in services mode (RabbitMQ + PostgreSQL), port 8082."""

from services.notifier.bootstrap import build_deps, build_senders, build_worker
from shared.db import session_factory
from shared.runtime import utc_now
from shared.service import run_consumer_service


def main() -> None:
    run_consumer_service(
        "notifier", 8082,
        lambda settings, config, engine, publisher: build_worker(
            settings.broker_url, build_deps(config, session_factory(engine), build_senders(settings, config), utc_now),
            publisher),
    )


if __name__ == "__main__":
    main()

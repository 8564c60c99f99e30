"""`python -m services.router`: the router in services mode (RabbitMQ + PostgreSQL), port 8081."""

from services.router.bootstrap import build_deps, build_worker
from shared.db import session_factory
from shared.service import run_consumer_service


def main() -> None:
    run_consumer_service(
        "router", 8081,
        lambda settings, config, engine, publisher: build_worker(
            settings.broker_url, build_deps(config, session_factory(engine)), publisher),
    )


if __name__ == "__main__":
    main()

"""Two router replicas on one queue, for the tests that race them (test_two_routers,
test_router_batches): started alike so that the races differ only in how a replica consumes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from services.router.handlers import RouterDeps, handle_inbound, handle_inbound_batch
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import ROUTER_INBOUND
from shared.config import Config
from shared.db import make_engine, session_factory

REPLICAS = ("router-a", "router-b")


@contextmanager
def router_replicas(config: Config, rabbit_url: str, pg_url: str, *, classify: Callable[..., Any],
                    batched: bool, **worker_options: Any) -> Iterator[None]:
    """Both replicas consume router.inbound while the block runs, and are stopped when it ends.

    Each replica has its own engine: separate connections, real concurrent transactions. `batched`
    gives them handle_inbound_batch (micro-batches, as deployed) instead of handle_inbound;
    `worker_options` (prefetch, batch_size) go to each Worker. The block starts once both consume.
    """
    stop = threading.Event()
    threads, workers = [], []
    for name in REPLICAS:
        deps = RouterDeps(config=config, sessions=session_factory(make_engine(pg_url)),
                          classify=classify, detect_language=lambda text, hints: "en")
        route: dict[str, Any] = ({"batch_handler": partial(handle_inbound_batch, deps=deps)} if batched
                                 else {"handler": partial(handle_inbound, deps=deps)})
        worker = Worker(url=rabbit_url, spec=ROUTER_INBOUND, publisher=Publisher(rabbit_url), name=name,
                        **route, **worker_options)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        threads.append(thread)
        workers.append(worker)
    try:
        for name, worker in zip(REPLICAS, workers, strict=True):
            assert worker.ready.wait(15), f"{name} did not start consuming"
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)

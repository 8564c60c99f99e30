"""Wires the router: database, classifier, language detector, the inbound consumer, the agent API."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import partial

from flask import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.router.handlers import RouterDeps, handle_inbound_batch
from services.router.models import CategoryCorrection
from services.router.operations import publish_pending
from services.router.ownership import publish_after_opening
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import ROUTER_INBOUND
from shared.config import Config
from shared.contracts import Envelope
from shared.runtime import utc_now

log = logging.getLogger(__name__)


def build_deps(config: Config, sessions: sessionmaker[Session]) -> RouterDeps:
    from services.router.classifier import build_classifier
    from services.router.language import detect_language, warm_up

    # Agents' category corrections are training data: the classifier starts with every one stored.
    with sessions() as s:
        corrections = [{"text": c.text, "category": c.new_category, "language": c.language}
                       for c in s.scalars(select(CategoryCorrection).order_by(CategoryCorrection.id))
                       if c.text and c.new_category in config.categories]
    classifier = build_classifier(config, extra_examples=corrections)
    languages = list(config.business.languages)
    # lingua builds its models lazily: load them now, not on the first customer's message.
    warm_up(languages)

    def detect(text: str, hints: list[str]) -> str:
        return detect_language(text, languages, config.business.default_language, hints).code

    def classify(text: str, subject: str | None, language: str | None, channel: str | None):
        return classifier.classify(text, subject=subject, language=language, channel=channel)

    def learn(text: str, category: str, language: str | None) -> None:
        classifier.retrain([{"text": text, "category": category, "language": language}])

    return RouterDeps(config=config, sessions=sessions, classify=classify, detect_language=detect, learn=learn)


def build_api(config: Config, sessions: sessionmaker[Session], publisher: Publisher, deps: RouterDeps | None = None,
              clock: Callable[[], datetime] = utc_now) -> Blueprint:
    """The agent API; with the worker's deps, a category correction retrains its classifier at once."""
    from services.router import api

    return api.build_api(api.ApiDeps(config=config, sessions=sessions, publisher=publisher, clock=clock,
                         learn=deps.learn if deps else None))


def build_pages(config: Config, sessions: sessionmaker[Session], publisher: Publisher,
                clock: Callable[[], datetime] = utc_now, *, secure_cookies: bool = False) -> list[Blueprint]:
    """The agents' inbox (/inbox/) and the dashboard (/dashboard/), served next to the agent API."""
    from services.router import api, inbox

    return inbox.build_inbox(api.ApiDeps(config=config, sessions=sessions, publisher=publisher, clock=clock,
                                         secure_cookies=secure_cookies))


def route_and_tell_the_gateway(envelopes: Sequence[Envelope], *, deps: RouterDeps,
                               publisher: Publisher) -> list[list[Envelope] | Exception]:
    """The worker's batch handler: route the batch, then publish the gateway's `ownership.phone`
    events of the conversations it opened (stored pending with them; what is not published here
    the relay publishes). The returned events are the notifier's, published by the worker before
    its ack."""
    results = handle_inbound_batch(envelopes, deps)
    events = [e for result in results if not isinstance(result, Exception) for e in result]
    try:
        publish_after_opening(events, partial(publish_pending, deps.sessions, publisher))
    except Exception as exc:  # noqa: BLE001 - the batch is committed; the relay publishes what is left
        log.warning("ownership events left to the relay: %s: %s", type(exc).__name__, exc)
    return results


def build_worker(broker_url: str, deps: RouterDeps, publisher: Publisher, *, prefetch: int = 16,
                 batch_size: int = 32, batch_wait_ms: float = 10.0) -> Worker:
    """The inbound consumer in micro-batches (SWITCHBOARD_BATCH_SIZE, SWITCHBOARD_BATCH_WAIT_MS): a
    batch is one transaction, one commit, one confirm wait and one ack; 1 is a message at a time."""
    return Worker(url=broker_url, spec=ROUTER_INBOUND,
                  batch_handler=partial(route_and_tell_the_gateway, deps=deps, publisher=publisher),
                  publisher=publisher, prefetch=prefetch, name="router", stage="routed",
                  batch_size=batch_size, batch_wait=batch_wait_ms / 1000)

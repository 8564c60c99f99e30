"""Wires the router: database, classifier, language detector, the inbound consumer, the agent API."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from functools import partial

from flask import Blueprint
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.router.handlers import RouterDeps, handle_inbound_batch
from services.router.models import CategoryCorrection
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import ROUTER_INBOUND
from shared.config import Config
from shared.runtime import utc_now


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


def build_worker(broker_url: str, deps: RouterDeps, publisher: Publisher, *, prefetch: int = 16,
                 batch_size: int = 32, batch_wait_ms: float = 10.0) -> Worker:
    """The inbound consumer in micro-batches (SWITCHBOARD_BATCH_SIZE, SWITCHBOARD_BATCH_WAIT_MS): a
    batch is one transaction, one commit, one confirm wait and one ack; 1 is a message at a time."""
    return Worker(url=broker_url, spec=ROUTER_INBOUND, batch_handler=partial(handle_inbound_batch, deps=deps),
                  publisher=publisher, prefetch=prefetch, name="router", stage="routed",
                  batch_size=batch_size, batch_wait=batch_wait_ms / 1000)

"""Wires the router: database, classifier, language detector, the inbound consumer."""

from __future__ import annotations

from functools import partial

from sqlalchemy.orm import Session, sessionmaker

from services.router.handlers import RouterDeps, handle_inbound
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import ROUTER_INBOUND
from shared.config import Config


def build_deps(config: Config, sessions: sessionmaker[Session]) -> RouterDeps:
    from services.router.classifier import build_classifier
    from services.router.language import detect_language

    classifier = build_classifier(config)
    languages = list(config.business.languages)

    def detect(text: str, hints: list[str]) -> str:
        return detect_language(text, languages, config.business.default_language, hints).code

    def classify(text: str, subject: str | None, language: str | None, channel: str | None):
        return classifier.classify(text, subject=subject, language=language, channel=channel)

    return RouterDeps(config=config, sessions=sessions, classify=classify, detect_language=detect)


def build_worker(broker_url: str, deps: RouterDeps, publisher: Publisher, *, prefetch: int = 16) -> Worker:
    return Worker(url=broker_url, spec=ROUTER_INBOUND, handler=partial(handle_inbound, deps=deps),
                  publisher=publisher, prefetch=prefetch, name="router")

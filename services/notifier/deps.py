"""What the notifier's handlers, its outbox and its ticker jobs are given: config, sessions, senders
and the clock (time and config as parameters). Its own module, so that every part of the notifier
can name it without importing the others."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from services.notifier.senders import Registry
from shared.config import Config
from shared.contracts import ConversationOpened
from shared.survey_links import SurveyLinks


@dataclass
class NotifierDeps:
    config: Config
    sessions: sessionmaker[Session]
    senders: Registry
    #: The acknowledgement's text for an event, as true at the given moment (see services.notifier.ack).
    compose_ack: Callable[[ConversationOpened, datetime], str]
    clock: Callable[[], datetime]
    survey_links: SurveyLinks | None = None  # signs e-mail survey links; None: no e-mail surveys
    #: Where a batch's conversations are handled at once (handlers.handle_batch); None: one by one.
    send_pool: Executor | None = None

"""What the notifier's handlers, its outbox and its ticker jobs are given: config, sessions (and the
unit of work over them), senders and the clock (time and config as parameters). Its own module, so
that every part of the notifier can name it without importing the others."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from services.notifier.senders import Registry
from services.notifier.unit_of_work import NotifierUnitOfWork, SqlNotifierUnitOfWork
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
    #: Where the notifying rules read and write, one transaction each; None: SQL over `sessions`.
    #: Unit tests give an in-memory one (tests/support/notifier_fakes.py).
    unit_of_work: Callable[[], NotifierUnitOfWork] | None = None
    #: How a claimed outbox row reaches its provider; None: services.notifier.outbox's own sending
    #: (its sending lock and record). Unit tests give an in-memory one with the unit of work above.
    deliver: Callable[..., Any] | None = None

    def uow(self) -> NotifierUnitOfWork:
        """A new unit of work: `with deps.uow() as uow:` commits on a clean exit."""
        return self.unit_of_work() if self.unit_of_work is not None else SqlNotifierUnitOfWork(self.sessions)

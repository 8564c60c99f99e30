"""The notifier without a database: an in-memory unit of work, an in-memory outbox edge and senders
that record what users would receive (cosmicpython's FakeUnitOfWork and fake notifications).

`in_memory_notifier(config, clock)` gives NotifierDeps whose notifying rules (promises, agent
notices, acknowledgements, surveys) run unchanged against `FakeNotifierUnitOfWork`, and whose
claimed outbox rows are "sent" by `deliver_in_memory` through `RecordingSender`s. What stays for the
PostgreSQL tests: the SQL itself, the sending lock, SKIP LOCKED between replicas, the late record.

The repositories answer as the SQL ones do (same filters, same order, same limits); rows are the
notifier's ORM models, kept in lists, their ids given at `add` as the database would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Self

from services.notifier.ack import compose_ack as real_compose_ack
from services.notifier.deps import NotifierDeps
from services.notifier.models import AgentNotice, Outbox, Promise, Suppression, Survey, SurveyOptOut
from services.notifier.outbox import SENDABLE, Claimed, WaitingForEarlier
from services.notifier.senders import PermanentSendError, Registry, SendResult, TransientSendError
from shared.config import Config
from shared.survey_links import SurveyLinks


class _Table:
    """Rows of one model and the ids the database would give them."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self._ids = itertools.count(1)

    def add(self, row: Any) -> None:
        if row.id is None:
            row.id = next(self._ids)
        self.rows.append(row)

    def get(self, row_id: int) -> Any:
        return next((r for r in self.rows if r.id == row_id), None)

    def one(self, row_id: int) -> Any:
        row = self.get(row_id)
        if row is None:
            raise LookupError(f"no row {row_id}")
        return row


def _insert_new(table: _Table, model: type, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """INSERT … ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, idempotency_key."""
    taken = {r.idempotency_key for r in table.rows}
    ids = {}
    for values in rows:
        if values["idempotency_key"] not in taken:
            row = model(**values)
            table.add(row)
            taken.add(row.idempotency_key)
            ids[row.idempotency_key] = row.id
    return ids


class FakePromises:
    def __init__(self, table: _Table):
        self.table = table

    @property
    def _all(self) -> list[Promise]:
        return self.table.rows

    def for_update(self, conversation_id: str, opening: int) -> Promise | None:
        return next((p for p in self._all if p.conversation_id == conversation_id and p.opening == opening), None)

    def latest_for_update(self, conversation_id: str) -> Promise | None:
        return max((p for p in self._all if p.conversation_id == conversation_id), key=lambda p: p.opening,
                   default=None)

    def unclosed_for_update(self, conversation_id: str) -> Sequence[Promise]:
        return [p for p in self._all if p.conversation_id == conversation_id and p.closed_at is None]

    def add(self, promise: Promise) -> None:
        self.table.add(promise)

    def existing(self, openings: Collection[tuple[str, int]]) -> set[tuple[str, int]]:
        wanted = set(openings)
        return {(p.conversation_id, p.opening) for p in self._all if (p.conversation_id, p.opening) in wanted}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> int:
        new = [r for r in rows if self.for_update(r["conversation_id"], r["opening"]) is None]
        for r in new:
            self.table.add(Promise(**r))
        return len(new)

    def to_breach(self, now: datetime, limit: int) -> Sequence[Promise]:
        due = [p for p in self._all if p.status == "open" and p.due_at <= now]
        return sorted(due, key=lambda p: p.due_at)[:limit]

    def to_warn(self, now: datetime, limit: int) -> Sequence[Promise]:
        due = [p for p in self._all if p.status == "open" and p.warned_at is None and p.warn_at <= now < p.due_at]
        return sorted(due, key=lambda p: p.warn_at)[:limit]


class FakeNotices:
    def __init__(self, table: _Table, outbox: FakeOutbox):
        self.table = table
        self.outbox = outbox  # record_outcomes reads the notices' outbox rows

    @property
    def all(self) -> list[AgentNotice]:
        return self.table.rows

    def by_key(self, key: str) -> AgentNotice | None:
        return next((n for n in self.all if n.idempotency_key == key), None)

    def add(self, notice: AgentNotice) -> None:
        self.table.add(notice)

    def get(self, notice_id: int) -> AgentNotice | None:
        return self.table.get(notice_id)

    def by_keys(self, keys: Collection[str]) -> dict[str, AgentNotice]:
        wanted = set(keys)
        return {n.idempotency_key: n for n in self.all if n.idempotency_key in wanted}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        return _insert_new(self.table, AgentNotice, rows)

    def record_outcomes(self, outcomes: Sequence[tuple[int, str | None]], now: datetime) -> None:
        for notice_id, status in outcomes:
            notice = self.one(notice_id)
            row = next(r for r in self.outbox.all if r.idempotency_key == notice.idempotency_key)
            notice.status = status or row.status
            notice.attempts += 1
            notice.last_error = row.last_error
            if notice.status == "sent":
                notice.sent_at = row.sent_at or now

    def one(self, notice_id: int) -> AgentNotice:
        return self.table.one(notice_id)

    def cancel_pending(self, conversation_id: str, *, agent_id: str | None = None,
                       kinds: Iterable[str] | None = None) -> None:
        kinds = tuple(kinds) if kinds is not None else None
        for n in self.all:
            if (n.conversation_id == conversation_id and n.status == "pending"
                    and agent_id in (None, n.agent_id) and (kinds is None or n.kind in kinds)):
                n.status = "cancelled"

    def due(self, now: datetime, limit: int, ids: Iterable[int] | None = None) -> Sequence[AgentNotice]:
        wanted = set(ids) if ids is not None else None
        due = [n for n in self.all if n.status == "pending" and n.not_before <= now
               and (wanted is None or n.id in wanted)]
        return sorted(due, key=lambda n: n.not_before)[:limit]


class FakeOutbox:
    def __init__(self, table: _Table):
        self.table = table

    @property
    def all(self) -> list[Outbox]:
        return self.table.rows

    def by_key(self, key: str) -> Outbox | None:
        return next((r for r in self.all if r.idempotency_key == key), None)

    def has_key(self, key: str) -> bool:
        return self.by_key(key) is not None

    def add(self, row: Outbox) -> None:
        self.table.add(row)

    def by_keys(self, keys: Collection[str]) -> dict[str, Outbox]:
        wanted = set(keys)
        return {r.idempotency_key: r for r in self.all if r.idempotency_key in wanted}

    def insert_new(self, rows: Sequence[dict[str, Any]]) -> dict[str, int]:
        return _insert_new(self.table, Outbox, rows)

    def pending_of(self, conversation_ids: Collection[str]) -> Sequence[tuple[int, str, str, str]]:
        wanted = set(conversation_ids)
        return [(r.id, r.conversation_id, r.channel, r.address) for r in self.all
                if r.conversation_id in wanted and r.status == "pending"]

    def recent_acks(self, recipients: Collection[tuple[str, str]], customers: Collection[str],
                    since: datetime) -> Sequence[tuple[str, str, str, str | None]]:
        to, of = set(recipients), set(customers)
        return [(r.idempotency_key, r.channel, r.address, r.customer_id) for r in self.all
                if r.kind == "ack" and ((r.channel, r.address) in to or r.customer_id in of)
                and r.created_at >= since and r.status in ("pending", "sent")]

    def get(self, row_id: int) -> Outbox | None:
        return self.table.get(row_id)

    def one(self, row_id: int) -> Outbox:
        return self.table.one(row_id)

    def earlier_unsent(self, row: Outbox) -> int | None:
        return next((r.id for r in self.all if r.conversation_id == row.conversation_id and r.channel == row.channel
                     and r.address == row.address and r.status == "pending" and r.id < row.id), None)

    def last_email_ack(self, conversation_id: str) -> Outbox | None:
        acks = [r for r in self.all if r.conversation_id == conversation_id and r.kind == "ack" and r.channel == "email"]
        return max(acks, key=lambda r: r.id, default=None)

    def by_provider_id(self, channels: Sequence[str], provider_message_id: str) -> Outbox | None:
        return next((r for r in self.all if r.channel in channels and r.provider_message_id == provider_message_id),
                    None)


class FakeSuppressions:
    def __init__(self, table: _Table):
        self.table = table

    def get(self, channel: str, address: str) -> Suppression | None:
        return next((s for s in self.table.rows if s.channel == channel and s.address == address), None)

    def reason_at(self, channel: str, address: str, now: datetime) -> str | None:
        row = self.get(channel, address)
        return row.reason if row is not None and (row.until is None or row.until > now) else None

    def reasons_at(self, addresses: Collection[tuple[str, str]], now: datetime) -> dict[tuple[str, str], str]:
        reasons = {(channel, address): self.reason_at(channel, address, now) for channel, address in set(addresses)}
        return {address: reason for address, reason in reasons.items() if reason is not None}

    def add(self, suppression: Suppression) -> None:
        self.table.add(suppression)


class FakeSurveys:
    def __init__(self, table: _Table):
        self.table = table

    @property
    def all(self) -> list[Survey]:
        return self.table.rows

    def exists(self, conversation_id: str, opening: int) -> bool:
        return any(s.conversation_id == conversation_id and s.opening == opening for s in self.all)

    def add(self, survey: Survey) -> None:
        self.table.add(survey)

    def get(self, survey_id: int) -> Survey | None:
        return self.table.get(survey_id)

    def due(self, now: datetime, limit: int) -> Sequence[Survey]:
        due = [s for s in self.all if s.status == "scheduled" and s.due_at <= now]
        return sorted(due, key=lambda s: s.due_at)[:limit]

    def sending(self, limit: int) -> Sequence[Survey]:
        return [s for s in self.all if s.status == "sending"][:limit]

    def by_token(self, token: str, *, for_update: bool = False) -> Survey | None:
        return next((s for s in self.all if s.token == token), None)

    def last_sent_at(self, customer_id: str, exclude: int | None = None) -> datetime | None:
        times = [s.sent_at or s.due_at for s in self.all if s.customer_id == customer_id
                 and s.status in ("sending", "sent", "answered") and s.id != exclude]
        return max(times, default=None)

    def opt_out_scheduled(self, customer_id: str | None, channel: str, address: str) -> None:
        for s in self.all:
            theirs = (s.channel == channel and s.address == address) or bool(customer_id and s.customer_id == customer_id)
            if s.status == "scheduled" and theirs:
                s.status, s.reason = "opted_out", "the customer opted out of surveys"


class FakeSurveyOptOuts:
    def __init__(self, table: _Table):
        self.table = table

    def any_for(self, customer_id: str | None, channel: str, address: str) -> bool:
        return any((o.channel == channel and o.address == address) or bool(customer_id and o.customer_id == customer_id)
                   for o in self.table.rows)

    def by_address(self, channel: str, address: str) -> SurveyOptOut | None:
        return next((o for o in self.table.rows if o.channel == channel and o.address == address), None)

    def add(self, opt_out: SurveyOptOut) -> None:
        self.table.add(opt_out)


class FakeNotifierUnitOfWork:
    """All the notifier's rows in memory; one instance is every unit of work of a test.

    A unit that ends in an exception forgets the rows it added (changes to rows it read stay:
    the rules under test never rely on that being undone)."""

    def __init__(self) -> None:
        self._tables = {name: _Table() for name in ("promises", "notices", "outbox", "suppressions", "surveys",
                                                   "opt_outs")}
        self.promises = FakePromises(self._tables["promises"])
        self.outbox = FakeOutbox(self._tables["outbox"])
        self.notices = FakeNotices(self._tables["notices"], self.outbox)
        self.suppressions = FakeSuppressions(self._tables["suppressions"])
        self.surveys = FakeSurveys(self._tables["surveys"])
        self.opt_outs = FakeSurveyOptOuts(self._tables["opt_outs"])
        self.commits = 0
        self._lengths: list[dict[str, int]] = []

    def __enter__(self) -> Self:
        self._lengths.append({name: len(t.rows) for name, t in self._tables.items()})
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()
        self._lengths.pop()

    def commit(self) -> None:
        self.commits += 1
        self._lengths[-1] = {name: len(t.rows) for name, t in self._tables.items()}

    def rollback(self) -> None:
        for name, length in self._lengths[-1].items():
            del self._tables[name].rows[length:]


@dataclass
class RecordingSender:
    """A provider that takes every message (or raises the failures it is given, in turn) and
    remembers what each address received."""

    channel: str
    failures: list[Exception] = field(default_factory=list)
    sent: list[tuple[str, str, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, address: str, text: str, *, options: dict | None = None) -> SendResult:
        with self.lock:
            if self.failures:
                raise self.failures.pop(0)
            self.sent.append((address, text, dict(options or {})))
            return SendResult(provider_message_id=f"{self.channel}-{len(self.sent)}")

    def to(self, address: str) -> list[str]:
        """The texts `address` received, in order."""
        with self.lock:
            return [text for a, text, _ in self.sent if a == address]


def deliver_in_memory(row_id: int, deps: NotifierDeps, *, claimed: Claimed | None = None,
                      compose: Callable[[datetime], str] | None = None) -> str | None:
    """outbox.deliver without PostgreSQL: the same outcomes on the row (sent once, a conversation's
    messages in order, a permanent failure recorded, a transient one raised for a retry), without
    the sending lock and the late record, which only the database tests can show."""
    with deps.uow() as uow:
        row = uow.outbox.get(row_id)
        if row is None or row.status not in SENDABLE:
            return None
        waits_for = claimed.waits_for if claimed is not None else uow.outbox.earlier_unsent(row)
        if waits_for is not None:
            raise WaitingForEarlier(f"message {waits_for} of this conversation is not sent yet")
        body = compose(deps.clock()) if compose is not None else row.body
        row.attempts += 1
        try:
            result = deps.senders.for_channel(row.channel).send(row.address, body, options=dict(row.options or {}))
        except PermanentSendError as exc:
            row.status, row.last_error = "failed", str(exc)
            return "failed"
        except TransientSendError as exc:
            row.last_error = str(exc)
            raise
        row.status, row.body, row.sent_at = "sent", body, deps.clock()
        row.provider_message_id = result.provider_message_id
        return "sent"


@dataclass
class InMemoryNotifier:
    deps: NotifierDeps
    uow: FakeNotifierUnitOfWork
    senders: dict[str, RecordingSender]


def in_memory_notifier(config: Config, clock: Callable[[], datetime], *,
                       compose_ack: Callable[..., str] | None = None,
                       survey_links: SurveyLinks | None = None) -> InMemoryNotifier:
    """NotifierDeps on the fakes: a recording sender per channel, the in-memory unit of work and
    outbox edge, no sessions (a rule that still reached for SQL would fail loudly)."""
    uow = FakeNotifierUnitOfWork()
    senders = {ch: RecordingSender(ch) for ch in ("telegram", "email", "sms", "phone", "whatsapp", "messenger")}
    deps = NotifierDeps(config=config, sessions=None,  # type: ignore[arg-type]
                        senders=Registry(dict(senders)),
                        compose_ack=compose_ack or partial(real_compose_ack, config=config), clock=clock,
                        survey_links=survey_links, unit_of_work=lambda: uow, deliver=deliver_in_memory)
    return InMemoryNotifier(deps, uow, senders)

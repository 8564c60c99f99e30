"""Promise tracking and agent notices (SPEC §5): who is told what, and when they may be told.

A promise is made when a conversation opens (the acknowledgement states it) and kept only by the
first human reply — an acknowledgement is not a response. At 75 % of the promised business time
the owner gets a reminder; at the due time, unanswered, the owner and the team lead get a breach
notice. Agents hear of assignments and of new customer messages too, on their own channel
(Telegram or e-mail) and only within their shift: a notice made off shift waits, in the database,
until the shift starts.

The module has three layers:
- pure decisions (`warn_time`, `deliverable_at`, `plan`, `notice_language`), table-tested;
- `record`: the promise and notice rows an event makes, in one unit of work, idempotent per event;
- the ticker's jobs `check_promises(now)` and `deliver_notices(now)`: claim due rows with
  `FOR UPDATE SKIP LOCKED` and a lease, so two tickers (or a restart) send each notice once.

Every notice is also an outbox row (same idempotency key) and goes out through the same senders
and `deliver` as customer messages; transient failures come back with backoff and jitter up to
MAX_ATTEMPTS, then the notice is `dead` (visible, with its last error); permanent ones are recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from services.notifier.deps import NotifierDeps
from services.notifier.models import AgentNotice, Outbox, Promise
from services.notifier.outbox import Claim, Contended, Draft, SendingTogether, claim_many, deliver
from services.notifier.senders import TransientSendError, UnknownChannel
from services.notifier.texts import LANGUAGES, agent_notice_fields, render_agent_notice
from services.notifier.unit_of_work import NotifierUnitOfWork
from shared.bus.consumer import backoff
from shared.calendar import Calendar
from shared.config import Agent, Config
from shared.contracts import (
    ConversationAssigned,
    ConversationCalledBack,
    ConversationMessage,
    ConversationOpened,
    ConversationReply,
    ConversationResolved,
    Envelope,
)
from shared.metrics import promise_breached
from shared.redact import mask_secrets

log = logging.getLogger(__name__)

WARN_SHARE = 0.75
MAX_ATTEMPTS = 8
#: A claimed notice is not due again for this long: enough to send it; a crashed sender's claim expires.
LEASE = timedelta(minutes=5)
BATCH = 100
TRACKED = (ConversationOpened.TYPE, ConversationMessage.TYPE, ConversationReply.TYPE, ConversationResolved.TYPE,
           ConversationAssigned.TYPE, ConversationCalledBack.TYPE)
#: Notices that mean nothing once the customer has had a human reply.
PROMISE_KINDS = ("promise_warning", "promise_breached")


# --- pure decisions -----------------------------------------------------------------------------


def warn_time(received_at: datetime, due_at: datetime, calendar: Calendar, share: float = WARN_SHARE) -> datetime:
    """The moment `share` of the promised business time has passed (75 %: the reminder).

    Business time, like the promise itself: 4 business hours promised on Saturday night for
    Monday 13:00 warn at Monday 12:00, not on Sunday."""
    total = calendar.business_time_between(received_at, due_at)
    if total <= timedelta(0):
        return due_at
    return min(calendar.add_business_time(received_at, total * share), due_at)


def deliverable_at(shift: Calendar, at: datetime) -> datetime | None:
    """When a notice made at `at` may reach the agent: `at` itself within their shift, else the next
    shift start (overnight shifts, weekends and the team calendar's holidays included); None when
    the shift never starts within the calendar's search horizon."""
    return shift.next_opening(at)


def plan(event: str, owner_id: str | None, lead_id: str | None) -> list[tuple[str, str]]:
    """Who gets which notice kind for a promise event: a list of (kind, agent id).

    opened: the owner is told of the assignment, or with no owner the lead is told it is queued;
    message: the owner; warning: the owner (the lead when nobody owns it yet); breach: the owner
    and the lead, once each."""
    if event == "opened":
        if owner_id:
            return [("assigned", owner_id)]
        return [("queued", lead_id)] if lead_id else []
    if event == "message":
        return [("customer_message", owner_id)] if owner_id else []
    if event == "warning":
        who = owner_id or lead_id
        return [("promise_warning", who)] if who else []
    if event == "breach":
        return [("promise_breached", agent) for agent in dict.fromkeys(a for a in (owner_id, lead_id) if a)]
    raise ValueError(f"unknown promise event {event!r}")


def notice_language(agent: Agent) -> str:
    """The first of the agent's languages that has notice templates; English otherwise."""
    return next((lang for lang in agent.languages if lang in LANGUAGES), "en")


def notice_key(kind: str, conversation_id: str, opening: int, agent_id: str, message_id: str | None = None) -> str:
    if kind == "customer_message":
        return f"notice:message:{message_id}:{agent_id}"
    if kind == "promise_warning":
        return f"notice:warn:{conversation_id}:{opening}"
    short = {"promise_breached": "breach"}.get(kind, kind)
    return f"notice:{short}:{conversation_id}:{opening}:{agent_id}"


def _team_of(config: Config, team_id: str | None, owner_id: str | None) -> str | None:
    if team_id in config.teams:
        return team_id
    owner = config.agents.get(owner_id) if owner_id else None
    return owner.team if owner else None


def _calendar_of(config: Config, team_id: str | None) -> Calendar:
    # The calendar the router counted the promise in.
    team = config.teams.get(team_id) if team_id else None
    return config.calendars[team.calendar] if team else config.business_calendar


# --- recording: one event, one transaction ------------------------------------------------------


def record(envelope: Envelope, deps: NotifierDeps) -> list[tuple[ClaimedNotice, Claim]]:
    """Store what `envelope` means for promises and agent notices, and claim the notices due now
    with their outbox rows in the same transaction; return them, to be sent (`send_claimed`).

    Idempotent: a redelivered event finds its promise and its notice keys and adds nothing."""
    if envelope.type not in TRACKED:
        return []
    now = deps.clock()
    with deps.uow() as uow:
        claimed = claim_notices(uow, record_in(uow, envelope, deps.config, now), deps.config, now)
        return list(zip(claimed, claim_many(uow, [c.draft for c in claimed], now), strict=True))


def record_in(uow: NotifierUnitOfWork, envelope: Envelope, config: Config, now: datetime) -> list[int]:
    """`record` inside the caller's unit of work (the acknowledgement claims its outbox row in the
    same one: one commit per event instead of two)."""
    ev = envelope.payload
    if envelope.type in (ConversationOpened.TYPE, ConversationMessage.TYPE):
        # Recorded with their claims, set-based, for a batch or alone (record_many).
        raise ValueError(f"{envelope.type} is recorded by record_many")
    if envelope.type in (ConversationReply.TYPE, ConversationCalledBack.TYPE):
        # A call back is a human response as much as a written reply: it keeps the promise.
        _on_reply(uow, ev, envelope.occurred_at)
    elif envelope.type == ConversationResolved.TYPE:
        _on_resolved(uow, ev)
    elif envelope.type == ConversationAssigned.TYPE:
        return _on_assigned(uow, ev, envelope.correlation_id, config, now)
    return []


def _on_assigned(uow: NotifierUnitOfWork, ev: ConversationAssigned, correlation: str, config: Config,
                 now: datetime) -> list[int]:
    """The promise follows the conversation to its new owner (warnings and breach go to them); the
    previous owner's waiting notices are dropped; the new owner, or the lead of a queue, is told."""
    promise = uow.promises.for_update(ev.conversation_id, ev.opening)
    team_id = _team_of(config, ev.team_id, ev.owner_id)
    lead_id = config.teams[team_id].lead if team_id else None
    if promise is not None and promise.closed_at is None:
        promise.owner_id, promise.team_id, promise.lead_id = ev.owner_id, team_id, lead_id
    if ev.previous_owner_id and ev.previous_owner_id != ev.owner_id:
        uow.notices.cancel_pending(ev.conversation_id, agent_id=ev.previous_owner_id)
    if ev.owner_id == ev.previous_owner_id:
        return []
    fields = {"reference": ev.reference, "customer_name": ev.customer_name, "channel": ev.channel,
              "category": ev.category, "promise_due": ev.promise_due.isoformat() if ev.promise_due else None,
              "excerpt": "", "team_name": config.teams[team_id].name if team_id else None}
    notices = [_notice(uow, config, kind, agent, ev.conversation_id, ev.opening, fields, correlation, now)
               for kind, agent in plan("opened", ev.owner_id, lead_id)]
    return _due(notices, now)


def _on_reply(uow: NotifierUnitOfWork, ev: ConversationReply | ConversationCalledBack, at: datetime) -> None:
    """The first human reply keeps the promise (or, after the due time, ends it breached)."""
    promise = uow.promises.latest_for_update(ev.conversation_id)
    if promise is None or promise.kept_at is not None:
        return
    promise.kept_at = at
    if promise.status == "open":
        if at <= promise.due_at:
            promise.status = "kept"
        else:
            promise.status, promise.breached_at = "breached", promise.due_at
    # Notices still waiting for a shift that no longer mean anything.
    uow.notices.cancel_pending(ev.conversation_id, kinds=PROMISE_KINDS)


def _on_resolved(uow: NotifierUnitOfWork, ev: ConversationResolved) -> None:
    for promise in uow.promises.unclosed_for_update(ev.conversation_id):
        promise.closed_at = ev.resolved_at
        if promise.status == "open":
            promise.status = "closed"
    uow.notices.cancel_pending(ev.conversation_id)


def _notice(uow: NotifierUnitOfWork, config: Config, kind: str, agent_id: str, conversation_id: str, opening: int,
            fields: dict[str, Any], correlation: str, now: datetime, message_id: str | None = None) -> AgentNotice:
    key = notice_key(kind, conversation_id, opening, agent_id, message_id)
    row = uow.notices.by_key(key)
    if row is not None:
        return row
    agent = config.agents.get(agent_id)
    when = deliverable_at(agent.shift, now) if agent else None
    row = AgentNotice(idempotency_key=key, kind=kind, conversation_id=conversation_id, agent_id=agent_id,
                      fields=fields, not_before=when or now, status="pending", attempts=0,
                      correlation_id=correlation, created_at=now)
    if agent is None or agent.notify is None:
        row.status, row.last_error = "skipped", f"agent {agent_id!r} has no notify channel in the config"
    elif when is None:
        row.status, row.last_error = "skipped", f"agent {agent_id!r} has no shift in the next two years"
    uow.notices.add(row)
    return row


def _due(notices: Iterable[AgentNotice], now: datetime) -> list[int]:
    return [n.id for n in notices if n.status == "pending" and n.not_before <= now]


# --- a batch's events, and the notices claimed with their event ---------------------------------


@dataclass(frozen=True)
class ClaimedNotice:
    """A notice due now, leased to this process in its event's transaction, with its outbox row
    drafted there (rendered as of that moment): sent once that transaction commits."""

    notice_id: int
    draft: Draft


def _message_fields(ev: ConversationMessage) -> dict[str, Any]:
    return {"reference": ev.reference, "customer_name": ev.customer_name, "channel": ev.channel,
            "excerpt": ev.excerpt or "…", "promise_due": ev.promise_due.isoformat() if ev.promise_due else None}


def _message_notices(ev: ConversationMessage, correlation: str, config: Config, now: datetime) -> list[dict[str, Any]]:
    fields = _message_fields(ev)
    return [_notice_values(config, kind, agent, ev.conversation_id, 0, fields, correlation, now,
                           message_id=ev.inbound_message_id)
            for kind, agent in plan("message", ev.owner_id, None)]


def _opened_fields(ev: ConversationOpened, config: Config, team_id: str | None) -> dict[str, Any]:
    return {"reference": ev.reference, "customer_name": ev.customer_name, "channel": ev.channel,
            "category": ev.category, "promise_due": ev.promise_due.isoformat(), "excerpt": ev.excerpt,
            "team_name": config.teams[team_id].name if team_id else None}


def record_many(uow: NotifierUnitOfWork, envelopes: Sequence[Envelope], config: Config,
                now: datetime) -> list[list[ClaimedNotice]]:
    """`record_in` for a batch of conversation.opened and conversation.message events, in
    set-based statements: which promises and notice keys exist, one multi-row INSERT of the new
    promises and one of the new notices; the notices due now are claimed here (leased as they are
    inserted; those found, as `claim_notices` claims them). Per event, its claimed notices. The
    events must be of distinct conversations: each is recorded recorded exactly as it was
    alone, one transaction each, before. Raises `Contended` when another transaction inserted a promise
    or notice meanwhile (the caller claims the events again one by one)."""
    openings = [e.payload for e in envelopes if e.type == ConversationOpened.TYPE]
    promised = uow.promises.existing([(ev.conversation_id, ev.opening) for ev in openings if ev.reply_to]) \
        if openings else set()
    promises: list[dict[str, Any]] = []
    planned: list[list[dict[str, Any]]] = []  # per event, its notices' column values
    for envelope in envelopes:
        if envelope.type == ConversationMessage.TYPE:
            planned.append(_message_notices(envelope.payload, envelope.correlation_id, config, now))
            continue
        ev: ConversationOpened = envelope.payload
        if ev.reply_to and (ev.conversation_id, ev.opening) in promised:
            planned.append([])  # recorded before: a redelivered event adds nothing
            continue
        team_id = _team_of(config, ev.team_id, ev.owner_id)
        lead_id = config.teams[team_id].lead if team_id else None
        if ev.reply_to:  # without one, no promise: see _on_opened
            promises.append({
                "conversation_id": ev.conversation_id, "opening": ev.opening, "reference": ev.reference,
                "customer_name": ev.customer_name, "channel": ev.channel, "category": ev.category,
                "owner_id": ev.owner_id, "team_id": team_id, "lead_id": lead_id, "received_at": ev.received_at,
                "due_at": ev.promise_due, "status": "open", "created_at": now,
                "warn_at": warn_time(ev.received_at, ev.promise_due, _calendar_of(config, team_id))})
        fields = _opened_fields(ev, config, team_id)
        planned.append([_notice_values(config, kind, agent, ev.conversation_id, ev.opening, fields,
                                       envelope.correlation_id, now)
                        for kind, agent in plan("opened", ev.owner_id, lead_id)])
    keys = {v["idempotency_key"] for event in planned for v in event}
    found = uow.notices.by_keys(keys) if keys else {}
    if promises and uow.promises.insert_new(promises) < len(promises):
        raise Contended("a promise of the batch was recorded meanwhile")
    new: dict[str, dict[str, Any]] = {}
    rendered: dict[str, str] = {}
    for values in (v for event in planned for v in event):
        key = values["idempotency_key"]
        if key in found or key in new:
            continue
        new[key] = values
        if values["status"] == "pending" and values["not_before"] <= now:
            body = _rendered(values, config.agents[values["agent_id"]], now, config)
            if body is None:
                continue
            rendered[key] = body
            values["not_before"] = now + LEASE  # claimed: sent right after the commit (see `claim`)
    ids = uow.notices.insert_new(list(new.values())) if new else {}
    if len(ids) < len(new):
        raise Contended("an agent notice of the batch was recorded meanwhile")
    earlier = claim_notices(uow, [n.id for n in found.values() if n.status == "pending" and n.not_before <= now],
                            config, now)
    by_key: dict[str, ClaimedNotice] = {c.draft.values["idempotency_key"]: c for c in earlier}
    for key, body in rendered.items():
        values = new[key]
        agent = config.agents[values["agent_id"]]
        by_key[key] = ClaimedNotice(ids[key], _notice_draft(ids[key], key, values["conversation_id"],
                                                            values["correlation_id"], values["fields"], agent, body,
                                                            now))
    return [[by_key[v["idempotency_key"]] for v in event if v["idempotency_key"] in by_key] for event in planned]


def claim_notices(uow: NotifierUnitOfWork, ids: Sequence[int], config: Config, now: datetime) -> list[ClaimedNotice]:
    """Lease the stored notices `ids` that are due by `now` (moving `not_before` a lease ahead, in
    the caller's transaction: SKIP LOCKED, so another process takes others or none) and draft
    their outbox rows, rendered now. A notice whose agent has no channel is skipped, one that
    cannot be rendered failed, as `send_notice` records them."""
    if not ids:
        return []
    claimed = []
    for notice in uow.notices.due(now, BATCH, ids):
        notice.not_before = now + LEASE
        agent = config.agents.get(notice.agent_id)
        if agent is None or agent.notify is None:
            notice.status, notice.last_error = "skipped", f"agent {notice.agent_id!r} has no notify channel"
            continue
        row = uow.outbox.by_key(notice.idempotency_key)
        # Drafted before (a claim that expired): the draft finds that row, and sends it if pending.
        body = row.body if row is not None else None
        if body is None:
            values: dict[str, Any] = {"idempotency_key": notice.idempotency_key, "kind": notice.kind,
                                      "fields": notice.fields, "conversation_id": notice.conversation_id,
                                      "status": notice.status, "last_error": None}
            body = _rendered(values, agent, now, config)
            if body is None:
                notice.status, notice.last_error = values["status"], values["last_error"]
                continue
        claimed.append(ClaimedNotice(notice.id, _notice_draft(notice.id, notice.idempotency_key,
                                                              notice.conversation_id, notice.correlation_id,
                                                              notice.fields, agent, body, now)))
    return claimed


def _notice_values(config: Config, kind: str, agent_id: str, conversation_id: str, opening: int,
                   fields: dict[str, Any], correlation: str, now: datetime,
                   message_id: str | None = None) -> dict[str, Any]:
    """A new notice's column values, as `_notice` makes its row."""
    agent = config.agents.get(agent_id)
    when = deliverable_at(agent.shift, now) if agent else None
    values: dict[str, Any] = {
        "idempotency_key": notice_key(kind, conversation_id, opening, agent_id, message_id), "kind": kind,
        "conversation_id": conversation_id, "agent_id": agent_id, "fields": fields, "not_before": when or now,
        "status": "pending", "attempts": 0, "last_error": None, "correlation_id": correlation, "created_at": now}
    if agent is None or agent.notify is None:
        values["status"], values["last_error"] = "skipped", f"agent {agent_id!r} has no notify channel in the config"
    elif when is None:
        values["status"], values["last_error"] = "skipped", f"agent {agent_id!r} has no shift in the next two years"
    return values


def _rendered(values: dict[str, Any], agent: Agent, now: datetime, config: Config) -> str | None:
    """The notice's text; None when it cannot be rendered, with `values` marked failed (the same
    fields fail again: recorded, never retried)."""
    try:
        return render_notice(values["kind"], values["fields"], agent, now, config)
    except Exception as exc:  # noqa: BLE001 - recorded on the notice, as send_notice does
        values["status"], values["last_error"] = "failed", mask_secrets(f"not rendered: {exc}")[:2000]
        log.exception("agent notice %s for conversation %s could not be rendered; recorded as failed",
                      values["idempotency_key"], values["conversation_id"],
                      extra={"conversation_id": values["conversation_id"]})
        return None


def _notice_draft(notice_id: int, key: str, conversation_id: str | None, correlation: str, fields: dict[str, Any],
                  agent: Agent, body: str, now: datetime) -> Draft:
    assert agent.notify is not None
    channel = agent.notify.channel
    return Draft({"idempotency_key": key, "kind": "notice", "conversation_id": conversation_id, "customer_id": None,
                  "channel": channel, "address": agent.notify.address, "body": body, "status": "pending",
                  "attempts": 0, "last_error": None, "correlation_id": correlation,
                  "source_message_id": f"notice:{notice_id}", "created_at": now,
                  "options": _options(channel, body, fields.get("reference"))}, screened=False)


def send_claimed(notices: Sequence[tuple[ClaimedNotice, Claim]], deps: NotifierDeps,
                 now: datetime, *, sending: SendingTogether | None = None) -> list[tuple[int, str | None]]:
    """Deliver notices claimed with their event (after its commit), each with its outbox claim.
    What each came to, for `record_sent` (None: take the outbox row's status); a transient
    failure is recorded here (backoff, then dead), and a notice that raised otherwise is left to
    its lease's end and the ticker. `sending`: the batch's sending transaction, if any."""
    outcomes: list[tuple[int, str | None]] = []
    for notice, claim in notices:
        try:
            status = (deliver(claim.row_id, deps, claimed=claim.send, sending=sending)
                      if claim.send is not None else None)
        except TransientSendError as exc:
            _retry_later(deps, notice.notice_id, claim.row_id, now, exc)
            continue
        except UnknownChannel as exc:
            status = "failed"
            with deps.uow() as uow:
                row = uow.outbox.one(claim.row_id)
                row.status, row.last_error = "failed", mask_secrets(str(exc))
        except Exception:  # noqa: BLE001 - the event is done; the claim expires and the ticker retries
            log.exception("agent notice %s not sent now; the ticker retries it", notice.notice_id)
            continue
        outcomes.append((notice.notice_id, status))
    return outcomes


def record_sent(outcomes: Sequence[tuple[int, str | None]], deps: NotifierDeps, now: datetime) -> None:
    """The notices' statuses after their sends: one statement for all of them (a batch's)."""
    if outcomes:
        with deps.uow() as uow:
            uow.notices.record_outcomes(outcomes, now)


# --- the ticker's jobs --------------------------------------------------------------------------


def check_promises(now: datetime, deps: NotifierDeps) -> int:
    """Breach the open promises past their due time and warn those past 75 %; each exactly once.

    Breaches first: a promise whose warning was never sent (the notifier was down) gets only the
    breach notice. Rows are claimed with SKIP LOCKED, so a second ticker takes other rows or none."""
    config = deps.config
    breached: list[tuple[str | None, str]] = []
    with deps.uow() as uow:
        for p in uow.promises.to_breach(now, BATCH):
            p.status, p.breached_at = "breached", p.due_at
            owner = config.agents.get(p.owner_id) if p.owner_id else None
            fields = _promise_fields(p) | {"owner_name": owner.name if owner else None}
            for kind, agent in plan("breach", p.owner_id, p.lead_id):
                _notice(uow, config, kind, agent, p.conversation_id, p.opening, fields, f"promise:{p.id}", now)
            breached.append((p.team_id, p.category))
        warn = uow.promises.to_warn(now, BATCH)
        for p in warn:
            p.warned_at = now
            for kind, agent in plan("warning", p.owner_id, p.lead_id):
                _notice(uow, config, kind, agent, p.conversation_id, p.opening, _promise_fields(p),
                        f"promise:{p.id}", now)
    for team, category in breached:  # counted once the breach is committed
        promise_breached(team, category)
    return len(breached) + len(warn)


def _promise_fields(p: Promise) -> dict[str, Any]:
    return {"reference": p.reference, "customer_name": p.customer_name, "channel": p.channel,
            "promise_due": p.due_at.isoformat()}


def deliver_notices(now: datetime, deps: NotifierDeps) -> int:
    """Send every pending notice whose time has come (a shift started, a backoff ended)."""
    sent = 0
    for notice_id in claim(deps, now):
        try:
            sent += send_notice(notice_id, deps, now) == "sent"
        except Exception:  # noqa: BLE001 - one notice must not hold back the others claimed with it
            # Its claim expires after LEASE and a later tick tries it again; the outbox row's key and
            # sending lock keep that from sending it twice.
            log.exception("agent notice %s not sent; the ticker tries it again after its lease", notice_id)
    return sent


def claim(deps: NotifierDeps, now: datetime, ids: Iterable[int] | None = None) -> list[int]:
    """Take due notices for this process: moving `not_before` a lease ahead, in a committed
    transaction, hides them from every other ticker until sent (or the lease ends after a crash)."""
    with deps.uow() as uow:
        rows = uow.notices.due(now, BATCH, ids)
        for row in rows:
            row.not_before = now + LEASE
        return [row.id for row in rows]


def send_notice(notice_id: int, deps: NotifierDeps, now: datetime) -> str | None:
    """Render a claimed notice, put it in the outbox under its key and deliver it."""
    with deps.uow() as uow:
        notice = uow.notices.get(notice_id)
        if notice is None or notice.status != "pending":
            return None
        agent = deps.config.agents.get(notice.agent_id)
        if agent is None or agent.notify is None:
            notice.status, notice.last_error = "skipped", f"agent {notice.agent_id!r} has no notify channel"
            return "skipped"
        row = uow.outbox.by_key(notice.idempotency_key)
        if row is None:
            try:
                body = render_notice(notice.kind, notice.fields, agent, now, deps.config)
            except Exception as exc:  # noqa: BLE001 - the same fields fail again: recorded, never retried
                notice.status, notice.last_error = "failed", mask_secrets(f"not rendered: {exc}")[:2000]
                log.exception("agent notice %s for conversation %s could not be rendered; recorded as failed",
                              notice.idempotency_key, notice.conversation_id,
                              extra={"conversation_id": notice.conversation_id})
                return "failed"
            row = Outbox(idempotency_key=notice.idempotency_key, kind="notice", conversation_id=notice.conversation_id,
                         channel=agent.notify.channel, address=agent.notify.address, body=body, status="pending",
                         attempts=0, correlation_id=notice.correlation_id, source_message_id=f"notice:{notice.id}",
                         created_at=now, options=_options(agent.notify.channel, body, notice.fields.get("reference")))
            uow.outbox.add(row)
        row_id = row.id
    try:
        status = deliver(row_id, deps)
    except TransientSendError as exc:
        _retry_later(deps, notice_id, row_id, now, exc)
        return "pending"
    except UnknownChannel as exc:
        # A wiring mistake, not the agent's fault: recorded and visible, not retried forever.
        status = "failed"
        with deps.uow() as uow:
            row = uow.outbox.one(row_id)
            row.status, row.last_error = "failed", mask_secrets(str(exc))
    with deps.uow() as uow:
        notice = uow.notices.one(notice_id)
        row = uow.outbox.one(row_id)
        # None: the outbox row was no longer pending (sent before a crash): take its outcome.
        notice.status = status or ("sent" if row.status == "sent" else row.status)
        notice.attempts += 1
        notice.last_error = row.last_error
        if notice.status == "sent":
            notice.sent_at = row.sent_at or now
    return notice.status


def _retry_later(deps: NotifierDeps, notice_id: int, row_id: int, now: datetime, exc: TransientSendError) -> None:
    with deps.uow() as uow:
        notice = uow.notices.one(notice_id)
        notice.attempts += 1
        notice.last_error = mask_secrets(str(exc))[:2000]
        if notice.attempts >= MAX_ATTEMPTS:
            notice.status = "dead"
            uow.outbox.one(row_id).status = "dead"
            log.error("agent notice %s dead after %d attempts: %s", notice.idempotency_key, notice.attempts, exc)
            return
        delay = max(backoff(notice.attempts, base=5.0, cap=900.0), exc.retry_after or 0.0)
        notice.not_before = now + timedelta(seconds=delay)
        log.warning("agent notice %s failed (attempt %d), again in %.0fs: %s",
                    notice.idempotency_key, notice.attempts, delay, exc)


def render_notice(kind: str, fields: dict[str, Any], agent: Agent, now: datetime, config: Config) -> str:
    """The notice's text in the agent's language, its times in the agent's zone as of `now`."""
    tz = agent.shift.tz
    args = {k: v for k, v in fields.items() if v is not None and k != "promise_due"}
    if fields.get("promise_due"):
        args["promise_due"] = datetime.fromisoformat(fields["promise_due"]).astimezone(tz)
        args["now"] = now.astimezone(tz)
    # The stored fields the notice's template takes (texts/agent.py says which), nothing else.
    allowed = agent_notice_fields(kind)
    if kind == "assigned" and not args.get("excerpt"):
        args["excerpt"] = "…"
    return render_agent_notice(notice_language(agent), kind, overrides=config.templates or None,
                               **{k: v for k, v in args.items() if k in allowed})


def _options(channel: str, body: str, reference: str | None = None) -> dict | None:
    if channel != "email":
        return None
    # Automatic: an agent's out-of-office must not answer it (and open a conversation with us).
    # The [SB-…] reference in the subject: an agent who answers the notice by mail is threaded into
    # the conversation (recorded there as the agent's note, services/router/handlers.py), and can
    # find every notice of one conversation by searching their mailbox for it.
    options: dict[str, Any] = {"subject": body.splitlines()[0][:200] if body else "Switchboard", "automatic": True}
    if reference:
        options["reference"] = reference
    return options

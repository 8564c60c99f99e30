"""The KPI report's edge: who may see what, the period, the figures a conversation keeps as they
happen, and the aggregate queries that feed services/router/kpis.py.

Used by the API (GET /api/v1/kpis), the dashboard page and `switchboard report`. A report never
loads a period's conversations: the database counts, sums and takes percentiles over columns each
conversation keeps up to date (its first response in business time, computed once when it happens;
its resolution time), and returns a few grouped rows — by local day, by channel/category/language/
owner, by hour of the week — whatever the period's size. Whole local days are read from daily
roll-ups per team and agent (kpi_daily), rebuilt from the conversations when one of that day's
changes. The surveys are the router's own record (conversation_surveys), kept from the notifier's
survey.result events.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Date,
    DateTime,
    Integer,
    and_,
    bindparam,
    case,
    cast,
    delete,
    event,
    exists,
    extract,
    func,
    inspect,
    literal,
    or_,
    select,
    text,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session, sessionmaker

from services.router import kpis
from services.router.access import led_teams
from services.router.models import (
    Conversation,
    ConversationSurvey,
    KpiDaily,
    KpiDailySurveys,
    KpiDay,
    KpiDirtyDay,
    Message,
)
from shared.calendar import Calendar
from shared.config import Agent, Config
from shared.contracts import SurveyResult
from shared.db import UTCDateTime, transaction

log = logging.getLogger(__name__)


class ScopeError(Exception):
    """The asked scope is not the asker's to see (403) or does not exist (422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Scope:
    team: str | None
    agent: str | None


def scope_for(asker: Agent | None, config: Config, team: str | None, agent: str | None) -> Scope:
    """A lead sees their teams and their agents; any other agent only their own figures.

    ``asker`` None is the operator's CLI: everything.
    """
    if team is not None and team not in config.teams:
        raise ScopeError(422, f"unknown team {team!r}")
    if agent is not None and agent not in config.agents:
        raise ScopeError(422, f"unknown agent {agent!r}")
    if asker is None:
        return Scope(team, agent)
    teams = led_teams(asker, config)
    if not teams:
        if team is not None or (agent is not None and agent != asker.id):
            raise ScopeError(403, "only a team lead sees a team's or another agent's figures")
        return Scope(None, asker.id)
    if team is not None and team not in teams:
        raise ScopeError(403, f"you do not lead the team {team!r}")
    if agent is not None and agent != asker.id and config.agents[agent].team not in teams:
        raise ScopeError(403, f"{agent!r} is not in a team you lead")
    if team is None and agent is None:
        team = sorted(teams)[0]  # a lead's default view is their (first) team
    return Scope(team, agent)


def parse_moment(text: str, tz: ZoneInfo) -> datetime:
    """"2026-11-01" (midnight in the business's zone) or an ISO-8601 time (no offset: that zone)."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(0), tzinfo=tz)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a date (2026-11-01) or an ISO-8601 time") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def period(config: Config, now: datetime, start: str | None, end: str | None) -> tuple[datetime, datetime]:
    """[start, end): defaults to the 7 days up to now; raises ValueError on nonsense."""
    tz = ZoneInfo(config.business_calendar.timezone)
    stop = parse_moment(end, tz) if end else now
    try:
        begin = parse_moment(start, tz) if start else stop - timedelta(days=7)
    except OverflowError as exc:  # "to=0001-01-02": there is no week before it
        raise ValueError("the period starts before the year 1") from exc
    if begin >= stop:
        raise ValueError("from must be before to")
    if stop - begin > timedelta(days=366):
        raise ValueError("a period is at most 366 days")
    return begin, stop


# --- a conversation's own figures, kept when they happen ------------------------------------------


def record_first_response(conv: Conversation, at: datetime, calendar: Calendar) -> None:
    """The first human response (a reply, a call back): its time and, once, its business time."""
    if conv.first_response_at is None:
        conv.first_response_at = at
        conv.first_response_business_s = calendar.business_time_between(conv.opened_at, at).total_seconds()


def record_resolution(conv: Conversation, at: datetime) -> None:
    conv.status, conv.resolved_at = "resolved", at
    conv.resolution_s = (at - conv.opened_at).total_seconds()


def record_reopening(conv: Conversation) -> None:
    conv.status, conv.resolved_at, conv.resolution_s = "open", None, None


def backfill_first_responses(sessions: sessionmaker[Session], calendar: Calendar, *, batch: int = 1000) -> int:
    """Business times of first responses stored before they were kept (migration 0012 cannot
    compute them: the calendar is in the config). Batches in id order, each its own transaction, so
    memory stays flat and a restart picks up where it stopped. Returns how many rows it filled."""
    done = 0
    after = ""
    while True:
        with transaction(sessions) as s:
            rows = s.execute(select(Conversation.id, Conversation.opened_at, Conversation.first_response_at)
                             .where(Conversation.first_response_at.is_not(None),
                                    Conversation.first_response_business_s.is_(None), Conversation.id > after)
                             .order_by(Conversation.id).limit(batch)).all()
            for cid, opened, first in rows:
                if first is None:  # excluded by the query; the column's type cannot say so
                    continue
                s.execute(update(Conversation).where(Conversation.id == cid).values(
                    first_response_business_s=calendar.business_time_between(opened, first).total_seconds()))
        if not rows:
            return done
        done += len(rows)
        after = rows[-1][0]


def record_survey_result(s: Session, result: SurveyResult) -> None:
    """The notifier's word on a survey, as an upsert: sent once, answered once, in any order."""
    insert = postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(ConversationSurvey).values(
        conversation_id=result.conversation_id, opening=result.opening, kind=result.kind,
        sent_at=result.sent_at, score=result.score, answered_at=result.answered_at,
        channel=result.channel, address=result.address, token=result.token, commented=result.commented)
    table = ConversationSurvey.__table__.c
    s.execute(stmt.on_conflict_do_update(
        index_elements=[table.conversation_id, table.opening],
        set_={"sent_at": func.coalesce(table.sent_at, stmt.excluded.sent_at),
              "score": func.coalesce(table.score, stmt.excluded.score),
              "answered_at": func.coalesce(table.answered_at, stmt.excluded.answered_at),
              "channel": func.coalesce(table.channel, stmt.excluded.channel),
              "address": func.coalesce(table.address, stmt.excluded.address),
              "token": func.coalesce(table.token, stmt.excluded.token),
              # Once commented, always: the router's own mark is never undone by an older report.
              "commented": table.commented | stmt.excluded.commented}))
    # The survey roll-ups of its conversation's day are rebuilt (in this same transaction's mark).
    s.execute(sa_insert(KpiDirtyDay).from_select(["utc_day"], select(_utc_day_of(s, Conversation.opened_at)).where(
        Conversation.id == result.conversation_id)))


# --- daily roll-ups per team and agent ---------------------------------------------------------------
#
# A report reads whole local days of its period from kpi_daily (a few rows a day, whatever the
# day's volume) and only the rest — the partial days at its edges, and any day not built yet,
# changed since it was built, or whose promises may still turn — from the conversations. A day's
# rows are rebuilt whole from its conversations, never incremented, so redelivery, reassignment,
# a reopening or a late first reply cannot make them drift: the worst a race can do is leave a
# day marked, and a marked day is read from its conversations. The marks are taken in the very
# transaction that changes a conversation (an ORM flush hook below), the rebuilding is a job
# (refresh_rollups) beside the work. Percentiles and surveys are not rolled up: a median cannot
# be added, and a survey counts in a period by its own sending time; both stay exact index passes.

# What a roll-up row depends on: a change to any of these marks the conversation's day.
ROLLED_UP = ("opened_at", "status", "team_id", "owner_id", "channel", "category", "language", "opening",
             "reply_to", "promise_due", "first_response_at", "resolved_at")
# outcome_case as of a moment after every promise of a built day is settled (see stable_after).
SETTLED = datetime(9999, 1, 1, tzinfo=UTC)
ROLLUP_LOCK = 0x4B50_4931  # PostgreSQL advisory lock: one roll-up job at a time over all replicas


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _touched_days(session: Session) -> set[date]:
    """The UTC days of the conversations this flush writes a rolled-up column of (old and new day
    when the opening time itself moves)."""
    days: set[date] = set()
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, Conversation) and obj.opened_at is not None:
            days.add(_utc_day(obj.opened_at))
    for obj in session.dirty:
        if not isinstance(obj, Conversation):
            continue
        state = inspect(obj)
        if any(state.attrs[name].history.has_changes() for name in ROLLED_UP):
            opened = state.attrs["opened_at"].history
            days.update(_utc_day(at) for at in (*opened.deleted, *opened.unchanged, *opened.added) if at is not None)
    return days


#: session.info key: the UTC days already marked in the session's current transaction.
_MARKED = "kpi_marked_days"


@event.listens_for(Session, "after_flush")
def _mark_touched_days(session: Session, _flush_context) -> None:
    """In the flush's own transaction: the change and its mark commit or roll back together.
    (after_flush still sees what the flush wrote as new/dirty, with each attribute's history.)
    A day is marked once per transaction: the router's batch flushes every message's conversation,
    mostly of today, and one row says as much as ten (the job rebuilds a marked day whole)."""
    _mark_days(session, _touched_days(session))


def mark_opened_days(session: Session, opened: Iterable[datetime | None]) -> None:
    """The marks of conversations inserted without the ORM's flush (the router's batch writes its
    new rows with Core statements): their opening days, as `_mark_touched_days` would have."""
    _mark_days(session, {_utc_day(at) for at in opened if at is not None})


def _mark_days(session: Session, days: set[date]) -> None:
    if not days:
        return
    marked: set[date] = session.info.setdefault(_MARKED, set())
    new = sorted(days - marked)
    if new:
        # inline(): no RETURNING of the ids, which nothing reads.
        session.connection().execute(sa_insert(KpiDirtyDay).inline(), [{"utc_day": d} for d in new])
        marked.update(new)


@event.listens_for(Session, "after_soft_rollback")
def _forget_marks_rolled_back(session: Session, _previous_transaction) -> None:
    """A rollback, to a savepoint too (a batch's failed message), may have taken marks with it:
    the next flush that touches their days writes them again. A missed mark would let a report
    read a stale roll-up; a repeated one only costs the job a rebuild."""
    session.info.pop(_MARKED, None)


@event.listens_for(Session, "after_transaction_end")
def _forget_marks_of_ended_transaction(session: Session, transaction) -> None:
    if transaction.parent is None:  # the outer transaction: the next one marks afresh
        session.info.pop(_MARKED, None)


def _utc_day_of(s: Session, column):
    return (cast(func.timezone("UTC", column), Date) if s.get_bind().dialect.name == "postgresql"
            else func.date(column))


def mark_every_day(s: Session) -> None:
    """Every UTC day the history has a conversation on is to be (re)built (a change of zone)."""
    s.execute(sa_insert(KpiDirtyDay).from_select(["utc_day"], select(_utc_day_of(s, Conversation.opened_at))
                                                 .distinct()))


def _day_of(at: datetime, tz: ZoneInfo) -> date:
    """The day whose day_range holds `at` (its local date but on a day a zone's clock jumps
    across midnight)."""
    day = at.astimezone(tz).date()
    while at < day_range(day, tz)[0]:
        day -= timedelta(days=1)
    while at >= day_range(day, tz)[1]:
        day += timedelta(days=1)
    return day


def day_range(day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """[local midnight of `day`, local midnight of the next day) in UTC."""
    return (datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC),
            datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC))


def _one_local_day(day: date, tz: ZoneInfo) -> bool:
    """Whether day_range(day) is exactly the moments whose local date is `day`: true for every zone
    but one whose clock jumps across midnight (a day without a midnight, or one that happens
    twice); such a day is read from its conversations."""
    lo, hi = day_range(day, tz)
    tick = timedelta(microseconds=1)
    if lo >= hi or (lo - tick).astimezone(tz).date() >= day:
        return False
    moments = [lo, hi - tick]
    for until, _ in offset_segments(tz, lo, hi)[:-1]:
        if until is not None:
            moments += [until - tick, until]
    return all(at.astimezone(tz).date() == day for at in moments if lo <= at < hi)


def _build_day(s: Session, day: date, tz: ZoneInfo) -> None:
    c = Conversation
    lo, hi = day_range(day, tz)
    where = [c.opened_at >= lo, c.opened_at < hi, c.status != "automatic"]
    outcome = outcome_case(SETTLED)
    keys = (c.team_id, c.owner_id, c.channel, c.category, c.language)
    rows = s.execute(select(*keys, func.count(), func.sum(case((outcome == "kept", 1), else_=0)),
                            func.sum(case((outcome == "breached", 1), else_=0)),
                            func.sum(case((outcome == "closed", 1), else_=0)),
                            func.sum(case((c.opening > 1, 1), else_=0))).where(*where).group_by(*keys)).all()
    # Until the latest of these moments a promise of the day may still turn (outcome_case): an
    # unanswered open one is pending until due, an unanswered resolved one is judged at resolution.
    unsettled = and_(func.coalesce(c.reply_to, "") != "", c.first_response_at.is_(None))
    stable_after = s.scalar(select(type_coerce(func.max(case((unsettled, func.coalesce(c.resolved_at, c.promise_due)))),
                                               UTCDateTime())).where(*where))
    cs = ConversationSurvey
    surveys: dict[tuple, list[int]] = {}
    # The day's conversations first, then their surveys by key: joined in one query, PostgreSQL
    # prefers scanning every survey of the history to a thousand key lookups.
    scope_of = {cid: (team, owner) for cid, team, owner in s.execute(select(c.id, c.team_id, c.owner_id).where(*where))}
    ids = list(scope_of)
    found: list = []
    for i in range(0, len(ids), 500):
        found += s.execute(select(cs.conversation_id, cs.sent_at, cs.kind, cs.score).where(
            cs.conversation_id.in_(ids[i:i + 500]), cs.sent_at.is_not(None))).all()
    for cid, sent_at, kind, score in found:
        if sent_at is None:  # excluded by the query; the column's type cannot say so
            continue
        team, owner = scope_of[cid]
        # sent, answered, CSAT answers, CSAT 4-5, NPS answers, promoters, detractors (kpis.survey_counts)
        counts = surveys.setdefault((_day_of(sent_at, tz), team, owner), [0] * 7)
        counts[0] += 1
        if score is not None:
            counts[1] += 1
            at = 2 if kind == "csat" else 4 if kind == "nps" else None
            if at is not None:
                counts[at] += 1
                if kind == "csat":
                    counts[3] += score >= 4
                else:
                    counts[5] += score >= 9
                    counts[6] += score <= 6
    s.execute(delete(KpiDaily).where(KpiDaily.day == day))
    s.execute(delete(KpiDailySurveys).where(KpiDailySurveys.day == day))
    s.execute(delete(KpiDay).where(KpiDay.day == day))
    if surveys:
        s.execute(sa_insert(KpiDailySurveys), [
            {"day": day, "sent_day": sent_day, "team_id": team, "owner_id": owner, "sent": n[0], "answered": n[1],
             "csat_answers": n[2], "csat_good": n[3], "nps_answers": n[4], "promoters": n[5], "detractors": n[6]}
            for (sent_day, team, owner), n in surveys.items()])
    if rows:
        s.execute(sa_insert(KpiDaily), [
            {"day": day, "team_id": team, "owner_id": owner, "channel": channel, "category": category,
             "language": language, "conversations": n, "kept": kept or 0, "breached": breached or 0,
             "closed": closed or 0, "reopened": reopened or 0}
            for team, owner, channel, category, language, n, kept, breached, closed, reopened in rows])
    s.execute(sa_insert(KpiDay).values(day=day, timezone=tz.key, stable_after=stable_after))


def refresh_rollups(sessions: sessionmaker[Session], calendar: Calendar, *, days_per_batch: int = 31,
                    now: datetime | None = None) -> int:
    """Rebuilds the local days around every marked UTC day whose local days have all ended by `now`,
    `days_per_batch` marked days a transaction, and deletes the marks it saw (only those: a mark
    committed meanwhile stays for the next round). Also the backfill after migration 0017 and after
    a change of the business's zone. Returns how many local days it built.

    A UTC day whose local days are not all over yet (today's, while traffic flows) is left marked,
    its marks collapsed to one: reports read those days from the conversations, as they do a day
    changed since its roll-up. Rebuilding such a day every round read its whole, growing volume again
    each time while nothing could use the result for long (the next message marks it again): in a
    20 messages/s stream it was a third of the router's CPU. It is built once, when it is over."""
    tz = ZoneInfo(calendar.timezone)
    ready_until = _last_ended_utc_day(now or datetime.now(UTC), tz)
    built = 0
    # The marks there were when the round began: one written meanwhile (a reply to an old
    # conversation while the round rebuilds its day) waits for the next round instead of keeping
    # this one going for as long as the marks keep coming.
    upto: int | None = None
    while True:
        with transaction(sessions) as s:
            if s.get_bind().dialect.name == "postgresql" and not s.scalar(
                    select(func.pg_try_advisory_xact_lock(ROLLUP_LOCK))):
                return built  # another replica is at it
            if s.scalar(select(KpiDay.day).where(KpiDay.timezone != tz.key).limit(1)) is not None:
                s.execute(delete(KpiDaily))
                s.execute(delete(KpiDailySurveys))
                s.execute(delete(KpiDay))
                mark_every_day(s)
            if upto is None:
                upto = s.scalar(select(func.max(KpiDirtyDay.id))) or 0
            utc_days = list(s.scalars(select(KpiDirtyDay.utc_day).distinct()
                                      .where(KpiDirtyDay.utc_day <= ready_until, KpiDirtyDay.id <= upto)
                                      .order_by(KpiDirtyDay.utc_day).limit(days_per_batch)))
            if not utc_days:
                _collapse_marks(s, after=ready_until)
                return built
            seen = list(s.scalars(select(KpiDirtyDay.id).where(KpiDirtyDay.utc_day.in_(utc_days),
                                                                KpiDirtyDay.id <= upto)))
            local = sorted({day for d in utc_days for day in _local_days_of(_as_date(d), tz)})
            for day in local:
                _build_day(s, day, tz)
            for i in range(0, len(seen), 1000):
                s.execute(delete(KpiDirtyDay).where(KpiDirtyDay.id.in_(seen[i:i + 1000])))
            built += len(local)


def _local_days_of(utc_day: date, tz: ZoneInfo) -> list[date]:
    """The local days whose day_range overlaps the UTC day: a conversation opened on it is on one
    of them (_day_of only grows with the moment). Two in most zones, one in UTC, three around a
    short local day."""
    lo = datetime.combine(utc_day, time(0), tzinfo=UTC)
    first, last = _day_of(lo, tz), _day_of(lo + timedelta(days=1) - timedelta(microseconds=1), tz)
    return [first + timedelta(days=k) for k in range((last - first).days + 1)]


def _last_ended_utc_day(now: datetime, tz: ZoneInfo) -> date:
    """The latest UTC day every local day of which (`_local_days_of`) has ended by `now`."""
    day = now.astimezone(UTC).date()
    while day_range(_local_days_of(day, tz)[-1], tz)[1] > now:
        day -= timedelta(days=1)
    return day


def _collapse_marks(s: Session, *, after: date) -> None:
    """One mark per UTC day left for later: a day's marks say no more than one of them does, and
    the router adds one per batch all day long (the reports ask which days are marked)."""
    keep = select(func.min(KpiDirtyDay.id)).where(KpiDirtyDay.utc_day > after).group_by(KpiDirtyDay.utc_day)
    s.execute(delete(KpiDirtyDay).where(KpiDirtyDay.utc_day > after, KpiDirtyDay.id.not_in(keep)))


def run_rollups(sessions: sessionmaker[Session], calendar: Calendar, stop: threading.Event, *,
                every: float = 30.0) -> None:
    """The roll-up job: marked days rebuilt every `every` seconds until `stop`. A failure is
    logged and tried again next round; meanwhile reports read those days from the conversations."""
    while not stop.is_set():
        try:
            refresh_rollups(sessions, calendar)
        except Exception:
            log.exception("kpi roll-ups: rebuilding the marked days failed; trying again in %.0f s", every)
        stop.wait(every)


def rolled_days(s: Session, start: datetime, end: datetime, now: datetime,
                tz: ZoneInfo) -> list[tuple[date, date]]:
    """The runs [first, stop) of whole local days of [start, end) a report may read from kpi_daily:
    built in this zone, not marked since, and with every promise settled by `now`."""
    first = start.astimezone(tz).date()
    if day_range(first, tz)[0] < start:
        first += timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    while last > first and day_range(last - timedelta(days=1), tz)[1] > end:
        last -= timedelta(days=1)
    if last <= first:
        return []
    built = {_as_date(d) for d in s.scalars(select(KpiDay.day).where(
        KpiDay.day >= first, KpiDay.day < last, KpiDay.timezone == tz.key,
        or_(KpiDay.stable_after.is_(None), KpiDay.stable_after < literal(now, UTCDateTime()))))}
    if not built:
        return []
    marked = {_as_date(d) + timedelta(days=k) for d in s.scalars(select(KpiDirtyDay.utc_day).distinct().where(
        KpiDirtyDay.utc_day >= first - timedelta(days=1), KpiDirtyDay.utc_day <= last)) for k in (-1, 0, 1)}
    runs: list[tuple[date, date]] = []
    day = first
    while day < last:
        if day in built and day not in marked and _one_local_day(day, tz):
            if runs and runs[-1][1] == day:
                runs[-1] = (runs[-1][0], day + timedelta(days=1))
            else:
                runs.append((day, day + timedelta(days=1)))
        day += timedelta(days=1)
    return runs


def _rest(start: datetime, end: datetime, runs: list[tuple[date, date]],
          tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """[start, end) less the rolled-up runs of days, as UTC ranges."""
    rest, at = [], start
    for first, stop in runs:
        lo, hi = day_range(first, tz)[0], day_range(stop - timedelta(days=1), tz)[1]
        if at < lo:
            rest.append((at, lo))
        at = hi
    if at < end:
        rest.append((at, end))
    return rest


# --- the period's figures, added up by the database -------------------------------------------------


def outcome_case(now: datetime):
    """kpis.promise_outcome as a SQL expression over the stored times (no business-time arithmetic:
    a promise's due time is stored). It depends on `now` (a promise past due unanswered is breached)
    and on the current promise of a reopened conversation, so it is evaluated, not stored."""
    at = literal(now, UTCDateTime())
    c = Conversation
    return case(
        (func.coalesce(c.reply_to, "") == "", "closed"),
        (c.first_response_at.is_not(None), case((c.first_response_at <= c.promise_due, "kept"), else_="breached")),
        (and_(c.resolved_at.is_not(None), c.resolved_at <= at),
         case((c.promise_due < c.resolved_at, "breached"), else_="closed")),
        (c.promise_due < at, "breached"),
        else_="pending")


def offset_segments(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime | None, int]]:
    """The zone's UTC offset over [lo, hi] as (until, seconds) pieces, the last with until None.
    A zone changes its offset a few times a year: walking the hours finds each change, a binary
    search pins it to the second."""
    def offset(at: datetime) -> int:
        delta = at.astimezone(tz).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0

    pieces: list[tuple[datetime | None, int]] = []
    at, current = lo, offset(lo)
    step = timedelta(hours=1)
    while at < hi:
        nxt = min(at + step, hi)
        if offset(nxt) != current:
            a, b = at, nxt  # offset(a) == current != offset(b)
            while b - a > timedelta(seconds=1):
                mid = a + (b - a) / 2
                a, b = (mid, b) if offset(mid) == current else (a, mid)
            pieces.append((b, current))
            current = offset(b)
        at = nxt
    pieces.append((None, current))
    return pieces


class LocalTime:
    """Local day, weekday (0 = Monday) and hour of a stored UTC time, in the business's zone, in
    SQL. PostgreSQL knows the zones (AT TIME ZONE); SQLite does not, so there the UTC time is
    shifted by the zone's offset piece by piece (offset_segments: exact, DST included)."""

    def __init__(self, dialect: str, tz: ZoneInfo, lo: datetime, hi: datetime):
        self.pg = dialect == "postgresql"
        self.tz, self.lo, self.hi = tz, lo, hi

    def _local(self, col):
        if self.pg:
            return func.timezone(self.tz.key, col)
        pieces = offset_segments(self.tz, self.lo, self.hi)
        shifted = [func.datetime(col, f"{seconds:+d} seconds") for _, seconds in pieces]
        if len(pieces) == 1:
            return shifted[0]
        return case(*[(col < literal(until, UTCDateTime()), expr)
                      for (until, _), expr in zip(pieces[:-1], shifted[:-1], strict=True)], else_=shifted[-1])

    def day(self, col):
        return cast(self._local(col), Date) if self.pg else func.date(self._local(col))

    def weekday(self, col):
        if self.pg:
            return cast(extract("isodow", self._local(col)), Integer) - 1
        return (cast(func.strftime("%w", self._local(col)), Integer) + 6) % 7

    def hour(self, col):
        if self.pg:
            return cast(extract("hour", self._local(col)), Integer)
        return cast(func.strftime("%H", self._local(col)), Integer)


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def _percentiles(s: Session, column, where) -> kpis.Durations:
    """Median (the mean of the middle two for an even count) and p90 by nearest rank, as
    kpis.median and kpis.nearest_rank define them. PostgreSQL: percentile_cont(0.5) and
    percentile_disc(0.9) (the first value whose rank reaches 90 %: nearest rank). SQLite has
    neither: the count, then the one or two values at that rank (ORDER BY … LIMIT/OFFSET) — the
    database sorts, Python holds at most two values."""
    if s.get_bind().dialect.name == "postgresql":
        n, med, p90 = s.execute(select(func.count(column), func.percentile_cont(0.5).within_group(column),
                                       func.percentile_disc(0.9).within_group(column)).where(*where)).one()
        return kpis.Durations(n or 0, med, p90)
    n = s.scalar(select(func.count(column)).where(*where)) or 0
    if not n:
        return kpis.Durations(0, None, None)

    def at_rank(offset: int, count: int) -> list[float]:
        return list(s.scalars(select(column).where(*where, column.is_not(None)).order_by(column)
                              .limit(count).offset(offset)))

    mid = n // 2
    med = at_rank(mid, 1)[0] if n % 2 else sum(at_rank(mid - 1, 2)) / 2
    p90 = at_rank(max(1, math.ceil(90 / 100 * n)) - 1, 1)[0]
    return kpis.Durations(n, med, p90)


def _day_counts(outcome):
    return (func.count(), func.sum(case((outcome == "kept", 1), else_=0)),
            func.sum(case((outcome == "breached", 1), else_=0)), func.sum(case((outcome == "closed", 1), else_=0)),
            func.sum(case((outcome == "pending", 1), else_=0)),
            func.sum(case((Conversation.opening > 1, 1), else_=0)))


def aggregates(s: Session, scope: Scope, start: datetime, end: datetime, now: datetime, calendar: Calendar,
               shifts: dict[str, Calendar]) -> kpis.Aggregates:
    """The period's kpis.Aggregates, every sum, count and percentile done by the database: a few
    grouped rows come back whatever the period's size (no conversation or message is loaded).
    Counts and volumes of whole local days come from the daily roll-ups (kpi_daily) where a day's
    are built and current; the rest of the period from the conversations themselves.

    On PostgreSQL every pass is an index-only scan of the period's range (migration 0016: the
    period indexes carry the columns read): two GROUP BYs over the period's conversations (by local
    day; by channel/category/language/owner), their surveys, the percentiles, and the customer
    messages (by hour of the week and staffed or not, the latter a binary search of the staffed
    stretches with width_bucket). SQLite, the embedded mode's small database, asks the same with
    plainer SQL, a few more queries."""
    c = Conversation
    tz = ZoneInfo(calendar.timezone)
    pg = s.get_bind().dialect.name == "postgresql"
    local = LocalTime(s.get_bind().dialect.name, tz, start, end)
    # Automatic mail (services.router.automatic) is counted on its own, never in a KPI.
    in_period = [c.opened_at >= start, c.opened_at < end, c.status != "automatic"]
    if scope.team is not None:
        in_period.append(c.team_id == scope.team)
    if scope.agent is not None:
        in_period.append(c.owner_id == scope.agent)

    outcome = outcome_case(now)
    day = local.day(c.opened_at)
    days: dict[date, kpis.DayCounts] = {}
    reopened = 0
    volume: Counter = Counter()
    owned: Counter = Counter()

    def add_day(d, n, kept, breached, closed, pending, again) -> None:
        nonlocal reopened
        was = days.get(_as_date(d), kpis.DayCounts())  # a local date may come from both sources
        days[_as_date(d)] = kpis.DayCounts(was.conversations + n, was.kept + (kept or 0),
                                           was.breached + (breached or 0), was.closed + (closed or 0),
                                           was.pending + (pending or 0))
        reopened += again or 0

    def add_volume(channel, category, language, owner, n) -> None:
        volume[(channel, category, language)] += n
        if owner:
            owned[owner] += n

    # Whole local days already added up (kpi_daily), then the rest of the period from the
    # conversations: the partial days at its edges and the days not (yet) rolled up.
    runs = rolled_days(s, start, end, now, tz)
    rest = _rest(start, end, runs, tz)
    if runs:
        k = KpiDaily
        rolled = [or_(*[and_(k.day >= a, k.day < b) for a, b in runs])]
        if scope.team is not None:
            rolled.append(k.team_id == scope.team)
        if scope.agent is not None:
            rolled.append(k.owner_id == scope.agent)
        for rolled_day in s.execute(select(k.day, func.sum(k.conversations), func.sum(k.kept), func.sum(k.breached),
                                    func.sum(k.closed), literal(0), func.sum(k.reopened))
                             .where(*rolled).group_by(k.day)):
            add_day(*rolled_day)
        for rolled_volume in s.execute(select(k.channel, k.category, k.language, k.owner_id, func.sum(k.conversations))
                             .where(*rolled).group_by(k.channel, k.category, k.language, k.owner_id)):
            add_volume(*rolled_volume)
    if rest:
        in_rest = [or_(*[and_(c.opened_at >= a, c.opened_at < b) for a, b in rest]), *in_period[2:]]
        # Two GROUP BYs, not one GROUPING SETS pass: PostgreSQL (15) aggregates grouping sets in one
        # process, a plain GROUP BY in parallel workers, and both read the same index-only ranges.
        for day_row in s.execute(select(day, *_day_counts(outcome)).where(*in_rest).group_by(day)):
            add_day(*day_row)
        for volume_row in s.execute(select(c.channel, c.category, c.language, c.owner_id, func.count())
                                    .where(*in_rest).group_by(c.channel, c.category, c.language, c.owner_id)):
            add_volume(*volume_row)

    surveys = _surveys(s, scope, start, end, runs, rest, in_period, tz)

    heat, unstaffed = _arrivals(s, scope, start, end, local, kpis.staffed_spans(shifts, start, end), pg)
    if pg:
        fr, rs = c.first_response_business_s, c.resolution_s
        n1, med1, p1, n2, med2, p2 = s.execute(select(
            func.count(fr), func.percentile_cont(0.5).within_group(fr), func.percentile_disc(0.9).within_group(fr),
            func.count(rs), func.percentile_cont(0.5).within_group(rs), func.percentile_disc(0.9).within_group(rs))
            .where(*in_period)).one()
        first, resolution = kpis.Durations(n1 or 0, med1, p1), kpis.Durations(n2 or 0, med2, p2)
    else:
        first = _percentiles(s, c.first_response_business_s, in_period)
        resolution = _percentiles(s, c.resolution_s, in_period)
    return kpis.Aggregates(volume=volume, owned=owned, days=days, reopened=reopened, first_response=first,
                           resolution=resolution, surveys=surveys, heat=heat, unstaffed=unstaffed)


def _surveys(s: Session, scope: Scope, start: datetime, end: datetime, runs: list[tuple[date, date]],
             rest: list[tuple[datetime, datetime]], in_period: list, tz: ZoneInfo) -> kpis.SurveyCounts:
    """The surveys sent in the period of the period's conversations in scope, in three disjoint
    parts: both days rolled up (kpi_daily_surveys); sent in the rest of the period (the partial
    edge days: few, found by their sending time); sent in a rolled-up day but of a conversation
    opened in the rest (found from those few conversations)."""
    c, cs = Conversation, ConversationSurvey
    totals = [0] * 7

    def add(row) -> None:
        for i, n in enumerate(row):
            totals[i] += n or 0

    def counts(table):
        return (func.count(), func.count(table.score),
                func.sum(case((and_(table.kind == "csat", table.score.is_not(None)), 1), else_=0)),
                func.sum(case((and_(table.kind == "csat", table.score >= 4), 1), else_=0)),
                func.sum(case((and_(table.kind == "nps", table.score.is_not(None)), 1), else_=0)),
                func.sum(case((and_(table.kind == "nps", table.score >= 9), 1), else_=0)),
                func.sum(case((and_(table.kind == "nps", table.score <= 6), 1), else_=0)))

    def within(column, ranges):
        return or_(*[and_(column >= a, column < b) for a, b in ranges])

    if not runs:  # nothing rolled up: the surveys of the period's conversations, as one pass
        add(s.execute(select(*counts(cs)).where(cs.sent_at >= start, cs.sent_at < end,
                                                cs.conversation_id.in_(select(c.id).where(*in_period)))).one())
        return kpis.SurveyCounts(*totals)
    k = KpiDailySurveys
    rolled = [within(k.day, runs), within(k.sent_day, runs)]
    if scope.team is not None:
        rolled.append(k.team_id == scope.team)
    if scope.agent is not None:
        rolled.append(k.owner_id == scope.agent)
    add(s.execute(select(func.sum(k.sent), func.sum(k.answered), func.sum(k.csat_answers), func.sum(k.csat_good),
                         func.sum(k.nps_answers), func.sum(k.promoters), func.sum(k.detractors))
                  .where(*rolled)).one())
    if rest:
        joined = select(*counts(cs)).select_from(cs).join(c, c.id == cs.conversation_id)
        add(s.execute(joined.where(within(cs.sent_at, rest), *in_period)).one())
        rolled_utc = [(day_range(a, tz)[0], day_range(b - timedelta(days=1), tz)[1]) for a, b in runs]
        add(s.execute(joined.where(within(cs.sent_at, rolled_utc), within(c.opened_at, rest), *in_period[2:])).one())
    return kpis.SurveyCounts(*totals)


def _in_scope(scope: Scope) -> list:
    c = Conversation
    # Automatic mail (services.router.automatic) is counted on its own, never in a KPI.
    where = [c.status != "automatic"]
    if scope.team is not None:
        where.append(c.team_id == scope.team)
    if scope.agent is not None:
        where.append(c.owner_id == scope.agent)
    return where


def _smaller(s: Session, a, b) -> bool:
    """Whether the planner expects fewer rows from `a` than from `b` (its statistics, no rows read)."""
    def rows(stmt) -> float:
        compiled = stmt.compile(bind=s.get_bind())
        plan = s.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar_one()
        return float(plan[0]["Plan"]["Plan Rows"])

    return rows(select(a.c.id) if hasattr(a, "c") else a) < rows(b)


def _outside(scope: Scope):
    """The ids of the conversations outside the scope (automatic mail, another team or owner, none)
    as index ranges of the (team|owner, status, …) list indexes, or None for the whole history."""
    c = Conversation
    parts = []
    for column, value in ((c.team_id, scope.team), (c.owner_id, scope.agent)):
        if value is not None:
            parts += [select(c.id).where(column < value), select(c.id).where(column > value),
                      select(c.id).where(column.is_(None)),
                      select(c.id).where(column == value, c.status == "automatic")]
    return union_all(*parts).subquery() if parts else None


def _arrivals(s: Session, scope: Scope, start: datetime, end: datetime, local: LocalTime,
              spans: list[tuple[datetime, datetime]], pg: bool) -> tuple[list[list[int]], int]:
    """Customer messages of the scope's conversations per (weekday, hour), and how many arrived
    outside every staffed stretch (`spans`, computed from the shifts: a few hundred a year)."""
    c, m = Conversation, Message
    stmt = select().select_from(m)
    if scope.team is not None or scope.agent is not None:
        inside = select(c.id).where(*_in_scope(scope))
        outside = _outside(scope)
        if pg and _smaller(s, outside, inside):
            # A message is in scope unless its conversation is outside it (every message has its
            # conversation: the foreign key). Asked this way the database reads only the
            # conversations outside the scope, by index ranges: a team's lead often sees most of
            # the history, and joining a year's messages to all of it was a million-row join.
            stmt = stmt.where(~exists().where(outside.c.id == m.conversation_id))
        else:
            stmt = stmt.where(m.conversation_id.in_(inside))
    stmt = stmt.where(m.direction == "in", m.received_at >= start, m.received_at < end)
    weekday, hour = local.weekday(m.received_at), local.hour(m.received_at)
    heat = [[0] * 24 for _ in kpis.WEEKDAYS]
    if pg:
        # width_bucket: how many of the sorted bounds (start, end, start, end, …) are at or before
        # the time — odd inside a staffed stretch, even outside. One pass, a binary search a row.
        bounds = [t for span in spans for t in span]
        staffed = (func.width_bucket(m.received_at, bindparam("bounds", bounds, type_=ARRAY(DateTime(timezone=True))))
                   % 2) if bounds else literal(0)
        unstaffed = 0
        # The local hour, converted once a row (not once for the weekday and again for the hour):
        # at most 24 × 366 × 2 groups come back, read into the week's grid here.
        local_hour = func.date_trunc("hour", func.timezone(local.tz.key, m.received_at))
        for at_hour, in_stretch, n in s.execute(stmt.add_columns(local_hour, staffed, func.count())
                                                .group_by(local_hour, staffed)):
            heat[at_hour.weekday()][at_hour.hour] += n
            unstaffed += 0 if in_stretch else n
        return heat, unstaffed
    for wd, h, n in s.execute(stmt.add_columns(weekday, hour, func.count()).group_by(weekday, hour)):
        heat[int(wd)][int(h)] += n
    # SQLite: the messages inside the staffed stretches, counted by ranges on the received_at index.
    staffed_n = 0  # not `inside`: that name is the scope's query above
    for i in range(0, len(spans), 200):
        staffed_n += s.scalar(stmt.add_columns(func.count()).where(
            or_(*[and_(m.received_at >= b, m.received_at < e) for b, e in spans[i:i + 200]]))) or 0
    return heat, sum(map(sum, heat)) - staffed_n


def report(s: Session, config: Config, scope: Scope, start: datetime, end: datetime, now: datetime) -> dict:
    """The period's figures for the scope, added up by the database (bounded memory, any period)."""
    agents = [a for a in config.agents.values()
              if (scope.agent is None or a.id == scope.agent) and (scope.team is None or a.team == scope.team)]
    shifts = {a.id: a.shift for a in agents if a.status == "active"}
    if s.get_bind().dialect.name == "postgresql":
        # For this transaction only. JIT compiling costs 25–110 ms a query here, more than it saves
        # on a few hundred thousand index entries; the percentiles' sort and the arrivals' hash
        # join spill to disk with the default 4 MB: a year of one team's values is ~20 MB.
        s.execute(text("SET LOCAL jit = off"))
        s.execute(text("SET LOCAL work_mem = '64MB'"))
    agg = aggregates(s, scope, start, end, now, config.business_calendar, shifts)
    open_now = dict(s.execute(select(Conversation.owner_id, func.count())
                              .where(Conversation.status == "open", Conversation.owner_id.is_not(None))
                              .group_by(Conversation.owner_id)).all())
    loads = [kpis.AgentLoad(a.id, a.name, a.capacity, open_now.get(a.id, 0)) for a in agents]
    result = kpis.assemble(agg, start=start, end=end, calendar=config.business_calendar, shifts=shifts,
                           loads=loads)
    result["scope"] = {"team": scope.team, "agent": scope.agent}
    return result


FLAT_FIELDS = (
    ("conversations", ("conversations",)),
    ("first_response_median_s", ("first_response", "median_s")),
    ("first_response_p90_s", ("first_response", "p90_s")),
    ("promises_kept", ("promises", "kept")),
    ("promises_breached", ("promises", "breached")),
    ("promises_kept_pct", ("promises", "kept_pct")),
    ("resolution_median_s", ("resolution", "median_s")),
    ("resolution_p90_s", ("resolution", "p90_s")),
    ("reopen_rate_pct", ("reopen_rate_pct",)),
    ("csat_pct", ("surveys", "csat_pct")),
    ("nps", ("surveys", "nps")),
    ("survey_response_rate_pct", ("surveys", "response_rate_pct")),
    ("arrivals", ("arrivals", "total")),
    ("arrivals_when_nobody_on_shift", ("arrivals", "when_nobody_on_shift")),
)


def flat(result: dict) -> list[tuple[str, object]]:
    """The headline figures as (name, value) rows, then the volumes and loads: for table and CSV."""
    out: list[tuple[str, object]] = []
    for name, path in FLAT_FIELDS:
        value: object = result
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        out.append((name, value))
    for dim in ("channel", "category", "language"):
        out += [(f"volume.{dim}.{k}", v) for k, v in result["volume"][f"by_{dim}"].items()]
    for row in result["load"]:
        out.append((f"load.{row['agent_id']}.open_now", row["open_now"]))
        out.append((f"load.{row['agent_id']}.capacity", row["capacity"]))
        out.append((f"load.{row['agent_id']}.owned_in_period", row["owned_in_period"]))
    return out

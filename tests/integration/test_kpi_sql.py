"""The KPI report's database path (services/router/kpi_store.py) against the Python definitions
(services/router/kpis.py), on PostgreSQL and on SQLite (the embedded mode):

- the hand-checked week of tests/unit/test_kpis.py gives the very figures worked out by hand;
- on random small histories (hypothesis) both paths give the same figures for every scope, read
  from the conversations (days not rolled up yet), from the daily roll-ups (kpi_daily) for whole
  days, and again after later events (a reassignment, a reopening, a late first reply, a survey
  sent later) both before and after the roll-up job rebuilt the days they touched; in the
  business's zone and in one half an hour off UTC's hours (St John's), whose day boundaries fall
  elsewhere.

Rows are written with the router's own recorders (record_first_response, record_resolution,
record_survey_result), so the stored per-conversation figures are the ones the router keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, inspect, select

from services.router import kpi_store, kpis
from services.router.models import (
    Conversation,
    ConversationSurvey,
    Customer,
    KpiDaily,
    KpiDailySurveys,
    KpiDay,
    KpiDirtyDay,
    Message,
)
from shared.contracts import SurveyResult
from shared.db import make_engine, migrate, session_factory, transaction
from tests.unit.test_kpis import ARRIVALS, ROWS, SURVEYS, at

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request, tmp_path):
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else f"sqlite:///{tmp_path}/kpi.db"
    engine = make_engine(url)
    migrate(engine)
    yield session_factory(engine)
    engine.dispose()


def store(sessions, rows, arrivals, surveys, calendar) -> None:
    """rows: kpis.ConversationRow; arrivals: (conversation id, time); surveys: (conversation id,
    opening, kind, sent_at, score)."""
    with transaction(sessions) as s:
        for r in rows:
            s.add(Customer(id=f"cust-{r.id}", name=None, created_at=r.opened_at))
            s.flush()
            conv = Conversation(
                id=r.id, reference=f"SB-{r.id}"[:16], customer_id=f"cust-{r.id}",
                status="open", opening=r.opening, channel=r.channel,
                reply_to="" if not r.answerable else "+48600000000", language=r.language, category=r.category,
                category_reason={}, owner_id=r.owner_id, team_id=r.team_id, assignment_reason="test",
                opened_at=r.opened_at, promise_due=r.promise_due, last_message_at=r.opened_at)
            s.add(conv)
            if r.first_response_at is not None:
                kpi_store.record_first_response(conv, r.first_response_at, calendar)
            if r.resolved_at is not None:
                kpi_store.record_resolution(conv, r.resolved_at)
        s.flush()
        for i, (cid, when) in enumerate(arrivals):
            s.add(Message(id=f"m{i}", conversation_id=cid, direction="in", channel="sms", external_id=f"x{i}",
                          text="", details={}, received_at=when, correlation_id="c"))
            # An agent's reply is no arrival.
            s.add(Message(id=f"o{i}", conversation_id=cid, direction="out", channel="sms", external_id=f"y{i}",
                          text="", details={}, received_at=when, correlation_id="c"))
        for cid, opening, kind, sent_at, score in surveys:
            kpi_store.record_survey_result(s, SurveyResult(conversation_id=cid, opening=opening, kind=kind,
                                                           sent_at=sent_at))
            if score is not None:  # the answer comes as a second event with the whole state
                kpi_store.record_survey_result(s, SurveyResult(conversation_id=cid, opening=opening, kind=kind,
                                                               sent_at=sent_at, score=score, answered_at=sent_at))


def clear(sessions) -> None:
    with transaction(sessions) as s:
        for model in (ConversationSurvey, Message, Conversation, Customer, KpiDaily, KpiDailySurveys, KpiDay, KpiDirtyDay):
            s.execute(delete(model))


def in_scope(r: kpis.ConversationRow, scope: kpi_store.Scope) -> bool:
    return (scope.team is None or r.team_id == scope.team) and (scope.agent is None or r.owner_id == scope.agent)


def python_figures(config, rows, arrivals, surveys, scope, start, end, now) -> dict:
    """Today's definitions, fed the rows the old report read (kpis.compute)."""
    agents = [a for a in config.agents.values()
              if (scope.agent is None or a.id == scope.agent) and (scope.team is None or a.team == scope.team)]
    by_id = {r.id: r for r in rows}
    chosen = [r for r in rows if in_scope(r, scope)]
    period_ids = {r.id for r in chosen if start <= r.opened_at < end}
    survey_rows = [kpis.SurveyRow(kind, score) for cid, _, kind, sent, score in surveys
                   if start <= sent < end and cid in period_ids]
    result = kpis.compute(chosen, [w for cid, w in arrivals if in_scope(by_id[cid], scope)], survey_rows,
                          start=start, end=end, now=now, calendar=config.business_calendar,
                          shifts={a.id: a.shift for a in agents if a.status == "active"},
                          loads=[kpis.AgentLoad(a.id, a.name, a.capacity, sum(
                              1 for r in rows if r.owner_id == a.id and r.resolved_at is None)) for a in agents])
    result["scope"] = {"team": scope.team, "agent": scope.agent}
    return result


def same(sql: dict, py: dict) -> None:
    """Equal figures; a median is the mean of two values, which PostgreSQL's percentile_cont
    computes as a + (b - a) / 2: equal to the last few bits."""
    for part in ("first_response", "resolution"):
        if py[part]["median_s"] is not None:
            assert sql[part]["median_s"] == pytest.approx(py[part]["median_s"], rel=1e-12, abs=1e-9), part
            sql[part] = {**sql[part], "median_s": py[part]["median_s"]}
    assert sql == py


# --- the hand-checked week ------------------------------------------------------------------------


def test_the_hand_checked_week_gives_the_figures_worked_out_by_hand(db, example_config) -> None:
    arrivals = [("A", when) for when in ARRIVALS]  # all in the support team, as the unit test's
    surveys = [("A" if i % 2 else "B", i + 1, r.kind, at(24, 12), r.score) for i, r in enumerate(SURVEYS)]
    store(db, ROWS, arrivals, surveys, example_config.business_calendar)
    scope = kpi_store.Scope("support", None)
    with db() as s:
        got = kpi_store.report(s, example_config, scope, at(23, 0), at(30, 0), at(30, 12))
    assert got["conversations"] == 5
    assert got["volume"]["by_channel"] == {"email": 1, "sms": 1, "telegram": 3}
    assert got["first_response"] == {"count": 3, "median_s": 5400, "p90_s": 9000, "unanswered": 2,
                                     "business_time": True}
    assert got["promises"] == {"kept": 2, "breached": 2, "closed": 0, "pending": 1, "kept_pct": 50.0}
    assert got["resolution"] == {"count": 2, "median_s": 48600, "p90_s": 86400, "unresolved": 3}
    assert got["reopen_rate_pct"] == 20.0
    assert got["surveys"] == {"csat_pct": 66.7, "nps": 25.0, "response_rate_pct": 87.5, "sent": 8,
                              "answered": 7, "available": True}
    assert got["arrivals"]["total"] == 6 and got["arrivals"]["when_nobody_on_shift"] == 2
    assert got["arrivals"]["by_hour_of_week"]["wed"][3] == 1 and got["arrivals"]["by_hour_of_week"]["sun"][10] == 1
    assert got["trend"] == [
        {"date": "2026-11-23", "conversations": 2, "kept": 2, "breached": 0},
        {"date": "2026-11-25", "conversations": 1, "kept": 0, "breached": 1},
        {"date": "2026-11-28", "conversations": 1, "kept": 0, "breached": 1},
        {"date": "2026-11-29", "conversations": 1, "kept": 0, "breached": 0},
    ]
    same(got, python_figures(example_config, ROWS, arrivals, surveys, scope, at(23, 0), at(30, 0), at(30, 12)))


def test_a_survey_result_told_twice_or_out_of_order_is_recorded_once(db) -> None:
    sent = datetime(2026, 11, 24, 12, tzinfo=UTC)
    answered = SurveyResult(conversation_id="A", opening=1, kind="csat", sent_at=sent, score=5, answered_at=sent)
    with transaction(db) as s:
        kpi_store.record_survey_result(s, answered)
        kpi_store.record_survey_result(s, SurveyResult(conversation_id="A", opening=1, kind="csat", sent_at=sent))
        kpi_store.record_survey_result(s, answered)
    with db() as s:
        rows = s.query(ConversationSurvey).all()
        assert [(r.conversation_id, r.opening, r.score) for r in rows] == [("A", 1, 5)]


# --- random small histories -------------------------------------------------------------------------

BASE = datetime(2026, 3, 20, tzinfo=UTC)  # the period may span the spring DST change in Warsaw
MINUTES = st.integers(min_value=0, max_value=60 * 24 * 21)
SCOPES = [kpi_store.Scope(None, None), kpi_store.Scope("support", None), kpi_store.Scope(None, "anna"),
          kpi_store.Scope("support", "jonas")]


@dataclass(frozen=True)
class Later:
    """What happens to one conversation after the first reports (and roll-ups) were made."""

    owner_id: str | None  # reassigned to (with team_id), when reassign
    team_id: str | None
    reassign: bool
    reopen: bool  # a resolved one is reopened by the customer
    reply_after_min: int | None  # an unanswered one gets its first reply this long after opening
    survey: tuple[str, int, int | None] | None  # (kind, hours after opening, score): sent later


@dataclass(frozen=True)
class History:
    rows: list
    arrivals: list
    surveys: list
    later: list  # a Later per row
    start: datetime
    end: datetime
    now: datetime
    scope: kpi_store.Scope


@st.composite
def histories(draw):
    n = draw(st.integers(min_value=0, max_value=12))
    rows = []
    for i in range(n):
        opened = BASE + timedelta(minutes=draw(MINUTES))
        first = opened + timedelta(minutes=draw(st.integers(0, 4000)), microseconds=draw(st.integers(0, 999999))) \
            if draw(st.booleans()) else None
        resolved = opened + timedelta(minutes=draw(st.integers(0, 9000)), microseconds=draw(st.integers(0, 999999))) \
            if draw(st.booleans()) else None
        rows.append(kpis.ConversationRow(
            id=f"c{i}", channel=draw(st.sampled_from(["sms", "email", "telegram"])),
            category=draw(st.sampled_from(["delivery", "payment", "other"])),
            language=draw(st.sampled_from(["en", "pl"])), team_id=draw(st.sampled_from(["support", "support", None])),
            owner_id=draw(st.sampled_from(["anna", "jonas", "maria", None])), opening=draw(st.integers(1, 3)),
            opened_at=opened, promise_due=opened + timedelta(minutes=draw(st.integers(0, 3000))),
            first_response_at=first, resolved_at=resolved, answerable=draw(st.integers(0, 5)) > 0))
    arrivals = [(r.id, r.opened_at + timedelta(minutes=draw(st.integers(-30, 3000)))) for r in rows
                for _ in range(draw(st.integers(0, 3)))]
    surveys = [(r.id, r.opening, draw(st.sampled_from(["csat", "nps"])), r.opened_at + timedelta(hours=draw(
        st.integers(0, 200))), draw(st.none() | st.integers(0, 10))) for r in rows if draw(st.integers(0, 3))]
    later = [Later(owner_id=draw(st.sampled_from(["anna", "jonas", "maria", None])),
                   team_id=draw(st.sampled_from(["support", None])), reassign=draw(st.integers(0, 3)) == 0,
                   reopen=draw(st.booleans()), reply_after_min=draw(st.none() | st.integers(0, 5000)),
                   survey=draw(st.none() | st.tuples(st.sampled_from(["csat", "nps"]), st.integers(0, 300),
                                                     st.none() | st.integers(0, 10))))
             for _ in rows]
    start = BASE + timedelta(minutes=draw(st.integers(-60 * 24, 60 * 24 * 10)))
    end = start + timedelta(minutes=draw(st.integers(1, 60 * 24 * 16)))
    now = end + timedelta(minutes=draw(st.integers(-600, 6000)))
    return History(rows, arrivals, surveys, later, start, end, now, draw(st.sampled_from(SCOPES)))


def rich(k: int) -> History:
    """A history that exercises every figure (conversations, arrivals, surveys in the period, whole
    days to roll up, and later events of each kind), the same in every run: the checks below that
    the random histories were not all empty cannot depend on what the random draw gave."""
    rows, arrivals, surveys, later = [], [], [], []
    for i in range(8):
        opened = BASE + timedelta(days=1 + i, hours=3 * i + k, minutes=7 * k)
        rows.append(kpis.ConversationRow(
            id=f"c{i}", channel=("sms", "email", "telegram")[i % 3], category=("delivery", "payment", "other")[i % 3],
            language=("en", "pl")[i % 2], team_id="support" if i % 4 else None,
            owner_id=("anna", "jonas", "maria", None)[(i + k) % 4], opening=1 + i % 2, opened_at=opened,
            promise_due=opened + timedelta(hours=4), first_response_at=opened + timedelta(hours=i) if i % 3 else None,
            resolved_at=opened + timedelta(hours=30) if i % 2 else None, answerable=i != 5))
        arrivals += [(f"c{i}", opened + timedelta(minutes=m)) for m in (0, 90 * (i + 1))]
        surveys.append((f"c{i}", 1 + i % 2, ("csat", "nps")[i % 2], opened + timedelta(hours=31), (4, 9, 2, None)[i % 4]))
        later.append(Later(owner_id=("maria", "anna", None)[i % 3], team_id="support" if i % 2 else None,
                           reassign=i % 3 == 1, reopen=i % 4 == 1, reply_after_min=60 * (k + 1) if i % 3 == 0 else None,
                           survey=("nps", 40, 10) if i % 3 == 2 else None))
    start = BASE + timedelta(hours=5 + 3 * k)
    return History(rows, arrivals, surveys, later, start, start + timedelta(days=9), start + timedelta(days=40),
                   SCOPES[k % len(SCOPES)])


def happen_later(db, history: History, calendar) -> tuple[list, list]:
    """Applies each row's Later with the router's own recorders; returns the rows and surveys as
    the Python definitions now see them."""
    rows, surveys = [], list(history.surveys)
    with transaction(db) as s:
        for r, then in zip(history.rows, history.later, strict=True):
            conv = s.get(Conversation, r.id)
            assert conv is not None
            if then.reassign:
                conv.owner_id, conv.team_id = then.owner_id, then.team_id
                r = replace(r, owner_id=then.owner_id, team_id=then.team_id)
            if then.reopen and r.resolved_at is not None:
                kpi_store.record_reopening(conv)
                conv.opening += 1
                r = replace(r, resolved_at=None, opening=r.opening + 1)
            if then.reply_after_min is not None and r.first_response_at is None:
                reply = r.opened_at + timedelta(minutes=then.reply_after_min)
                kpi_store.record_first_response(conv, reply, calendar)
                r = replace(r, first_response_at=reply)
            rows.append(r)
        s.flush()
        for r, then in zip(rows, history.later, strict=True):
            if then.survey is not None:
                kind, hours, score = then.survey
                sent = r.opened_at + timedelta(hours=hours)
                kpi_store.record_survey_result(s, SurveyResult(conversation_id=r.id, opening=9, kind=kind, sent_at=sent))
                if score is not None:
                    kpi_store.record_survey_result(s, SurveyResult(conversation_id=r.id, opening=9, kind=kind,
                                                                   sent_at=sent, score=score, answered_at=sent))
                surveys.append((r.id, 9, kind, sent, score))
    return rows, surveys


def in_zone(config, zone: str):
    """The same config with the business calendar in another zone (the shifts stay as they are)."""
    cal = config.business_calendar
    return replace(config, calendars={**config.calendars,
                                      config.business.calendar: cal.with_weekly_hours(cal.weekly_hours, zone)})


@pytest.mark.parametrize("zone", ["Europe/Warsaw", "America/St_Johns"])
def test_the_database_path_equals_the_python_definitions_on_random_histories(db, example_config, zone) -> None:
    config = example_config if zone == example_config.business_calendar.timezone else in_zone(example_config, zone)
    calendar = config.business_calendar

    def figures(h: History) -> dict:
        with db() as s:
            return kpi_store.report(s, config, h.scope, h.start, h.end, h.now)

    def days_rolled(h: History) -> int:
        with db() as s:
            return sum((b - a).days for a, b in kpi_store.rolled_days(s, h.start, h.end, h.now, ZoneInfo(zone)))

    @settings(max_examples=40, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(histories())
    @example(rich(0))
    @example(rich(1))
    @example(rich(2))
    @example(rich(3))
    @example(rich(4))
    def check(h: History) -> None:
        clear(db)
        store(db, h.rows, h.arrivals, h.surveys, calendar)
        expected = python_figures(config, h.rows, h.arrivals, h.surveys, h.scope, h.start, h.end, h.now)
        # Every day is marked (new conversations): read from the conversations.
        assert days_rolled(h) == 0
        same(figures(h), expected)
        kpi_store.refresh_rollups(db, calendar)
        rolled = days_rolled(h)
        same(figures(h), expected)  # whole days from the roll-ups
        rows, surveys = happen_later(db, h, calendar)
        expected = python_figures(config, rows, h.arrivals, surveys, h.scope, h.start, h.end, h.now)
        same(figures(h), expected)  # the days touched are marked: read from the conversations again
        kpi_store.refresh_rollups(db, calendar)
        got = figures(h)
        same(got, expected)  # rebuilt
        seen.append((got["conversations"], got["arrivals"]["total"], got["surveys"]["sent"], rolled))

    seen: list[tuple[int, int, int, int]] = []
    check()
    # The histories exercised the figures and the roll-ups, not only empty periods (the explicit
    # examples alone meet these, so they hold whatever the random draw).
    assert sum(1 for n, arrived, _, _ in seen if n and arrived) >= 5, seen
    assert sum(1 for n, _, sent, _ in seen if n and sent) >= 3, seen
    assert sum(1 for n, _, _, rolled in seen if n and rolled) >= 5, seen


def test_a_changed_day_is_read_from_its_conversations_until_the_job_rebuilds_it(db, example_config) -> None:
    """Between a change and the roll-up job, the report never reads a stale roll-up: the change's
    own transaction marked its day. A change of the business's zone rebuilds every day."""
    cal = example_config.business_calendar
    store(db, ROWS, [], [], cal)
    scope, start, end, now = kpi_store.Scope("support", None), at(23, 0), at(30, 0), at(30, 12)
    tz = ZoneInfo(cal.timezone)

    def rolled() -> list:
        with db() as s:
            return kpi_store.rolled_days(s, start, end, now, tz)

    def figures(config) -> dict:
        with db() as s:
            return kpi_store.report(s, config, scope, start, end, now)

    assert rolled() == []
    assert kpi_store.refresh_rollups(db, cal) > 0
    assert kpi_store.refresh_rollups(db, cal) == 0  # nothing marked since: nothing to do
    whole = rolled()
    assert whole and whole[0][0] == start.date()
    before = figures(example_config)
    with transaction(db) as s:  # A is reassigned out of the team
        conv = s.get(Conversation, "A")
        assert conv is not None
        conv.team_id = None
    marked = rolled()
    assert marked != whole and all(not (a <= at(23, 12).date() < b) for a, b in marked)
    after = figures(example_config)
    assert after["conversations"] == before["conversations"] - 1
    kpi_store.refresh_rollups(db, cal)
    assert rolled() == whole and figures(example_config) == after
    with transaction(db) as s:  # a change the report does not read marks nothing
        conv = s.get(Conversation, "B")
        assert conv is not None
        conv.last_message_at = now
    assert rolled() == whole

    elsewhere = in_zone(example_config, "Asia/Kathmandu")  # UTC+05:45
    kpi_store.refresh_rollups(db, elsewhere.business_calendar)
    with db() as s:
        assert {d.timezone for d in s.query(KpiDay)} == {"Asia/Kathmandu"}
    rows = [r if r.id != "A" else replace(r, team_id=None) for r in ROWS]
    got, expected = figures(elsewhere), python_figures(elsewhere, rows, [], [], scope, start, end, now)
    # What the roll-ups hold, by the new zone's days (a first response's business time was kept in
    # the calendar of its moment, so the medians are not re-computed for the new zone).
    for key in ("conversations", "trend", "promises", "volume", "reopen_rate_pct"):
        assert got[key] == expected[key], key
    with db() as s:  # and they were read from the roll-ups built in that zone
        assert kpi_store.rolled_days(s, start, end, now, ZoneInfo("Asia/Kathmandu"))


def test_a_day_not_over_yet_stays_marked_and_is_built_once_it_has_ended(db, example_config) -> None:
    """The job leaves a UTC day alone while any of its local days is still going (the router would
    mark it again with its next message): the report reads those days from the conversations, and
    the day's many marks are kept as one. Once the day is over, one round builds it."""
    cal = example_config.business_calendar  # Europe/Warsaw: UTC 24 Nov is local 24 Nov 01:00 - 25 Nov 01:00
    store(db, ROWS, [], [], cal)
    with transaction(db) as s:  # the router marks a day once per batch: many marks of one day
        s.add_all([KpiDirtyDay(utc_day=at(24, 12).date()) for _ in range(5)])
    scope, start, end = kpi_store.Scope("support", None), at(23, 0), at(30, 0)
    tz = ZoneInfo(cal.timezone)
    during = at(25, 23, 30)  # local 25 Nov has not ended: the UTC day of 24 Nov is not over
    with db() as s:
        expected = kpi_store.report(s, example_config, scope, start, end, at(30, 12))

    kpi_store.refresh_rollups(db, cal, now=during)
    with db() as s:
        marks = list(s.scalars(select(KpiDirtyDay.utc_day)))
        built = set(s.scalars(select(KpiDay.day)))
        rolled = kpi_store.rolled_days(s, start, end, at(30, 12), tz)
        got = kpi_store.report(s, example_config, scope, start, end, at(30, 12))
    assert marks.count(at(24, 12).date()) == 1  # five marks kept as one
    assert at(25, 12).date() not in built  # local 25 Nov is going on: not built
    assert {at(23, 12).date(), at(24, 12).date()} <= built  # UTC 23 Nov's local days (23, 24 Nov) have ended
    # Local 24 Nov is built, but UTC 24 Nov's mark stands: read from the conversations.
    assert all(not (a <= at(24, 12).date() < b) for a, b in rolled)
    assert got == expected

    assert kpi_store.refresh_rollups(db, cal, now=at(26, 0, 1)) > 0  # local 25 Nov is over
    with db() as s:
        assert not list(s.scalars(select(KpiDirtyDay.utc_day).where(KpiDirtyDay.utc_day <= at(24, 12).date())))
        assert {at(24, 12).date(), at(25, 12).date()} <= set(s.scalars(select(KpiDay.day)))
        assert kpi_store.report(s, example_config, scope, start, end, at(30, 12)) == expected


def test_a_round_ends_while_marks_keep_coming(pg_url, example_config, monkeypatch) -> None:
    """Marks written while the job rebuilds (traffic on an old day) wait for the next round: the
    round does not start over for as long as they keep coming, and the day stays marked meanwhile."""
    engine = make_engine(pg_url)
    migrate(engine)
    db = session_factory(engine)
    cal = example_config.business_calendar
    store(db, ROWS, [], [], cal)
    build = kpi_store._build_day
    built: list = []

    def build_while_marked(s, day, tz) -> None:
        built.append(day)
        if len(built) <= 100:  # the old job would have gone round 100 times more
            with transaction(db) as other:
                other.add(KpiDirtyDay(utc_day=at(24, 12).date()))
        build(s, day, tz)

    monkeypatch.setattr(kpi_store, "_build_day", build_while_marked)
    later = datetime(2026, 12, 5, tzinfo=UTC)  # every day of ROWS is over
    try:
        days = kpi_store.refresh_rollups(db, cal, now=later, days_per_batch=1)
        assert days == len(built) < 30  # one pass over the marked days, a transaction per day
        with db() as s:  # what came meanwhile is there for the next round
            assert list(s.scalars(select(KpiDirtyDay.utc_day).distinct())) == [at(24, 12).date()]
        monkeypatch.setattr(kpi_store, "_build_day", build)
        assert kpi_store.refresh_rollups(db, cal, now=later) > 0
        with db() as s:
            assert not list(s.scalars(select(KpiDirtyDay.id)))
    finally:
        engine.dispose()


def test_first_responses_kept_before_migration_0011_are_filled_in(db, example_config) -> None:
    cal = example_config.business_calendar
    rows = [r for r in ROWS if r.first_response_at is not None]
    store(db, rows, [], [], cal)
    with transaction(db) as s:  # as a row stored before the router kept business times
        for conv in s.query(Conversation):
            conv.first_response_business_s = None
    assert kpi_store.backfill_first_responses(db, cal, batch=2) == len(rows)
    with db() as s:
        stored = {c.id: c.first_response_business_s for c in s.query(Conversation)}
    assert stored == {r.id: cal.business_time_between(r.opened_at, r.first_response_at).total_seconds() for r in rows}
    assert kpi_store.backfill_first_responses(db, cal) == 0




# --- the conversation list, a page at a time -------------------------------------------------------


def test_a_leads_list_pages_through_mine_and_my_teams_newest_first_with_a_cursor(db, example_config) -> None:
    from services.router import listing

    base = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [kpis.ConversationRow(id=f"c{i:02d}", channel="sms", category="other", language="en",
                                 team_id="support" if i % 3 else None, owner_id=("anna", "jonas", None)[i % 3],
                                 opening=1, opened_at=base + timedelta(hours=i), promise_due=base,
                                 first_response_at=None, resolved_at=base + timedelta(hours=i, minutes=5)
                                 if i % 2 else None) for i in range(20)]
    store(db, rows, [], [], example_config.business_calendar)
    anna, jonas = example_config.agents["anna"], example_config.agents["jonas"]
    visible = sorted((r for r in rows if r.team_id == "support" or r.owner_id == "anna"),
                     key=lambda r: r.opened_at, reverse=True)  # last activity = opening here
    seen, cursor = [], None
    with db() as s:
        while True:
            got, cursor = listing.page(s, anna, example_config, limit=4, cursor=cursor)
            seen += [c.id for c in got]
            if cursor is None:
                break
        assert seen == [r.id for r in visible]
        resolved, _ = listing.page(s, anna, example_config, statuses=["resolved"], limit=100)
        assert [c.id for c in resolved] == [r.id for r in visible if r.resolved_at is not None]
        own, _ = listing.page(s, jonas, example_config, limit=100)  # not a lead: only his own
        assert {c.owner_id for c in own} == {"jonas"}
        with pytest.raises(listing.BadCursor):
            listing.page(s, anna, example_config, cursor="not-a-cursor")


# --- the upgrade ------------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["postgresql", "sqlite"])
def test_migration_0012_backfills_resolution_times_and_the_surveys_sent_before_it(dialect, request, tmp_path) -> None:
    from alembic import command
    from alembic.config import Config as AlembicConfig
    from sqlalchemy import text

    from shared.db import _MIGRATIONS

    url = request.getfixturevalue("pg_url") if dialect == "postgresql" else f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)

    def upgrade(to: str) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, to)

    opened = datetime(2026, 11, 23, 9, 0, 0, 250000, tzinfo=UTC)
    resolved = opened + timedelta(hours=26, microseconds=500001)
    upgrade("0011")
    with engine.begin() as conn:  # as the router and the notifier stored them before 0012
        conn.execute(text("INSERT INTO customers (id, name, created_at) VALUES ('k', NULL, :at)"), {"at": opened})
        for cid, done in (("r", resolved), ("o", None)):
            conn.execute(text(
                "INSERT INTO conversations (id, reference, customer_id, status, opening, channel, reply_to, language,"
                " category, category_reason, owner_id, team_id, assignment_reason, opened_at, promise_due,"
                " resolved_at, last_message_at, unverified_sender) VALUES (:id, :ref, 'k', :status, 1, 'sms', '+48600',"
                " 'en', 'other', '{}', 'anna', 'support', 'x', :opened, :opened, :done, :opened, false)"),
                {"id": cid, "ref": f"SB-{cid}", "status": "resolved" if done else "open", "opened": opened,
                 "done": done})
        for i, (sent, score) in enumerate(((resolved, 5), (resolved, None), (None, None))):
            conv = "r" if i == 0 else "o"
            conn.execute(text(
                "INSERT INTO surveys (conversation_id, opening, customer_id, channel, address, language, kind, token,"
                " status, created_at, due_at, sent_at, score) VALUES (:c, :n, 'k', 'sms', '+48600', 'en', 'csat',"
                " :token, 'sent', :at, :at, :sent, :score)"),
                {"c": conv, "n": i + 1, "token": f"token-{i:04d}", "at": opened, "sent": sent, "score": score})
    upgrade("head")
    sessions = session_factory(engine)
    with sessions() as s:
        times = {c.id: c.resolution_s for c in s.query(Conversation)}
        assert times == {"r": (resolved - opened).total_seconds(), "o": None}  # to the microsecond
        kept = sorted((r.conversation_id, r.opening, r.score) for r in s.query(ConversationSurvey))
        assert kept == [("o", 2, None), ("r", 1, 5)]  # the one never sent is no survey sent
    engine.dispose()


def test_migrations_0016_0017_and_0019_roll_back_and_forth_and_the_figures_stay(db, example_config) -> None:
    """0016 rebuilds the period indexes with the report's columns (PostgreSQL's INCLUDE) and adds
    the customer-messages index; 0017 and 0019 add the daily roll-ups (and their surveys') and mark
    every day of the history for the roll-up job (the backfill): an operator can roll both back and forward on a live
    history and the week's figures are the same, before the job ran and after."""
    from alembic import command
    from alembic.config import Config as AlembicConfig

    from shared.db import _MIGRATIONS

    arrivals = [("A", when) for when in ARRIVALS]
    surveys = [("A" if i % 2 else "B", i + 1, r.kind, at(24, 12), r.score) for i, r in enumerate(SURVEYS)]
    store(db, ROWS, arrivals, surveys, example_config.business_calendar)
    scope = kpi_store.Scope("support", None)

    def figures() -> dict:
        with db() as s:
            return kpi_store.report(s, example_config, scope, at(23, 0), at(30, 0), at(30, 12))

    def move(command_, to: str) -> None:
        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with db.kw["bind"].begin() as conn:
            cfg.attributes["connection"] = conn
            command_(cfg, to)

    kpi_store.refresh_rollups(db, example_config.business_calendar)
    before = figures()
    move(command.downgrade, "0016")
    assert not {"kpi_daily", "kpi_daily_surveys"} & set(inspect(db.kw["bind"]).get_table_names())
    move(command.downgrade, "0015")
    move(command.upgrade, "head")
    with db() as s:  # the backfill: every UTC day a conversation opened on, marked
        marked = {d for d in s.scalars(select(KpiDirtyDay.utc_day))}
    assert marked == {r.opened_at.astimezone(UTC).date() for r in ROWS}
    assert figures() == before  # from the conversations
    assert kpi_store.refresh_rollups(db, example_config.business_calendar) > 0
    with db() as s:
        assert kpi_store.rolled_days(s, at(23, 0), at(30, 0), at(30, 12), ZoneInfo("Europe/Warsaw"))
    assert figures() == before  # from the roll-ups
    assert before["conversations"] == 5 and before["arrivals"]["total"] == 6


@pytest.mark.parametrize("outside_smaller", [True, False])
@pytest.mark.parametrize("scope", [kpi_store.Scope("support", None), kpi_store.Scope(None, "anna"),
                                   kpi_store.Scope("support", "taras")])
def test_arrivals_are_the_same_whichever_side_of_the_scope_the_database_reads(
        db, example_config, monkeypatch, scope, outside_smaller) -> None:
    """PostgreSQL counts a scope's arrivals either as the messages of the conversations inside it
    or as those not of a conversation outside it, by the planner's estimate of which is fewer:
    both give the Python definitions' figures. Arrivals go to conversations of every owner, an
    automatic one included, so both sides of the scope are there."""
    arrivals = [(ROWS[i % len(ROWS)].id, when) for i, when in enumerate(ARRIVALS)]
    store(db, ROWS, arrivals, [], example_config.business_calendar)
    with transaction(db) as s:  # an automatic mail's conversation, outside every scope
        auto = s.get(Conversation, ROWS[0].id)
        auto.status = "automatic"
    monkeypatch.setattr(kpi_store, "_smaller", lambda *_: outside_smaller)
    with db() as s:
        got = kpi_store.report(s, example_config, scope, at(23, 0), at(30, 0), at(30, 12))
    rows = [r if r.id != ROWS[0].id else None for r in ROWS]
    expected = python_figures(example_config, [r for r in rows if r is not None],
                              [(cid, when) for cid, when in arrivals if cid != ROWS[0].id], [],
                              scope, at(23, 0), at(30, 0), at(30, 12))
    assert got["arrivals"] == expected["arrivals"]

"""The KPI report's database path (services/router/kpi_store.py) against the Python definitions
(services/router/kpis.py), on PostgreSQL and on SQLite (the embedded mode):

- the hand-checked week of tests/unit/test_kpis.py gives the very figures worked out by hand;
- on random small histories (hypothesis) both paths give the same figures for every scope.

Rows are written with the router's own recorders (record_first_response, record_resolution,
record_survey_result), so the stored per-conversation figures are the ones the router keeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from services.router import kpi_store, kpis
from services.router.models import Conversation, ConversationSurvey, Customer, Message
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
        for model in (ConversationSurvey, Message, Conversation, Customer):
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
    start = BASE + timedelta(minutes=draw(st.integers(-60 * 24, 60 * 24 * 10)))
    end = start + timedelta(minutes=draw(st.integers(1, 60 * 24 * 16)))
    now = end + timedelta(minutes=draw(st.integers(-600, 6000)))
    scope = draw(st.sampled_from([kpi_store.Scope(None, None), kpi_store.Scope("support", None),
                                  kpi_store.Scope(None, "anna"), kpi_store.Scope("support", "jonas")]))
    return rows, arrivals, surveys, start, end, now, scope


def test_the_database_path_equals_the_python_definitions_on_random_histories(db, example_config) -> None:
    @settings(max_examples=60, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(histories())
    def check(history) -> None:
        rows, arrivals, surveys, start, end, now, scope = history
        clear(db)
        store(db, rows, arrivals, surveys, example_config.business_calendar)
        with db() as s:
            got = kpi_store.report(s, example_config, scope, start, end, now)
        same(got, python_figures(example_config, rows, arrivals, surveys, scope, start, end, now))
        seen.append((got["conversations"], got["arrivals"]["total"], got["surveys"]["sent"]))

    seen: list[tuple[int, int, int]] = []
    check()
    # The histories exercised the figures, not only empty periods.
    assert sum(1 for n, arrived, _ in seen if n and arrived) >= 5, seen
    assert sum(1 for n, _, sent in seen if n and sent) >= 3, seen


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


def test_migration_0016_rolls_back_and_forth_and_the_figures_stay(db, example_config) -> None:
    """0016 rebuilds the period indexes with the report's columns (PostgreSQL's INCLUDE) and adds
    the customer-messages index: an operator can roll it back and forward on a live history and
    the week's figures are the same on either side."""
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

    before = figures()
    move(command.downgrade, "0015")
    assert figures() == before
    move(command.upgrade, "head")
    assert figures() == before
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

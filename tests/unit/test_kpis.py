"""KPI computation on a hand-checked week (services/router/kpis.py): every expected figure below was
worked out by hand from the rows, not by running the code.

The week: Monday 23 – Sunday 29 November 2026 in Warsaw (no holiday), the example config's business
calendar (Mon–Fri 09–17, Sat 10–14). Shifts: anna Mon–Fri 09–17, jonas Mon–Thu 09–17 and Sat 10–14.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from services.router.kpis import (
    AgentLoad,
    ConversationRow,
    SurveyRow,
    compute,
    median,
    nearest_rank,
    promise_outcome,
)

W = ZoneInfo("Europe/Warsaw")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=W)


def conv(cid, channel, category, language, owner, opened, due, first=None, resolved=None, opening=1):
    return ConversationRow(id=cid, channel=channel, category=category, language=language, team_id="support",
                           owner_id=owner, opening=opening, opened_at=opened, promise_due=due,
                           first_response_at=first, resolved_at=resolved)


ROWS = [
    # A: answered after 1 business hour, before the promise; resolved 3 h after opening.
    conv("A", "telegram", "delivery", "pl", "anna", at(23, 9), at(23, 13), at(23, 10), at(23, 12)),
    # B: opened an hour before closing, answered 30 min after the next opening: 1 h 30 min of business
    # time; kept; resolved after 24 h; opened twice.
    conv("B", "email", "returns", "en", "anna", at(23, 16), at(24, 12), at(24, 9, 30), at(24, 16), opening=2),
    # C: Saturday 11:00, promise 13:00, answered 13:30: 2 h 30 min, breached.
    conv("C", "sms", "delivery", "ru", "jonas", at(28, 11), at(28, 13), at(28, 13, 30)),
    # D: Sunday, promise on Monday 17:00, not answered yet, not due yet at "now": pending.
    conv("D", "telegram", "product", "pl", None, at(29, 10), at(30, 17)),
    # E: Wednesday, promise 14:00 passed without an answer: breached.
    conv("E", "telegram", "payment", "en", "anna", at(25, 10), at(25, 14)),
    # F: the Sunday before the period: not counted anywhere.
    conv("F", "telegram", "other", "de", "anna", at(22, 10), at(23, 13), at(23, 9, 5)),
]
ARRIVALS = [at(23, 9), at(23, 16), at(28, 11), at(29, 10), at(25, 10), at(25, 3), at(22, 10)]
SURVEYS = ([SurveyRow("csat", s) for s in (5, 4, 2, None)] + [SurveyRow("nps", s) for s in (10, 9, 3, 7)])


@pytest.fixture(scope="module")
def figures(example_config):
    agents = example_config.agents
    return compute(ROWS, ARRIVALS, SURVEYS, start=at(23, 0), end=at(30, 0), now=at(30, 12),
                   calendar=example_config.business_calendar,
                   shifts={"anna": agents["anna"].shift, "jonas": agents["jonas"].shift},
                   loads=[AgentLoad("anna", "Anna Kowalska", 8, 3), AgentLoad("jonas", "Jonas Petrauskas", 10, 0)])


def test_volume_counts_the_periods_conversations_by_channel_category_and_language(figures) -> None:
    assert figures["conversations"] == 5
    assert figures["volume"] == {
        "by_channel": {"email": 1, "sms": 1, "telegram": 3},
        "by_category": {"delivery": 2, "payment": 1, "product": 1, "returns": 1},
        "by_language": {"en": 2, "pl": 2, "ru": 1},
    }


def test_first_response_is_business_time_with_median_and_p90(figures) -> None:
    # A 1 h, B 1 h 30 min (16–17 on Monday, 9:00–9:30 on Tuesday), C 2 h 30 min.
    assert figures["first_response"] == {"count": 3, "median_s": 5400, "p90_s": 9000, "unanswered": 2,
                                         "business_time": True}


def test_promises_kept_late_and_past_due_unanswered_are_breached(figures) -> None:
    assert figures["promises"] == {"kept": 2, "breached": 2, "closed": 0, "pending": 1, "kept_pct": 50.0}


@pytest.mark.parametrize(("first", "resolved", "outcome"), [
    (at(25, 13), None, "kept"),  # answered before 14:00
    (at(25, 15), at(25, 16), "breached"),  # answered after 14:00
    (None, None, "breached"),  # 14:00 passed, still open and unanswered
    (None, at(25, 12), "closed"),  # resolved with no reply before 14:00: no promise broken
    (None, at(25, 15), "breached"),  # resolved with no reply, but only after 14:00 had passed
])
def test_a_promise_is_kept_breached_or_closed_as_the_notifier_records_it(first, resolved, outcome) -> None:
    row = conv("G", "sms", "payment", "en", "anna", at(25, 10), at(25, 14), first, resolved)
    assert promise_outcome(row, now=at(30, 12)) == outcome


def test_a_promise_not_yet_due_is_pending_and_counts_neither_way() -> None:
    row = conv("H", "sms", "payment", "en", "anna", at(25, 10), at(25, 14))
    assert promise_outcome(row, now=at(25, 13)) == "pending"
    # Resolved "later than now" cannot happen, but a clock skew between services must not make it closed.
    assert promise_outcome(conv("I", "sms", "payment", "en", "anna", at(25, 10), at(25, 14), None, at(25, 13, 30)),
                           now=at(25, 13)) == "pending"


def test_resolution_time_and_reopen_rate(figures) -> None:
    assert figures["resolution"] == {"count": 2, "median_s": 48600, "p90_s": 86400, "unresolved": 3}
    assert figures["reopen_rate_pct"] == 20.0


def test_csat_nps_and_survey_response_rate(figures) -> None:
    # CSAT: 2 of 3 answers are 4 or 5. NPS: 2 promoters, 1 detractor (3), 1 passive (7) of 4.
    assert figures["surveys"] == {"csat_pct": 66.7, "nps": 25.0, "response_rate_pct": 87.5, "sent": 8,
                                  "answered": 7, "available": True}


def test_without_a_survey_table_the_survey_figures_are_null() -> None:
    from services.router.kpis import survey_figures

    assert survey_figures(None) == {"csat_pct": None, "nps": None, "response_rate_pct": None, "sent": 0,
                                    "answered": 0, "available": False}


def test_arrivals_by_hour_of_week_against_staffing(figures) -> None:
    arrivals = figures["arrivals"]
    # Sunday 10:00 and Wednesday 03:00: nobody on shift.
    assert arrivals["total"] == 6 and arrivals["when_nobody_on_shift"] == 2
    heat = arrivals["by_hour_of_week"]
    assert heat["mon"][9] == heat["mon"][16] == heat["wed"][10] == heat["wed"][3] == 1
    assert heat["sat"][11] == heat["sun"][10] == 1
    assert sum(sum(row) for row in heat.values()) == 6
    staffed = arrivals["staffed_by_hour_of_week"]
    assert staffed["mon"][9] == 2 and staffed["mon"][16] == 2 and staffed["fri"][10] == 1
    assert staffed["sat"][11] == 1 and staffed["sun"][10] == 0 and staffed["mon"][8] == 0 and staffed["mon"][17] == 0


def test_daily_trend_and_load_per_agent(figures) -> None:
    assert figures["trend"] == [
        {"date": "2026-11-23", "conversations": 2, "kept": 2, "breached": 0},
        {"date": "2026-11-25", "conversations": 1, "kept": 0, "breached": 1},
        {"date": "2026-11-28", "conversations": 1, "kept": 0, "breached": 1},
        {"date": "2026-11-29", "conversations": 1, "kept": 0, "breached": 0},
    ]
    assert figures["load"] == [
        {"agent_id": "anna", "name": "Anna Kowalska", "open_now": 3, "capacity": 8, "utilisation_pct": 37.5,
         "owned_in_period": 3},
        {"agent_id": "jonas", "name": "Jonas Petrauskas", "open_now": 0, "capacity": 10, "utilisation_pct": 0.0,
         "owned_in_period": 1},
    ]


def test_percentiles_by_nearest_rank() -> None:
    assert nearest_rank(list(range(1, 11)), 90) == 9 and nearest_rank([7], 90) == 7 and nearest_rank([], 90) is None
    assert median([4, 1, 3, 2]) == 2.5 and median([]) is None


def test_a_conversation_nobody_can_answer_makes_no_promise() -> None:
    # A voicemail from a withheld number, left unresolved past its target: not a broken promise.
    row = ConversationRow(id="W", channel="phone", category="other", language="pl", team_id="support",
                          owner_id="anna", opening=1, opened_at=at(25, 10), promise_due=at(25, 14),
                          first_response_at=None, resolved_at=None, answerable=False)
    assert promise_outcome(row, now=at(30, 12)) == "closed"

"""Promise tracking's pure decisions: when the 75 % reminder falls, when an off-shift agent may be
told, who is told what, and in which language."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier.promises import (
    deliverable_at,
    notice_key,
    notice_language,
    plan,
    render_notice,
    warn_time,
)
from shared.calendar import Calendar

WARSAW = ZoneInfo("Europe/Warsaw")
OFFICE = Calendar("Europe/Warsaw", {**{d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")},
                                    "sat": "10:00-14:00"}, country="PL")
NIGHTS = Calendar("Europe/Warsaw", {d: "22:00-06:00" for d in ("mon", "tue", "wed", "thu", "fri")})
WEEKDAYS_NINE_TO_FIVE = Calendar("Europe/Warsaw", {d: "09:00-17:00" for d in ("mon", "tue", "wed", "thu", "fri")},
                                 country="PL")


def w(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=WARSAW)


@pytest.mark.parametrize(("received", "target", "expected"), [
    # Monday 10:00 + 4 business hours = 14:00: 75 % is 3 hours in.
    (w(23, 10), timedelta(hours=4), w(23, 13)),
    # Saturday 23:00 (closed): the clock starts Monday 09:00, due 13:00, reminder 12:00 — never on Sunday.
    (w(21, 23), timedelta(hours=4), w(23, 12)),
    # Friday 16:00 + 8 h: 1 h Friday, 4 h Saturday, 3 h Monday (due 12:00); 6 h in is Monday 10:00.
    (w(20, 16), timedelta(hours=8), w(23, 10)),
    # Across holidays: 24-26 Dec are PL public holidays (Christmas Eve since 2025): Monday 28th, 12:00.
    (w(24, 15, month=12), timedelta(hours=4), w(28, 12, month=12)),
    # Nothing promised: the reminder is the due time itself.
    (w(23, 10), timedelta(0), w(23, 10)),
])
def test_warning_at_75_percent_of_business_time(received, target, expected) -> None:
    due = OFFICE.add_business_time(received, target)
    assert warn_time(received, due, OFFICE) == expected
    assert warn_time(received, due, OFFICE) <= due


@pytest.mark.parametrize(("shift", "at", "expected"), [
    # On shift: at once.
    (WEEKDAYS_NINE_TO_FIVE, w(23, 10), w(23, 10)),
    # Saturday 23:00: Monday's shift start.
    (WEEKDAYS_NINE_TO_FIVE, w(21, 23), w(23, 9)),
    # Friday after the shift: Monday.
    (WEEKDAYS_NINE_TO_FIVE, w(20, 17, 1), w(23, 9)),
    # Exactly at the shift's end: it has ended.
    (WEEKDAYS_NINE_TO_FIVE, w(23, 17), w(24, 9)),
    # Christmas: 24-26 Dec are holidays in the shift's team calendar, then the weekend.
    (WEEKDAYS_NINE_TO_FIVE, w(24, 18, month=12), w(28, 9, month=12)),
    # Overnight shift Mon-Fri 22:00-06:00: Saturday 03:00 is still Friday's night.
    (NIGHTS, w(21, 3), w(21, 3)),
    # Saturday 07:00: Friday's night is over; the next starts Monday 22:00.
    (NIGHTS, w(21, 7), w(23, 22)),
    # Tuesday noon: the same evening.
    (NIGHTS, w(24, 12), w(24, 22)),
])
def test_an_off_shift_agent_is_told_when_their_shift_starts(shift, at, expected) -> None:
    assert deliverable_at(shift, at) == expected


def test_a_shift_that_never_starts_says_so() -> None:
    assert deliverable_at(Calendar("Europe/Warsaw", {}), w(23, 10)) is None


@pytest.mark.parametrize(("event", "owner", "lead", "expected"), [
    ("opened", "taras", "anna", [("assigned", "taras")]),
    ("opened", None, "anna", [("queued", "anna")]),
    ("opened", None, None, []),
    ("message", "taras", "anna", [("customer_message", "taras")]),
    ("message", None, "anna", []),
    ("warning", "taras", "anna", [("promise_warning", "taras")]),
    ("warning", None, "anna", [("promise_warning", "anna")]),
    ("breach", "taras", "anna", [("promise_breached", "taras"), ("promise_breached", "anna")]),
    # The lead owns it: one breach notice, not two.
    ("breach", "anna", "anna", [("promise_breached", "anna")]),
    ("breach", None, "anna", [("promise_breached", "anna")]),
    ("breach", "taras", None, [("promise_breached", "taras")]),
])
def test_who_gets_what(event, owner, lead, expected) -> None:
    assert plan(event, owner, lead) == expected


def test_an_unknown_event_is_a_bug_said_loudly() -> None:
    with pytest.raises(ValueError, match="unknown promise event"):
        plan("reopened", "a", "b")


@pytest.mark.parametrize(("kind", "agent", "message", "key"), [
    ("assigned", "anna", None, "notice:assigned:c1:2:anna"),
    ("queued", "anna", None, "notice:queued:c1:2:anna"),
    ("promise_warning", "anna", None, "notice:warn:c1:2"),
    ("promise_breached", "taras", None, "notice:breach:c1:2:taras"),
    ("customer_message", "taras", "m9", "notice:message:m9:taras"),
])
def test_idempotency_keys(kind, agent, message, key) -> None:
    assert notice_key(kind, "c1", 2, agent, message) == key


def test_notices_speak_the_agents_first_language_and_zone(example_config) -> None:
    taras = example_config.agents["taras"]  # uk first
    assert notice_language(taras) == "uk"
    anna = example_config.agents["anna"]  # pl first
    fields = {"reference": "SB-ABCDEFGHIJ", "customer_name": "Piotr", "channel": "telegram",
              "promise_due": w(23, 13).astimezone(ZoneInfo("UTC")).isoformat()}
    text = render_notice("promise_warning", fields, anna, w(23, 12), example_config)
    assert "SB-ABCDEFGHIJ" in text and "13:00" in text and "Piotr" in text
    english = render_notice("promise_warning", fields, example_config.agents["jonas"], w(23, 12), example_config)
    assert english != text and "SB-ABCDEFGHIJ" in english  # jonas reads Lithuanian, anna Polish

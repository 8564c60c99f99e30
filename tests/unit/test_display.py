"""What agents see of a customer without a name, and the dashboard trend's bars: pure functions."""

from __future__ import annotations

import pytest

from services.router.display import customer_label
from services.router.inbox import trend_bars


@pytest.mark.parametrize(("identities", "masked", "shown"), [
    ([("phone", "+48601234567")], False, "+48601234567"),
    ([("phone", "+48601234567")], True, "+48*******67"),
    ([("wa_id", "48601234567")], False, "+48601234567"),  # a WhatsApp id is the number without its +
    ([("email", "olga.smirnova@mail.example.ru")], True, "o***@mail.example.ru"),
    ([("email-unverified", "olga@mail.example.ru")], False, "olga@mail.example.ru (unverified)"),
    ([("telegram", "5012345678")], False, "Telegram user 5012345678"),
    ([("telegram", "5012345678")], True, "Telegram user …5678"),
    ([("telegram", "5012345678"), ("phone", "+48601234567")], False, "+48601234567"),  # the number first
    ([("call_sid", "CA123")], False, "withheld number"),
    ([], False, "Unknown customer"),
])
def test_a_nameless_customer_is_shown_by_what_identifies_them(identities, masked, shown) -> None:
    assert customer_label(None, identities, masked=masked) == shown


def test_a_name_wins_over_any_identity() -> None:
    assert customer_label("Olena", [("phone", "+380671234567")], masked=True) == "Olena"


def test_conversations_not_yet_due_are_drawn_open_never_breached() -> None:
    # Four conversations due tomorrow (neither kept nor breached) and a day with one of each.
    [today, mixed] = trend_bars([{"date": "2026-11-25", "conversations": 4, "kept": 0, "breached": 0},
                                 {"date": "2026-11-26", "conversations": 3, "kept": 1, "breached": 1}])
    assert [(s["kind"], s["h"]) for s in today["segments"]] == [("open", 100.0)] and today["open"] == 4
    assert [(s["kind"], s["h"]) for s in mixed["segments"]] == [("kept", 25.0), ("breached", 25.0), ("open", 25.0)]
    assert [s["y"] for s in mixed["segments"]] == [85.0, 60.0, 35.0]  # stacked from the baseline up

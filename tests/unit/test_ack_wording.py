"""The acknowledgement says what is true when it is sent, not when the customer wrote.

The example config's business calendar: Europe/Warsaw, Mon–Fri 09:00–17:00, Sat 10:00–14:00.
A customer writes on Saturday 21 November 2026 at 16:00 (closed); the promise (delivery, 4 h of
business time) is due on Monday 23 November at 13:00. The acknowledgement may leave at once, or
only after an outage, a late retry or a spooled backlog — each wording below is the one a
customer reading it at that moment can trust.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.notifier.ack import compose_ack
from shared.contracts import ConversationOpened

WARSAW = ZoneInfo("Europe/Warsaw")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=WARSAW)


def opened(channel: str = "telegram") -> ConversationOpened:
    return ConversationOpened(
        conversation_id="c1", opening=1, reference="SB-7K2Q", customer_id="u1", customer_name="Mark",
        channel=channel, reply_to="42", language="en", category="delivery", owner_id=None, owner_name=None,
        assignment_reason="r", received_at=at(21, 16), promise_due=at(23, 13), inbound_message_id="m1",
        acknowledge=True)


def test_sent_at_once_on_saturday_evening_it_says_closed_back_on_monday(example_config) -> None:
    text = compose_ack(opened(), at(21, 16), config=example_config)
    assert "We are closed at the moment and will be back on Monday, 23 November, at 09:00." in text
    assert "will reply to you personally by 13:00 on Monday, 23 November." in text


def test_sent_on_sunday_after_an_outage_today_and_tomorrow_are_sundays_words(example_config) -> None:
    # The bug: composed for the customer's moment, a Sunday send said "back today at 09:00".
    text = compose_ack(opened(), at(22, 11), config=example_config)
    assert "We are closed at the moment and will be back tomorrow at 09:00." in text
    assert "will reply to you personally by 13:00 tomorrow." in text
    assert "today" not in text


def test_sent_on_monday_morning_from_a_backlog_it_does_not_say_closed(example_config) -> None:
    text = compose_ack(opened(), at(23, 10), config=example_config)
    assert "closed" not in text
    assert "will reply to you personally by 13:00 today." in text
    assert "Our working hours: Mon–Fri 09:00–17:00, Sat 10:00–14:00 (time zone: Europe/Warsaw)." in text


@pytest.mark.parametrize("sent", [at(23, 13, 30), at(23, 12, 57)], ids=["past", "within-the-margin"])
def test_a_promise_past_when_sent_becomes_as_soon_as_possible(example_config, sent: datetime) -> None:
    text = compose_ack(opened(), sent, config=example_config)
    assert "will reply to you personally as soon as possible." in text
    assert "13:00" not in text and "closed" not in text


def test_the_sms_version_is_as_honest(example_config) -> None:
    late = compose_ack(opened("sms"), at(23, 18), config=example_config)
    assert "We are closed now and back tomorrow at 09:00." in late
    assert "A member of our team will reply as soon as possible." in late


@pytest.mark.parametrize(("language", "phrase"), [
    ("ru", "как можно скорее"), ("uk", "якнайшвидше"), ("bg", "възможно най-скоро"), ("pl", "jak najszybciej"),
    ("lt", "kuo greičiau"), ("de", "so bald wie möglich"),
])
def test_every_language_has_the_as_soon_as_possible_wording(example_config, language: str, phrase: str) -> None:
    text = compose_ack(dataclasses.replace(opened(), language=language), at(23, 14), config=example_config)
    assert phrase in text and "13:00" not in text


# --- composed at the claim, composed again at the send -----------------------------------------


def test_a_send_that_crosses_the_closing_time_is_worded_for_after_it(example_config) -> None:
    """Drafted at 16:59:40 on Friday (open), sent at 17:00:05 (closed): the text that leaves says
    so, not the draft's "open" wording that an earlier composition of the same event gave."""
    ev = dataclasses.replace(opened(), received_at=at(20, 16, 59), promise_due=at(23, 11))
    draft = compose_ack(ev, at(20, 16, 59).replace(second=40), config=example_config)
    sent = compose_ack(ev, at(20, 17).replace(second=5), config=example_config)
    assert "closed" not in draft
    assert "We are closed at the moment and will be back tomorrow at 10:00." in sent


def test_a_send_that_crosses_midnight_says_today_for_the_new_day(example_config) -> None:
    ev = dataclasses.replace(opened(), received_at=at(22, 23, 59), promise_due=at(23, 13))
    draft = compose_ack(ev, at(22, 23, 59).replace(second=59), config=example_config)
    sent = compose_ack(ev, at(23, 0, 0).replace(second=1), config=example_config)
    assert "will be back tomorrow at 09:00." in draft
    assert "will be back today at 09:00." in sent and "tomorrow" not in sent


def test_a_composed_text_is_what_rendering_afresh_gives_at_every_moment(example_config, monkeypatch) -> None:
    """The text reused from the claim's composition is, at every moment of a week (openings,
    closings, midnights, the promise's margin), the text a fresh rendering gives then."""
    from services.notifier import ack

    events = [opened(), opened("sms"), dataclasses.replace(opened(), owner_id="anna", language="pl")]
    start = at(20, 8)
    moments = [start + timedelta(minutes=13 * i, seconds=7 * i % 60) for i in range(800)]  # ~7 days
    for ev in events:
        cached = [compose_ack(ev, moment, config=example_config) for moment in moments]
        again = [compose_ack(ev, moment, config=example_config) for moment in moments]
        fresh = []
        for moment in moments:
            monkeypatch.setattr(ack, "_COMPOSED", {})
            fresh.append(compose_ack(ev, moment, config=example_config))
        assert cached == fresh and again == fresh
        monkeypatch.undo()


def test_open_means_the_next_opening_is_now(example_config) -> None:
    # compose_ack asks the calendar once: next_opening(now) == now exactly when is_open(now).
    for calendar in example_config.calendars.values():
        for i in range(2000):
            moment = at(1, 0) + timedelta(minutes=30 * i + (i % 3) * 29, seconds=(i % 2) * 59)
            assert calendar.is_open(moment) == (calendar.next_opening(moment) == moment), (calendar, moment)

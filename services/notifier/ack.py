"""Composing the acknowledgement: the router's decision + the business config → the customer's text.

Every sentence must be true when the customer reads it, so the text is composed for the moment it
is sent (`at`), not for the moment the customer wrote: an acknowledgement that goes out after a
broker outage, a late retry or a spooled backlog says whether we are open *now*, when we open
*next*, and states the promise relative to today. The promise itself (`promise_due`) is the
router's, counted from arrival; it is only shown as a time while it is still ahead by more than
PROMISE_MARGIN. Once it is (nearly) past, the acknowledgement says the team will reply "as soon
as possible" instead — a true sentence — and never a time that has already gone by. It does not
invent a new deadline: the tracked promise stays the router's, and its breach is the agents'
business (they are notified), not a new promise to the customer.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from services.notifier.texts import AckContext, render_ack
from shared.calendar import Calendar
from shared.config import Config
from shared.contracts import ConversationOpened

#: A promise closer than this when the acknowledgement leaves is not shown as a time: the customer
#: reads it a moment later, and "by 10:00" read at 10:01 is a broken promise on arrival.
PROMISE_MARGIN = timedelta(minutes=5)


#: Acknowledgements composed lately, by what their words depend on (see `compose_ack`): the text
#: drafted at the claim is the text to send a moment later, without a second rendering.
_COMPOSED: dict[tuple, tuple[Config, str]] = {}
_COMPOSED_LIMIT = 512
_composed_lock = threading.Lock()


def compose_ack(ev: ConversationOpened, at: datetime, *, config: Config) -> str:
    """The acknowledgement of `ev` as true at `at` (the send moment, an aware datetime).

    Each acknowledgement is composed twice, at the claim and again just before the send. Its
    words depend on `at` only through four facts: the local date in the calendar's zone ("today",
    "tomorrow"), whether it is open, when it opens next (said only while closed) and whether the
    promise is (nearly) past; every other input is the event's or the config's. When those facts
    are the ones of a text composed lately for the same event and config, that text is the one
    rendering them would give, and it is returned; otherwise the text is rendered."""
    calendar = _calendar_of(ev, config)
    now = at.astimezone(calendar.tz)
    next_opening = calendar.next_opening(now)
    # next_opening is `now` itself exactly when open then (Calendar.next_opening): one search of
    # the calendar instead of two.
    is_open = next_opening == now
    promise_past = ev.promise_due <= now + PROMISE_MARGIN
    key = (id(config), ev, now.date(), is_open, None if is_open else next_opening, promise_past)
    with _composed_lock:
        known = _COMPOSED.get(key)
    if known is not None and known[0] is config:
        return known[1]
    tz = calendar.tz
    category = config.categories.get(ev.category)
    ctx = AckContext(
        language=ev.language,
        customer_name=ev.customer_name,
        category=ev.category,
        promise_due=ev.promise_due.astimezone(tz),
        promise_past=promise_past,
        now=now,
        is_open=is_open,
        next_opening=next_opening,
        weekly_hours={day: list(spans) for day, spans in calendar.weekly_hours.items()},
        timezone_label=calendar.timezone,
        self_help=[(link.title, link.url) for link in (category.self_help if category else ())],
        urgent_contact=config.business.urgent_contact,
        business_name=config.business.name,
        channel=ev.channel,
        reference=ev.reference,
    )
    text = render_ack(ctx, overrides=config.templates or None)
    with _composed_lock:
        if len(_COMPOSED) >= _COMPOSED_LIMIT:
            del _COMPOSED[next(iter(_COMPOSED))]  # the oldest: its send is long done
        # The config is kept with the text: an id is only its config's while that config lives.
        _COMPOSED[key] = (config, text)
    return text


def _calendar_of(ev: ConversationOpened, config: Config) -> Calendar:
    """The owner's team's calendar, else the business's."""
    if ev.owner_id and ev.owner_id in config.agents:
        team = config.teams.get(config.agents[ev.owner_id].team)
        team_calendar = config.calendars.get(team.calendar) if team else None
        if team_calendar:
            return team_calendar
    return config.business_calendar

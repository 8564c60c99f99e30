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

from datetime import datetime, timedelta

from services.notifier.texts import AckContext, render_ack
from shared.config import Config
from shared.contracts import ConversationOpened

#: A promise closer than this when the acknowledgement leaves is not shown as a time: the customer
#: reads it a moment later, and "by 10:00" read at 10:01 is a broken promise on arrival.
PROMISE_MARGIN = timedelta(minutes=5)


def compose_ack(ev: ConversationOpened, at: datetime, *, config: Config) -> str:
    """The acknowledgement of `ev` as true at `at` (the send moment, an aware datetime)."""
    team_calendar = None
    if ev.owner_id and ev.owner_id in config.agents:
        team = config.teams.get(config.agents[ev.owner_id].team)
        team_calendar = config.calendars.get(team.calendar) if team else None
    calendar = team_calendar or config.business_calendar
    tz = calendar.tz
    now = at.astimezone(tz)
    category = config.categories.get(ev.category)
    ctx = AckContext(
        language=ev.language,
        customer_name=ev.customer_name,
        category=ev.category,
        promise_due=ev.promise_due.astimezone(tz),
        promise_past=ev.promise_due <= now + PROMISE_MARGIN,
        now=now,
        is_open=calendar.is_open(now),
        next_opening=calendar.next_opening(now),
        weekly_hours={day: list(spans) for day, spans in calendar.weekly_hours.items()},
        timezone_label=calendar.timezone,
        self_help=[(link.title, link.url) for link in (category.self_help if category else ())],
        urgent_contact=config.business.urgent_contact,
        business_name=config.business.name,
        channel=ev.channel,
        reference=ev.reference,
    )
    return render_ack(ctx, overrides=config.templates or None)

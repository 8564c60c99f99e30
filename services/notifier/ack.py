"""Composing the acknowledgement: the router's decision + the business config → the customer's text.

Everything is computed at the moment the customer wrote (the event's received_at), not when the
notifier happens to run, so a retried or delayed acknowledgement says exactly the same thing.
"""

from __future__ import annotations

from services.notifier.texts import AckContext, render_ack
from shared.config import Config
from shared.contracts import ConversationOpened


def compose_ack(ev: ConversationOpened, *, config: Config) -> str:
    team_calendar = None
    if ev.owner_id and ev.owner_id in config.agents:
        team = config.teams.get(config.agents[ev.owner_id].team)
        team_calendar = config.calendars.get(team.calendar) if team else None
    calendar = team_calendar or config.business_calendar
    tz = calendar.tz
    at = ev.received_at.astimezone(tz)
    category = config.categories.get(ev.category)
    ctx = AckContext(
        language=ev.language,
        customer_name=ev.customer_name,
        category=ev.category,
        promise_due=ev.promise_due.astimezone(tz),
        now=at,
        is_open=calendar.is_open(at),
        next_opening=calendar.next_opening(at),
        weekly_hours={day: list(spans) for day, spans in calendar.weekly_hours.items()},
        timezone_label=calendar.timezone,
        self_help=[(link.title, link.url) for link in (category.self_help if category else ())],
        urgent_contact=config.business.urgent_contact,
        business_name=config.business.name,
        channel=ev.channel,
        reference=ev.reference,
    )
    return render_ack(ctx, overrides=config.templates or None)

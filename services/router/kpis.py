"""KPIs over a period (SPEC §6): pure, rows in → figures out.

The queries that produce the rows are in services/router/kpi_store.py; the API, the CLI report and
the dashboard all call `compute`, so the three can never disagree. Every duration is in seconds.

Definitions (what a lead reads on the dashboard):

* volume: conversations opened in [start, end), by channel, category and language;
* first response: business time (shared/calendar.py) from opening to the first agent reply, over
  the conversations that have one; median and p90 by nearest rank (the p90 is a real value seen);
* promises (`promise_outcome`, the same rule as the notifier's `promises` table): kept when the
  first reply came at or before the promised time; breached when it came later, or has not come
  and the promised time passed while the conversation was open; closed when it was resolved with
  no reply before its promised time (spam, "never mind": no promise was broken) or has nobody to
  answer (a voicemail from a withheld number: no promise was made); the rest are still
  pending. Closed and pending count neither way: kept % = kept / (kept + breached);
* resolution: wall-clock time from opening to resolution, as the customer lives it;
* reopen rate: share of the period's conversations opened more than once;
* surveys: CSAT % = answers of 4 or 5 among CSAT answers; NPS = % promoters (9–10) − % detractors
  (0–6); response rate = answered / sent. None when there is no survey data at all;
* arrivals by hour of week: customer messages per (weekday, hour) in the business's zone, beside
  the average number of agents on shift in that hour of the week over the period, and how many
  messages arrived when nobody was on shift;
* load per agent: open conversations now against capacity, and conversations owned in the period.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.calendar import Calendar

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class ConversationRow:
    id: str
    channel: str
    category: str
    language: str
    team_id: str | None
    owner_id: str | None
    opening: int
    opened_at: datetime
    promise_due: datetime
    first_response_at: datetime | None
    resolved_at: datetime | None
    # False when the customer left no way to answer (a voicemail from a withheld number).
    answerable: bool = True


@dataclass(frozen=True)
class SurveyRow:
    kind: str  # csat | nps
    score: int | None  # None: sent, not answered


@dataclass(frozen=True)
class AgentLoad:
    agent_id: str
    name: str
    capacity: int
    open_now: int


def nearest_rank(values: Sequence[float], pct: float) -> float | None:
    """The pct-th percentile by nearest rank: the smallest value with at least pct % at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    ordered, mid = sorted(values), len(values) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _pct(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _durations(values: list[float]) -> dict:
    return {"count": len(values), "median_s": median(values), "p90_s": nearest_rank(values, 90)}


def survey_figures(surveys: Iterable[SurveyRow] | None) -> dict:
    rows = list(surveys) if surveys is not None else None
    if not rows:
        return {"csat_pct": None, "nps": None, "response_rate_pct": None, "sent": 0, "answered": 0,
                "available": rows is not None}
    answered = [r for r in rows if r.score is not None]
    csat = [r.score for r in answered if r.kind == "csat"]
    nps = [r.score for r in answered if r.kind == "nps"]
    promoters, detractors = sum(1 for s in nps if s >= 9), sum(1 for s in nps if s <= 6)
    return {
        "csat_pct": _pct(sum(1 for s in csat if s >= 4), len(csat)),
        "nps": round(100 * (promoters - detractors) / len(nps), 1) if nps else None,
        "response_rate_pct": _pct(len(answered), len(rows)),
        "sent": len(rows), "answered": len(answered), "available": True,
    }


def staffing(shifts: Mapping[str, Calendar], start: datetime, end: datetime, tz: ZoneInfo) -> list[list[float]]:
    """Average agents on shift per (weekday, hour) of the business's week over [start, end).

    Each hour of the period is sampled at its middle, so a shift from 09:00 counts from the 09 slot.
    """
    totals = [[0] * 24 for _ in WEEKDAYS]
    seen = [[0] * 24 for _ in WEEKDAYS]
    hour = start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        mid = hour + timedelta(minutes=30)
        local = mid.astimezone(tz)
        day, h = local.weekday(), local.hour
        seen[day][h] += 1
        totals[day][h] += sum(1 for shift in shifts.values() if shift.is_open(mid))
        hour += timedelta(hours=1)
    return [[round(totals[d][h] / seen[d][h], 2) if seen[d][h] else 0.0 for h in range(24)] for d in range(7)]


def promise_outcome(c: ConversationRow, now: datetime) -> str:
    """kept | breached | closed | pending: what became of a conversation's promise as of `now`.

    The notifier's promise rows (services/notifier/promises.py) follow the same rule: a breach is
    the promised time passing while the conversation is open and unanswered; resolving it first
    closes the promise without keeping or breaking it."""
    if not c.answerable:
        return "closed"  # nobody was told a time, and nobody can be answered: no promise at all
    if c.first_response_at is not None:
        return "kept" if c.first_response_at <= c.promise_due else "breached"
    ended = c.resolved_at if c.resolved_at is not None and c.resolved_at < now else now
    if c.promise_due < ended:
        return "breached"
    return "closed" if c.resolved_at is not None and c.resolved_at <= now else "pending"


def compute(conversations: Iterable[ConversationRow], arrivals: Iterable[datetime],
            surveys: Iterable[SurveyRow] | None, *, start: datetime, end: datetime, now: datetime,
            calendar: Calendar, shifts: Mapping[str, Calendar], loads: Iterable[AgentLoad],
            owned_in_period: Mapping[str, int] | None = None) -> dict:
    """The period's figures, as one JSON-ready dict (datetimes as ISO strings)."""
    convs = [c for c in conversations if start <= c.opened_at < end]
    tz = ZoneInfo(calendar.timezone)
    first = [calendar.business_time_between(c.opened_at, c.first_response_at).total_seconds()
             for c in convs if c.first_response_at is not None]
    outcomes = Counter(promise_outcome(c, now) for c in convs)
    kept, breached = outcomes["kept"], outcomes["breached"]
    resolution = [(c.resolved_at - c.opened_at).total_seconds() for c in convs if c.resolved_at is not None]

    heat = [[0] * 24 for _ in WEEKDAYS]
    unstaffed = 0
    total_arrivals = 0
    for at in arrivals:
        if not start <= at < end:
            continue
        total_arrivals += 1
        local = at.astimezone(tz)
        heat[local.weekday()][local.hour] += 1
        if not any(shift.is_open(at) for shift in shifts.values()):
            unstaffed += 1

    days: dict[date, Counter] = {}
    for c in convs:
        day = days.setdefault(c.opened_at.astimezone(tz).date(), Counter())
        day["conversations"] += 1
        day[promise_outcome(c, now)] += 1
    owned = owned_in_period if owned_in_period is not None else Counter(c.owner_id for c in convs if c.owner_id)
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat(), "timezone": calendar.timezone},
        "conversations": len(convs),
        "volume": {
            "by_channel": dict(sorted(Counter(c.channel for c in convs).items())),
            "by_category": dict(sorted(Counter(c.category for c in convs).items())),
            "by_language": dict(sorted(Counter(c.language for c in convs).items())),
        },
        "first_response": {**_durations(first), "unanswered": len(convs) - len(first), "business_time": True},
        "promises": {"kept": kept, "breached": breached, "closed": outcomes["closed"],
                     "pending": outcomes["pending"], "kept_pct": _pct(kept, kept + breached)},
        "resolution": {**_durations(resolution), "unresolved": len(convs) - len(resolution)},
        "reopen_rate_pct": _pct(sum(1 for c in convs if c.opening > 1), len(convs)),
        "surveys": survey_figures(surveys),
        "arrivals": {"total": total_arrivals, "when_nobody_on_shift": unstaffed,
                     "by_hour_of_week": {WEEKDAYS[d]: heat[d] for d in range(7)},
                     "staffed_by_hour_of_week": {WEEKDAYS[d]: row
                                                 for d, row in enumerate(staffing(shifts, start, end, tz))}},
        "trend": [{"date": d.isoformat(), "conversations": n["conversations"], "kept": n["kept"],
                   "breached": n["breached"]} for d, n in sorted(days.items())],
        "load": [{"agent_id": a.agent_id, "name": a.name, "open_now": a.open_now, "capacity": a.capacity,
                  "utilisation_pct": _pct(a.open_now, a.capacity), "owned_in_period": owned.get(a.agent_id, 0)}
                 for a in loads],
    }

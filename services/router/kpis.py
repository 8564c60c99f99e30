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
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from shared.calendar import Calendar
from shared.vocabulary import WEEKDAYS


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


@dataclass(frozen=True)
class SurveyCounts:
    """What the survey figures are made of: counts, whether added up here or by the database."""

    sent: int
    answered: int
    csat_answers: int
    csat_good: int  # 4 or 5
    nps_answers: int
    promoters: int  # 9 or 10
    detractors: int  # 0 to 6


def survey_counts(rows: Iterable[SurveyRow]) -> SurveyCounts:
    rows = list(rows)
    answered = [r for r in rows if r.score is not None]
    csat = [r.score for r in answered if r.kind == "csat" and r.score is not None]
    nps = [r.score for r in answered if r.kind == "nps" and r.score is not None]
    return SurveyCounts(sent=len(rows), answered=len(answered), csat_answers=len(csat),
                        csat_good=sum(1 for x in csat if x >= 4), nps_answers=len(nps),
                        promoters=sum(1 for x in nps if x >= 9), detractors=sum(1 for x in nps if x <= 6))


def survey_figures(surveys: Iterable[SurveyRow] | SurveyCounts | None) -> dict:
    counts = surveys if isinstance(surveys, SurveyCounts) or surveys is None else survey_counts(surveys)
    if counts is None or not counts.sent:
        return {"csat_pct": None, "nps": None, "response_rate_pct": None, "sent": 0, "answered": 0,
                "available": counts is not None}
    return {
        "csat_pct": _pct(counts.csat_good, counts.csat_answers),
        "nps": round(100 * (counts.promoters - counts.detractors) / counts.nps_answers, 1)
        if counts.nps_answers else None,
        "response_rate_pct": _pct(counts.answered, counts.sent),
        "sent": counts.sent, "answered": counts.answered, "available": True,
    }


def staffing(shifts: Mapping[str, Calendar], start: datetime, end: datetime, tz: ZoneInfo) -> list[list[float]]:
    """Average agents on shift per (weekday, hour) of the business's week over [start, end).

    Each hour of the period is sampled at its middle, so a shift from 09:00 counts from the 09 slot.
    Each shift's open stretches are walked once beside the hours (a year is 8,784 hours: asking
    every shift about every hour took a third of a second).
    """
    first = start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    hours: list[datetime] = []
    hour = first
    while hour < end:
        hours.append(hour + timedelta(minutes=30))
        hour += timedelta(hours=1)
    totals = [[0] * 24 for _ in WEEKDAYS]
    seen = [[0] * 24 for _ in WEEKDAYS]
    slots = []
    for mid in hours:
        local = mid.astimezone(tz)
        slots.append((local.weekday(), local.hour))
        seen[local.weekday()][local.hour] += 1
    if hours:
        for shift in shifts.values():
            spans = iter(shift.open_intervals(hours[0], hours[-1] + timedelta(microseconds=1)))
            span = next(spans, None)
            for mid, (day, h) in zip(hours, slots, strict=True):
                while span is not None and span[1] <= mid:
                    span = next(spans, None)
                if span is not None and span[0] <= mid:
                    totals[day][h] += 1
    return [[round(totals[d][h] / seen[d][h], 2) if seen[d][h] else 0.0 for h in range(24)] for d in range(7)]


def staffed_spans(shifts: Mapping[str, Calendar], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    """When at least one of the shifts is open within [start, end): merged, in order."""
    spans = sorted(span for shift in shifts.values() for span in shift.open_intervals(start, end))
    merged: list[tuple[datetime, datetime]] = []
    for begin, stop in spans:
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((begin, stop))
    return merged


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


@dataclass(frozen=True)
class Durations:
    count: int
    median_s: float | None
    p90_s: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Durations:
        return cls(len(values), median(values), nearest_rank(values, 90))


@dataclass(frozen=True)
class DayCounts:
    conversations: int = 0
    kept: int = 0
    breached: int = 0
    closed: int = 0
    pending: int = 0


@dataclass(frozen=True)
class Aggregates:
    """A period's figures before they are dressed for the reader: what `compute` adds up from rows
    here, and services/router/kpi_store.py has the database add up (the two must agree)."""

    volume: Mapping[tuple[str, str, str], int]  # (channel, category, language) → conversations
    owned: Mapping[str, int]  # owner → conversations of the period
    days: Mapping[date, DayCounts]  # the local day of opening → counts and promise outcomes
    reopened: int
    first_response: Durations
    resolution: Durations
    surveys: SurveyCounts | None
    heat: Sequence[Sequence[int]]  # customer messages per (weekday, hour), local time
    unstaffed: int  # customer messages when nobody in the scope was on shift


def aggregate(conversations: Iterable[ConversationRow], arrivals: Iterable[datetime],
              surveys: Iterable[SurveyRow] | None, *, start: datetime, end: datetime, now: datetime,
              calendar: Calendar, shifts: Mapping[str, Calendar]) -> Aggregates:
    """The definitions, in Python, one row at a time."""
    convs = [c for c in conversations if start <= c.opened_at < end]
    tz = ZoneInfo(calendar.timezone)
    first = [calendar.business_time_between(c.opened_at, c.first_response_at).total_seconds()
             for c in convs if c.first_response_at is not None]
    resolution = [(c.resolved_at - c.opened_at).total_seconds() for c in convs if c.resolved_at is not None]
    heat = [[0] * 24 for _ in WEEKDAYS]
    unstaffed = 0
    for at in arrivals:
        if not start <= at < end:
            continue
        local = at.astimezone(tz)
        heat[local.weekday()][local.hour] += 1
        if not any(shift.is_open(at) for shift in shifts.values()):
            unstaffed += 1
    days: dict[date, Counter] = {}
    for c in convs:
        day = days.setdefault(c.opened_at.astimezone(tz).date(), Counter())
        day["conversations"] += 1
        day[promise_outcome(c, now)] += 1
    return Aggregates(
        volume=Counter((c.channel, c.category, c.language) for c in convs),
        owned=Counter(c.owner_id for c in convs if c.owner_id),
        days={d: DayCounts(n["conversations"], n["kept"], n["breached"], n["closed"], n["pending"])
              for d, n in days.items()},
        reopened=sum(1 for c in convs if c.opening > 1),
        first_response=Durations.of(first), resolution=Durations.of(resolution),
        surveys=survey_counts(surveys) if surveys is not None else None,
        heat=heat, unstaffed=unstaffed)


def compute(conversations: Iterable[ConversationRow], arrivals: Iterable[datetime],
            surveys: Iterable[SurveyRow] | None, *, start: datetime, end: datetime, now: datetime,
            calendar: Calendar, shifts: Mapping[str, Calendar], loads: Iterable[AgentLoad],
            owned_in_period: Mapping[str, int] | None = None) -> dict:
    """The period's figures, as one JSON-ready dict (datetimes as ISO strings)."""
    agg = aggregate(conversations, arrivals, surveys, start=start, end=end, now=now, calendar=calendar,
                    shifts=shifts)
    if owned_in_period is not None:
        agg = replace(agg, owned=owned_in_period)
    return assemble(agg, start=start, end=end, calendar=calendar, shifts=shifts, loads=loads)


def _volume(volume: Mapping[tuple[str, str, str], int], index: int) -> dict[str, int]:
    out: Counter = Counter()
    for key, n in volume.items():
        if n:
            out[key[index]] += n
    return dict(sorted(out.items()))


def assemble(agg: Aggregates, *, start: datetime, end: datetime, calendar: Calendar,
             shifts: Mapping[str, Calendar], loads: Iterable[AgentLoad]) -> dict:
    """The figures as the API, the dashboard and the report show them."""
    tz = ZoneInfo(calendar.timezone)
    total = sum(d.conversations for d in agg.days.values())
    kept = sum(d.kept for d in agg.days.values())
    breached = sum(d.breached for d in agg.days.values())
    heat = [list(row) for row in agg.heat]
    return {
        "period": {"from": start.isoformat(), "to": end.isoformat(), "timezone": calendar.timezone},
        "conversations": total,
        "volume": {"by_channel": _volume(agg.volume, 0), "by_category": _volume(agg.volume, 1),
                   "by_language": _volume(agg.volume, 2)},
        "first_response": {"count": agg.first_response.count, "median_s": agg.first_response.median_s,
                           "p90_s": agg.first_response.p90_s, "unanswered": total - agg.first_response.count,
                           "business_time": True},
        "promises": {"kept": kept, "breached": breached,
                     "closed": sum(d.closed for d in agg.days.values()),
                     "pending": sum(d.pending for d in agg.days.values()), "kept_pct": _pct(kept, kept + breached)},
        "resolution": {"count": agg.resolution.count, "median_s": agg.resolution.median_s,
                       "p90_s": agg.resolution.p90_s, "unresolved": total - agg.resolution.count},
        "reopen_rate_pct": _pct(agg.reopened, total),
        "surveys": survey_figures(agg.surveys),
        "arrivals": {"total": sum(map(sum, heat)), "when_nobody_on_shift": agg.unstaffed,
                     "by_hour_of_week": {WEEKDAYS[d]: heat[d] for d in range(7)},
                     "staffed_by_hour_of_week": {WEEKDAYS[d]: row
                                                 for d, row in enumerate(staffing(shifts, start, end, tz))}},
        "trend": [{"date": d.isoformat(), "conversations": n.conversations, "kept": n.kept,
                   "breached": n.breached} for d, n in sorted(agg.days.items()) if n.conversations],
        "load": [{"agent_id": a.agent_id, "name": a.name, "open_now": a.open_now, "capacity": a.capacity,
                  "utilisation_pct": _pct(a.open_now, a.capacity), "owned_in_period": agg.owned.get(a.agent_id, 0)}
                 for a in loads],
    }

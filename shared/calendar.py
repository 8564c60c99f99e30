"""Business calendars: when a business, a team or an agent is open, and business-time arithmetic.

A `Calendar` answers "open now?", "when do we open next?", "when do we close?", "when is 4 hours of
business time from now?" and "how much business time between these two instants?". It is pure: it
never reads the clock or any file, every operation takes the instant it is about, and an instance
never changes after it is built (apart from a private memo of public holidays per year).

The rules, in the order they apply to one local date D:

1. The intervals that *start* on D are the special opening hours for D if there are any, otherwise
   none if D is a public holiday, otherwise D's weekday hours.
2. An interval is a pair of wall-clock times. One whose end is not after its start (`22:00-02:00`,
   `00:00-00:00`, `09:00-24:00`, which is stored as `09:00-00:00`) ends on the next day, so an
   overnight span that starts the day before a holiday still runs into it.
3. Closures are windows of wall-clock time on their date (the whole date, or `from`/`until` part
   of it); they remove open time whatever interval it comes from, including the part of an
   overnight span that runs into the closed date. A closure also wins over a special opening.
4. Overlapping and touching intervals merge into one stretch of open time.

Time zones and DST: wall-clock bounds are resolved in the calendar's zone with ``fold=0`` (the
zoneinfo default): a bound in a spring-forward gap lands as many minutes after the change as it
was meant to be after the last valid time (02:30 on the night clocks jump 02:00 -> 03:00 is 03:30),
and a bound in an autumn overlap means its first occurrence (summer time). All durations are real
elapsed time, so a `00:00-24:00` day has 23 hours on the spring-forward night and 25 in autumn.
Instants may be given in any zone; the returned ones are in the calendar's zone.

Searches forward without an end stop after `SEARCH_DAYS` days in a row without open time, so a
calendar that never opens answers "never" instead of looping.

Its YAML form is read by `CalendarSchema` in shared/config.py, next to the config file's schemas.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_package

from shared.vocabulary import WEEKDAYS

SEARCH_DAYS = 366 * 2

Interval = tuple[time, time]
"""Wall-clock (start, end); an end not after the start is on the next day."""
Span = tuple[datetime, datetime]
"""A stretch of real time (start, end), end exclusive."""

_ONE_DAY = timedelta(days=1)
MIDNIGHT = time(0, 0)


# --- parsing helpers usable on their own ------------------------------------------------------

_INTERVAL = re.compile(r"^(\d{1,2}:\d{2})\s*[-–]\s*(\d{1,2}:\d{2})$")
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")


def _clock(text: str, *, allow_24: bool) -> time | None:
    """`HH:MM` as a time; `24:00` (when allowed) is midnight at the end of the day, i.e. 00:00."""
    m = _CLOCK.match(text)
    if not m:
        return None
    hour, minute = int(m[1]), int(m[2])
    if allow_24 and (hour, minute) == (24, 0):
        return MIDNIGHT
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


def parse_time(value: Any, *, allow_24: bool = False) -> time:
    """Parse one `HH:MM` time of day; raise ValueError with a message fit for a config error."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 24 * 60:
        # YAML 1.1 reads an unquoted 14:00 as the base-60 number 840: say so rather than "bad value".
        hours, minutes = divmod(value, 60)
        raise ValueError(f'{value} is not HH:MM: YAML read {hours}:{minutes:02d} as a number; '
                         f'put the time in quotes ("{hours:02d}:{minutes:02d}")')
    parsed = _clock(value.strip(), allow_24=allow_24) if isinstance(value, str) else None
    if parsed is None:
        raise ValueError(f'"{value}" is not HH:MM')
    return parsed


def _parse_interval(text: str) -> Interval:
    m = _INTERVAL.match(text)
    if not m:
        raise ValueError(f'"{text}" is not HH:MM-HH:MM')
    start, end = _clock(m[1], allow_24=False), _clock(m[2], allow_24=True)
    for raw, parsed in ((m[1], start), (m[2], end)):
        if parsed is None:
            raise ValueError(f'"{text}" is not HH:MM-HH:MM: {raw} is not a time of day')
    assert start is not None and end is not None
    return start, end


def parse_hours(value: Any) -> list[Interval]:
    """One day's hours: a list of "HH:MM-HH:MM" strings, or one string of comma-separated ones.

    `None`, an empty list or an empty string mean closed. An end not after the start is on the next
    day (`22:00-02:00`); `24:00` is accepted as an end and stored as 00:00. Raises ValueError with
    the offending value in double quotes: `"9-17" is not HH:MM-HH:MM`.
    """
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f'"{value}" is not HH:MM-HH:MM')
    intervals: list[Interval] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f'"{item}" is not HH:MM-HH:MM')
        for part in item.split(","):
            if part.strip():
                intervals.append(_parse_interval(part.strip()))
    return intervals


def parse_zone(name: Any) -> ZoneInfo:
    """An IANA zone by name; ValueError `"Mars/Olympus" is not a known timezone` otherwise."""
    # "localtime" names whatever zone the machine is set to: a config must not depend on that.
    if not isinstance(name, str) or name in ("localtime", "posixrules"):
        raise ValueError(f'"{name}" is not a known timezone')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f'"{name}" is not a known timezone') from exc


def holiday_country(country: Any) -> str:
    supported = holidays_package.list_supported_countries()
    code = country.strip().upper() if isinstance(country, str) else None
    if code not in supported:
        raise ValueError(f'"{country}" is not a country code the holidays package knows')
    return code


def holiday_subdivision(country: str, subdivision: Any) -> str:
    known = holidays_package.list_supported_countries()[country]
    # The package is case-sensitive ("BY", but "Augsburg"); people are not.
    by_upper = {s.upper(): s for s in known}
    match = by_upper.get(subdivision.strip().upper()) if isinstance(subdivision, str) else None
    if match is None:
        listing = ", ".join(known) if known else "none"
        raise ValueError(f'"{subdivision}" is not a subdivision of {country} (known: {listing})')
    return match


def _interval_list(value: Any, what: str) -> tuple[Interval, ...]:
    """Intervals given as (time, time) pairs or in the text form `parse_hours` reads."""
    if value is None or isinstance(value, str):
        return tuple(parse_hours(value))
    out: list[Interval] = []
    for item in value:
        if isinstance(item, str):
            out += parse_hours(item)
        elif (isinstance(item, tuple | list) and len(item) == 2
              and all(isinstance(t, time) and t.tzinfo is None for t in item)):
            out.append((item[0], item[1]))
        else:
            raise TypeError(f"{what}: {item!r} is not a (time, time) pair or an HH:MM-HH:MM string")
    return tuple(out)


# --- the calendar ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Closure:
    """Closed on `day` from `start` (default: midnight) until `end` (default: the end of the day).

    An `end` of 00:00 means the end of the day too, the way `24:00` is read.
    """

    day: date
    start: time | None = None
    end: time | None = None

    def __post_init__(self) -> None:
        if isinstance(self.day, datetime) or not isinstance(self.day, date):
            raise TypeError(f"a closure's day must be a date, got {self.day!r}")
        if self.end == MIDNIGHT:
            object.__setattr__(self, "end", None)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"a closure on {self.day} must end after it starts "
                             f"({self.start:%H:%M} to {self.end:%H:%M})")


class Calendar:
    """Opening hours in one time zone, with holidays, closures and special opening days.

    `hours` maps weekday keys ("mon".."sun"; a missing key is a closed day) to intervals, as
    (time, time) pairs or "HH:MM-HH:MM" strings. `country`/`subdivision` switch on public holidays
    from the `holidays` package. `closures` are `Closure`s (a bare date closes the whole day);
    `openings` maps a date to the intervals that replace its usual hours.
    """

    def __init__(
        self,
        timezone: str,
        hours: Mapping[str, Any] | None = None,
        *,
        country: str | None = None,
        subdivision: str | None = None,
        closures: Iterable[Closure | date] = (),
        openings: Mapping[date, Any] | None = None,
    ) -> None:
        self._timezone = timezone
        self._tz = parse_zone(timezone)
        hours = dict(hours or {})
        unknown = sorted(set(hours) - set(WEEKDAYS))
        if unknown:
            raise ValueError(f"{', '.join(map(repr, unknown))}: weekday keys are {', '.join(WEEKDAYS)}")
        self._weekly: tuple[tuple[Interval, ...], ...] = tuple(
            _interval_list(hours.get(day), day) for day in WEEKDAYS
        )
        if subdivision is not None and country is None:
            raise ValueError("a holiday subdivision needs a country")
        self._country = holiday_country(country) if country is not None else None
        self._subdivision = (holiday_subdivision(self._country, subdivision)
                             if self._country is not None and subdivision is not None else None)
        self._closures = tuple(c if isinstance(c, Closure) else Closure(c) for c in closures)
        self._closures_by_day: dict[date, tuple[Closure, ...]] = {}
        for c in self._closures:
            self._closures_by_day[c.day] = self._closures_by_day.get(c.day, ()) + (c,)
        self._openings: dict[date, tuple[Interval, ...]] = {}
        for day, value in (openings or {}).items():
            if isinstance(day, datetime) or not isinstance(day, date):
                raise TypeError(f"a special opening's key must be a date, got {day!r}")
            self._openings[day] = _interval_list(value, str(day))
        # Memo of holiday dates per year: the package builds a year at a time, and sharing one of
        # its (lazily growing) objects between threads is not safe.
        self._holiday_years: dict[int, frozenset[date]] = {}
        # Memo of each local day's real-time spans: a promise's warning time and an agent notice's
        # delivery time walk the same few days for every event (~7 days' spans per event, each a
        # few zone conversions), and the spans of a day never change for this calendar.
        self._spans_by_day: dict[date, tuple[Span, ...]] = {}

    # --- what it is made of

    @property
    def timezone(self) -> str:
        return self._timezone

    @property
    def tz(self) -> ZoneInfo:
        return self._tz

    @property
    def weekly_hours(self) -> dict[str, tuple[Interval, ...]]:
        """All seven weekday keys in order, each with its intervals (empty when closed).

        An end of 00:00 means midnight at the end of the day (the config's 24:00).
        """
        return dict(zip(WEEKDAYS, self._weekly, strict=True))

    @property
    def country(self) -> str | None:
        return self._country

    @property
    def subdivision(self) -> str | None:
        return self._subdivision

    @property
    def closures(self) -> tuple[Closure, ...]:
        return self._closures

    @property
    def openings(self) -> dict[date, tuple[Interval, ...]]:
        return dict(self._openings)

    def with_weekly_hours(self, hours: Mapping[str, Any], timezone: str | None = None) -> Calendar:
        """The same holidays, closures and special openings with other weekly hours (an agent's
        shift on a team calendar), optionally read in another time zone."""
        return Calendar(timezone or self._timezone, hours, country=self._country,
                        subdivision=self._subdivision, closures=self._closures, openings=self._openings)

    def is_holiday(self, day: date) -> bool:
        if self._country is None:
            return False
        dates = self._holiday_years.get(day.year)
        if dates is None:
            dates = frozenset(holidays_package.country_holidays(
                self._country, subdiv=self._subdivision, years=day.year))
            self._holiday_years[day.year] = dates
        return day in dates

    def _key(self) -> tuple:
        return (self._timezone, self._weekly, self._country, self._subdivision, self._closures,
                tuple(sorted(self._openings.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Calendar) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        hours = ", ".join(f"{d}: {_format_intervals(iv)}" for d, iv in self.weekly_hours.items() if iv)
        extra = f", holidays={self._country}{'-' + self._subdivision if self._subdivision else ''}" \
            if self._country else ""
        return (f"Calendar({self._timezone!r}, {{{hours}}}{extra}, {len(self._closures)} closures, "
                f"{len(self._openings)} special openings)")

    # --- operations

    def is_open(self, at: datetime) -> bool:
        moment = _utc(at, "at")
        return next(self._spans(moment, moment + timedelta(microseconds=1)), None) is not None

    def next_opening(self, at: datetime) -> datetime | None:
        """`at` itself (in the calendar's zone) when open then, else the next moment it opens;
        None when it does not open within `SEARCH_DAYS` days."""
        moment = _utc(at, "at")
        first = next(self._spans(moment, None), None)
        return first[0].astimezone(self._tz) if first else None

    def closes_at(self, at: datetime) -> datetime | None:
        """When the stretch of open time around `at` ends (adjacent and overlapping intervals,
        overnight spans included, count as one stretch). None when closed at `at`, and when it
        stays open for the next `SEARCH_DAYS` days (a calendar open around the clock)."""
        moment = _utc(at, "at")
        horizon = moment + timedelta(days=SEARCH_DAYS)
        end: datetime | None = None
        for start, stop in self._spans(moment, horizon):
            if end is None:
                if start > moment:
                    return None
            elif start > end:
                break
            end = stop
        if end is None or end >= horizon:
            return None
        return end.astimezone(self._tz)

    def add_business_time(self, start: datetime, delta: timedelta) -> datetime:
        """The moment `delta` of open time has elapsed, counting from `start`, or from the next
        opening when closed at `start`. Ending exactly at a closing time returns that closing time.
        Raises ValueError for a negative delta, or when the calendar has no open time for
        `SEARCH_DAYS` days in a row before `delta` is used up."""
        moment = _utc(start, "start")
        if delta < timedelta(0):
            raise ValueError(f"business time to add must not be negative, got {delta}")
        remaining = delta
        reached = moment
        for begin, end in self._spans(moment, None):
            if end - begin >= remaining:
                return (begin + remaining).astimezone(self._tz)
            remaining -= end - begin
            reached = end
        raise ValueError(
            f"the calendar has no open time in the {SEARCH_DAYS} days after "
            f"{reached.astimezone(self._tz).isoformat()}: cannot add {delta} of business time to "
            f"{moment.astimezone(self._tz).isoformat()}"
        )

    def business_time_between(self, a: datetime, b: datetime) -> timedelta:
        """Open time within [a, b); zero when b is not after a."""
        start, end = _utc(a, "a"), _utc(b, "b")
        total = timedelta(0)
        if end <= start:
            return total
        for begin, stop in self._spans(start, end):
            total += stop - begin
        return total

    def open_intervals(self, start: datetime, end: datetime) -> Iterator[Span]:
        """The stretches of open time within [start, end), merged, in order, in the calendar's
        zone; a stretch open at `start` or still open at `end` is cut there."""
        lo, hi = _utc(start, "start"), _utc(end, "end")
        return self._merged(lo, hi)

    # --- the machinery

    def _merged(self, lo: datetime, hi: datetime) -> Iterator[Span]:
        current: list[datetime] | None = None
        for begin, end in self._spans(lo, hi):
            if current is not None and begin <= current[1]:
                current[1] = end
                continue
            if current is not None:
                yield current[0].astimezone(self._tz), current[1].astimezone(self._tz)
            current = [begin, end]
        if current is not None:
            yield current[0].astimezone(self._tz), current[1].astimezone(self._tz)

    def _spans(self, start: datetime, stop: datetime | None) -> Iterator[Span]:
        """Open time from `start` (UTC) on, as disjoint UTC spans in order, cut to [start, stop).

        Spans may touch (a day's last interval and the next day's first); `_merged` joins them.
        With no `stop` it ends after `SEARCH_DAYS` days in a row without open time.
        """
        if stop is not None and stop <= start:
            return
        covered = start
        for begin, end in self._sorted_day_spans(start, stop):
            if stop is not None and begin >= stop:
                return
            cut_begin = max(begin, covered)
            cut_end = min(end, stop) if stop is not None else end
            if cut_end > cut_begin:
                yield cut_begin, cut_end
            covered = max(covered, end)

    def _sorted_day_spans(self, start: datetime, stop: datetime | None) -> Iterator[Span]:
        """Every day's spans that end after `start`, sorted by start (they may overlap)."""
        # An overnight span that started the day before may still be running at `start`.
        day = self._local_day(start) - _ONE_DAY
        last_day = self._local_day(stop) + _ONE_DAY if stop is not None else None
        pending: list[Span] = []
        idle_days = 0
        while True:
            if last_day is not None and day > last_day:
                break
            if last_day is None and idle_days >= SEARCH_DAYS:
                break
            found = [span for span in self._day_spans(day) if span[1] > start]
            idle_days = 0 if found else idle_days + 1
            for span in found:
                heapq.heappush(pending, span)
            # Days are produced in order but their spans are not quite: a bound in a DST gap moves
            # forward in real time. Nothing from a later day can start before yesterday's midnight,
            # so whatever starts before it is final.
            settled = self._resolve(day - _ONE_DAY, MIDNIGHT)
            while pending and pending[0][0] < settled:
                yield heapq.heappop(pending)
            day += _ONE_DAY
        while pending:
            yield heapq.heappop(pending)

    def _intervals_starting(self, day: date) -> tuple[Interval, ...]:
        special = self._openings.get(day)
        if special is not None:
            return special
        weekly = self._weekly[day.weekday()]
        return () if weekly and self.is_holiday(day) else weekly

    def _day_spans(self, day: date) -> tuple[Span, ...]:
        """The real-time spans of the intervals that start on `day`, with closures taken out."""
        spans = self._spans_by_day.get(day)
        if spans is None:
            if len(self._spans_by_day) >= _DAYS_KEPT:
                self._spans_by_day.clear()
            spans = self._spans_by_day[day] = tuple(self._compute_day_spans(day))
        return spans

    def _compute_day_spans(self, day: date) -> list[Span]:
        spans: list[Span] = []
        for begin, end in self._intervals_starting(day):
            real_begin = self._resolve(day, begin)
            real_end = self._resolve(day + _ONE_DAY if end <= begin else day, end)
            # A short interval inside a DST gap can resolve to nothing (02:00-03:00 on the night
            # the clocks skip that hour).
            if real_end > real_begin:
                spans.append((real_begin, real_end))
        if spans and self._closures_by_day:
            holes = [hole for d in (day - _ONE_DAY, day, day + _ONE_DAY) for hole in self._closure_spans(d)]
            for hole in holes:
                spans = [piece for span in spans for piece in _subtract(span, hole)]
        return spans

    def _closure_spans(self, day: date) -> list[Span]:
        return [
            (self._resolve(day, c.start or MIDNIGHT),
             self._resolve(day + _ONE_DAY, MIDNIGHT) if c.end is None else self._resolve(day, c.end))
            for c in self._closures_by_day.get(day, ())
        ]

    def _resolve(self, day: date, wall: time) -> datetime:
        """A wall-clock time on a local date as a UTC instant (fold=0: see the module docstring)."""
        return datetime.combine(day, wall, tzinfo=self._tz).astimezone(UTC)

    def _local_day(self, moment: datetime) -> date:
        return moment.astimezone(self._tz).date()


#: Days whose spans a calendar keeps (a few years' worth); past it the memo starts again.
_DAYS_KEPT = 2048


def _utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value.isoformat()}")
    return value.astimezone(UTC)


def _subtract(span: Span, hole: Span) -> list[Span]:
    begin, end = span
    hole_begin, hole_end = hole
    if hole_end <= begin or hole_begin >= end:
        return [span]
    pieces = []
    if begin < hole_begin:
        pieces.append((begin, hole_begin))
    if hole_end < end:
        pieces.append((hole_end, end))
    return pieces


def _format_intervals(intervals: Iterable[Interval]) -> str:
    return ", ".join(f"{a:%H:%M}-{b:%H:%M}" for a, b in intervals)

"""The business calendar: what a customer or an agent would notice about opening hours.

Dates used (2026 unless said): Mon 1 Jun .. Mon 8 Jun is an ordinary week; DST in Europe/Warsaw
starts Sun 29 Mar (02:00 -> 03:00) and ends Sun 25 Oct (03:00 -> 02:00); 24 Dec is a Thursday.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays
import pytest
import yaml
from marshmallow import ValidationError

from shared.calendar import SEARCH_DAYS, WEEKDAYS, Calendar, Closure, parse_hours
from shared.config import CalendarSchema

WARSAW = ZoneInfo("Europe/Warsaw")
H = timedelta(hours=1)


def w(y: int, mo: int, d: int, h: int = 0, mi: int = 0, *, fold: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=WARSAW, fold=fold)


def same(got, expected) -> bool:
    """Same instants in the calendar's zone. Plain == is not enough: datetimes sharing a tzinfo
    compare by wall clock, so the two 02:30s of the autumn night would look equal."""
    if isinstance(expected, list | tuple):
        return len(got) == len(expected) and all(same(g, e) for g, e in zip(got, expected, strict=True))
    if expected is None or got is None:
        return got is expected
    return got == expected and got.utcoffset() == expected.utcoffset() and got.tzinfo == WARSAW


def office(**kwargs) -> Calendar:
    return Calendar("Europe/Warsaw", {d: "09:00-17:00" for d in WEEKDAYS[:5]}, **kwargs)


OFFICE = office()
# The example deployment: weekdays 9-17, Saturday 10-14, Polish public holidays.
OFFICE_PL = Calendar("Europe/Warsaw", {**{d: "09:00-17:00" for d in WEEKDAYS[:5]}, "sat": "10:00-14:00"},
                     country="PL")
CLOSED_24_DEC_FROM_14 = office(closures=[Closure(date(2026, 12, 24), start=time(14))])
NIGHT = Calendar("Europe/Warsaw", {"fri": "22:00-02:00"}, country="PL")
NIGHT_INTO_SAT = Calendar("Europe/Warsaw", {"fri": "22:00-02:00", "sat": "02:00-04:00"})
NIGHT_OVERLAPS_SAT = Calendar("Europe/Warsaw", {"fri": "22:00-02:00", "sat": "00:00-03:00"})
ALWAYS = Calendar("Europe/Warsaw", {d: "00:00-24:00" for d in WEEKDAYS})
SUNDAY_ALL_DAY = Calendar("Europe/Warsaw", {"sun": "00:00-00:00"})
SAT_NIGHT = Calendar("Europe/Warsaw", {"sat": "22:00-06:00"})
LUNCH = Calendar("Europe/Warsaw", {d: "09:00-12:00, 13:00-17:00" for d in WEEKDAYS[:5]})
PL_SPECIAL = office(country="PL", openings={date(2026, 11, 11): "10:00-14:00", date(2026, 12, 20): ["10:00-14:00"]})
BAVARIA = Calendar("Europe/Berlin", {d: "09:00-17:00" for d in WEEKDAYS[:5]}, country="DE", subdivision="BY")
BERLIN = Calendar("Europe/Berlin", {d: "09:00-17:00" for d in WEEKDAYS[:5]}, country="DE", subdivision="BE")
NEVER = Calendar("Europe/Warsaw")


def test_the_holidays_package_marks_polish_christmas_eve_from_2025_on():
    # The tests below rely on this: Wigilia became a public holiday in Poland in 2025.
    pl = holidays.country_holidays("PL", years=[2024, 2025, 2026])
    assert date(2024, 12, 24) not in pl
    assert pl.get(date(2025, 12, 24)) == "Christmas Eve"
    assert pl.get(date(2026, 12, 24)) == "Christmas Eve"


@pytest.mark.parametrize(
    "calendar, at, expected",
    [
        pytest.param(OFFICE, w(2026, 6, 1, 9), True, id="opens at 09:00 sharp"),
        pytest.param(OFFICE, w(2026, 6, 1, 16, 59), True, id="open a minute before close"),
        pytest.param(OFFICE, w(2026, 6, 1, 17), False, id="closed at 17:00 sharp"),
        pytest.param(OFFICE, w(2026, 6, 6, 12), False, id="closed on Saturday"),
        pytest.param(OFFICE, datetime(2026, 6, 1, 7, tzinfo=UTC), True, id="UTC 07:00 is 09:00 in Warsaw"),
        pytest.param(OFFICE_PL, w(2026, 12, 24, 10), False, id="Wigilia 2026 is a holiday"),
        pytest.param(OFFICE_PL, w(2024, 12, 24, 10), True, id="Wigilia 2024 was a working day"),
        pytest.param(OFFICE_PL, w(2026, 12, 26, 11), False, id="Saturday hours skipped on a holiday"),
        pytest.param(OFFICE_PL, w(2026, 12, 19, 11), True, id="an ordinary Saturday 10-14"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 13, 59), True, id="24 Dec open before 14:00"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 14), False, id="24 Dec closed from 14:00"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 23, 16), True, id="23 Dec unaffected"),
        pytest.param(NIGHT, w(2026, 6, 5, 21, 59), False, id="Friday night shift not started"),
        pytest.param(NIGHT, w(2026, 6, 5, 22), True, id="Friday night shift starts 22:00"),
        pytest.param(NIGHT, w(2026, 6, 6, 1, 30), True, id="still open Saturday 01:30"),
        pytest.param(NIGHT, w(2026, 6, 6, 2), False, id="closed Saturday 02:00"),
        pytest.param(NIGHT, w(2026, 8, 15, 1), True, id="Friday shift runs into a Saturday holiday"),
        pytest.param(NIGHT, w(2026, 12, 25, 23), False, id="no shift starting on a Friday holiday"),
        pytest.param(NIGHT, w(2026, 12, 26, 1), False, id="nor its morning part"),
        pytest.param(LUNCH, w(2026, 6, 2, 11, 59), True, id="before lunch"),
        pytest.param(LUNCH, w(2026, 6, 2, 12, 30), False, id="lunch break"),
        pytest.param(LUNCH, w(2026, 6, 2, 13), True, id="after lunch"),
        pytest.param(PL_SPECIAL, w(2026, 11, 11, 11), True, id="special opening on a holiday"),
        pytest.param(PL_SPECIAL, w(2026, 11, 11, 9, 30), False, id="special hours replace the usual ones"),
        pytest.param(PL_SPECIAL, w(2026, 12, 20, 13), True, id="special opening on a Sunday"),
        pytest.param(PL_SPECIAL, w(2026, 11, 10, 9, 30), True, id="the day before is ordinary"),
        pytest.param(BAVARIA, datetime(2026, 1, 6, 10, tzinfo=ZoneInfo("Europe/Berlin")), False,
                     id="Epiphany is a holiday in Bavaria"),
        pytest.param(BERLIN, datetime(2026, 1, 6, 10, tzinfo=ZoneInfo("Europe/Berlin")), True,
                     id="but not in Berlin"),
        pytest.param(ALWAYS, w(2026, 3, 29, 3), True, id="24/7 right after spring-forward"),
        pytest.param(NEVER, w(2026, 6, 1, 12), False, id="a calendar with no hours"),
    ],
)
def test_is_open(calendar: Calendar, at: datetime, expected: bool):
    assert calendar.is_open(at) is expected


@pytest.mark.parametrize(
    "calendar, at, expected",
    [
        pytest.param(OFFICE, w(2026, 6, 6, 23), w(2026, 6, 8, 9), id="Saturday 23:00 -> Monday 09:00"),
        pytest.param(OFFICE, w(2026, 6, 5, 17), w(2026, 6, 8, 9), id="Friday at closing -> Monday"),
        pytest.param(OFFICE, w(2026, 6, 1, 8, 59), w(2026, 6, 1, 9), id="a minute before opening"),
        pytest.param(OFFICE, w(2026, 6, 1, 10, 15), w(2026, 6, 1, 10, 15), id="open: the moment itself"),
        pytest.param(OFFICE_PL, w(2026, 12, 24, 17), w(2026, 12, 28, 9),
                     id="Wigilia 17:00 -> Monday 28 Dec (24-26 holidays, then Sunday)"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 17), w(2026, 12, 25, 9),
                     id="no holidays: closed from 14:00, reopens 25 Dec"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 14), w(2026, 12, 25, 9), id="at the closure"),
        pytest.param(LUNCH, w(2026, 6, 2, 12, 30), w(2026, 6, 2, 13), id="after the lunch break"),
        pytest.param(PL_SPECIAL, w(2026, 11, 11, 8), w(2026, 11, 11, 10), id="special opening on a holiday"),
        pytest.param(PL_SPECIAL, w(2026, 12, 19, 8), w(2026, 12, 20, 10), id="special Sunday"),
        pytest.param(NIGHT, w(2026, 6, 6, 2), w(2026, 6, 12, 22), id="after the night shift: next Friday"),
        pytest.param(NIGHT, w(2026, 12, 25, 12), w(2027, 1, 8, 22),
                     id="Christmas Friday and New Year Friday both skipped"),
        pytest.param(OFFICE, datetime(2026, 6, 6, 21, tzinfo=UTC), w(2026, 6, 8, 9), id="UTC in, Warsaw out"),
        pytest.param(NEVER, w(2026, 6, 1), None, id="never opens"),
    ],
)
def test_next_opening(calendar: Calendar, at: datetime, expected: datetime | None):
    assert same(calendar.next_opening(at), expected)


@pytest.mark.parametrize(
    "calendar, at, expected",
    [
        pytest.param(OFFICE, w(2026, 6, 1, 10), w(2026, 6, 1, 17), id="ordinary day"),
        pytest.param(OFFICE, w(2026, 6, 1, 17), None, id="closed at closing time"),
        pytest.param(NIGHT, w(2026, 6, 5, 23), w(2026, 6, 6, 2), id="Friday 23:00 -> Saturday 02:00"),
        pytest.param(NIGHT_INTO_SAT, w(2026, 6, 5, 23), w(2026, 6, 6, 4), id="overnight touching Saturday's hours"),
        pytest.param(NIGHT_OVERLAPS_SAT, w(2026, 6, 5, 23), w(2026, 6, 6, 3), id="overnight overlapping them"),
        pytest.param(LUNCH, w(2026, 6, 2, 10), w(2026, 6, 2, 12), id="closes for lunch"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 10), w(2026, 12, 24, 14), id="24 Dec closes at 14:00"),
        pytest.param(PL_SPECIAL, w(2026, 11, 11, 11), w(2026, 11, 11, 14), id="special hours"),
        pytest.param(SUNDAY_ALL_DAY, w(2026, 3, 29, 1), w(2026, 3, 30), id="whole Sunday across spring-forward"),
        pytest.param(ALWAYS, w(2026, 6, 1), None, id="open around the clock: no closing"),
        pytest.param(NEVER, w(2026, 6, 1), None, id="never open"),
    ],
)
def test_closes_at(calendar: Calendar, at: datetime, expected: datetime | None):
    assert same(calendar.closes_at(at), expected)


@pytest.mark.parametrize(
    "calendar, start, delta, expected",
    [
        pytest.param(OFFICE, w(2026, 6, 5, 17, 55), 4 * H, w(2026, 6, 8, 13),
                     id="Friday 17:55 is after close: Monday 09:00 + 4h"),
        pytest.param(OFFICE, w(2026, 6, 5, 16), 4 * H, w(2026, 6, 8, 12), id="Friday 16:00 + 4h -> Monday 12:00"),
        pytest.param(OFFICE, w(2026, 6, 5, 13), 4 * H, w(2026, 6, 5, 17), id="ends exactly at closing time"),
        pytest.param(OFFICE, w(2026, 6, 1, 9), 40 * H, w(2026, 6, 5, 17), id="a working week"),
        pytest.param(OFFICE, w(2026, 6, 6, 12), timedelta(0), w(2026, 6, 8, 9), id="zero when closed: next opening"),
        pytest.param(OFFICE, w(2026, 6, 1, 10), timedelta(0), w(2026, 6, 1, 10), id="zero when open: now"),
        pytest.param(LUNCH, w(2026, 6, 2, 11), 2 * H, w(2026, 6, 2, 14), id="skips the lunch break"),
        pytest.param(OFFICE_PL, w(2026, 12, 23, 15), 4 * H, w(2026, 12, 28, 11), id="over Christmas"),
        pytest.param(CLOSED_24_DEC_FROM_14, w(2026, 12, 24, 12), 4 * H, w(2026, 12, 25, 11),
                     id="over a partial closure"),
        pytest.param(NIGHT, w(2026, 6, 5, 23), 2 * H, w(2026, 6, 6, 1), id="inside the overnight span"),
        pytest.param(NIGHT, w(2026, 6, 5, 23), 4 * H, w(2026, 6, 12, 23), id="3h left tonight, 1h next Friday"),
        pytest.param(ALWAYS, w(2026, 3, 28, 23), 4 * H, w(2026, 3, 29, 4), id="24/7 over spring-forward: wall +5h"),
        pytest.param(ALWAYS, w(2026, 10, 24, 23), 4 * H, w(2026, 10, 25, 2, fold=1),
                     id="24/7 over fall-back: the second 02:00"),
        pytest.param(SAT_NIGHT, w(2026, 3, 28, 22), 8 * H, w(2026, 4, 4, 23),
                     id="spring-forward night holds 7h, the 8th is next Saturday"),
        pytest.param(SAT_NIGHT, w(2026, 10, 24, 22), 8 * H, w(2026, 10, 25, 5),
                     id="fall-back night holds 9h"),
    ],
)
def test_add_business_time(calendar: Calendar, start: datetime, delta: timedelta, expected: datetime):
    assert same(calendar.add_business_time(start, delta), expected)


@pytest.mark.parametrize(
    "calendar, a, b, expected",
    [
        pytest.param(OFFICE, w(2026, 6, 1), w(2026, 6, 8), 40 * H, id="a week of 9-17"),
        pytest.param(LUNCH, w(2026, 6, 1), w(2026, 6, 8), 35 * H, id="a week with lunch breaks"),
        pytest.param(OFFICE_PL, w(2026, 12, 21), w(2026, 12, 28), 3 * 8 * H, id="Christmas week"),
        pytest.param(OFFICE, w(2026, 6, 1, 10, 30), w(2026, 6, 1, 11), timedelta(minutes=30), id="inside one interval"),
        pytest.param(OFFICE, w(2026, 6, 5, 16), w(2026, 6, 8, 10), 2 * H, id="over a weekend"),
        pytest.param(OFFICE, w(2026, 6, 1, 12), w(2026, 6, 1, 12), timedelta(0), id="empty range"),
        pytest.param(OFFICE, w(2026, 6, 2, 12), w(2026, 6, 1, 12), timedelta(0), id="reversed range"),
        pytest.param(NEVER, w(2026, 1, 1), w(2028, 1, 1), timedelta(0), id="no hours at all"),
        pytest.param(SUNDAY_ALL_DAY, w(2026, 3, 29), w(2026, 3, 30), 23 * H, id="spring-forward Sunday: 23h"),
        pytest.param(SUNDAY_ALL_DAY, w(2026, 10, 25), w(2026, 10, 26), 25 * H, id="fall-back Sunday: 25h"),
        pytest.param(ALWAYS, w(2026, 3, 23), w(2026, 3, 30), 7 * 24 * H - H, id="24/7 week with spring-forward"),
        pytest.param(SAT_NIGHT, w(2026, 3, 28), w(2026, 3, 30), 7 * H, id="overnight across spring-forward"),
        pytest.param(SAT_NIGHT, w(2026, 10, 24), w(2026, 10, 26), 9 * H, id="overnight across fall-back"),
        pytest.param(NIGHT, w(2026, 6, 6), w(2026, 6, 7), 2 * H, id="only the overnight tail falls on Saturday"),
    ],
)
def test_business_time_between(calendar: Calendar, a: datetime, b: datetime, expected: timedelta):
    assert calendar.business_time_between(a, b) == expected


def test_open_intervals_are_merged_cut_and_in_the_calendars_zone():
    got = list(NIGHT_INTO_SAT.open_intervals(w(2026, 6, 5, 23), w(2026, 6, 13, 3)))
    assert same(got, [(w(2026, 6, 5, 23), w(2026, 6, 6, 4)), (w(2026, 6, 12, 22), w(2026, 6, 13, 3))])
    assert list(OFFICE.open_intervals(w(2026, 6, 6), w(2026, 6, 7))) == []
    assert list(OFFICE.open_intervals(w(2026, 6, 2), w(2026, 6, 1))) == []


@pytest.mark.parametrize(
    "hours, day, expected",
    [
        # fold=0: a bound in the skipped hour lands as far past 03:00 as it was past 02:00.
        pytest.param("02:30-04:00", date(2026, 3, 29), [(w(2026, 3, 29, 3, 30), w(2026, 3, 29, 4))],
                     id="starts in the spring-forward gap"),
        pytest.param("02:00-03:00", date(2026, 3, 29), [], id="wholly inside the gap: nothing"),
        # fold=0: a bound in the repeated hour is its first (summer-time) occurrence.
        pytest.param("02:30-03:30", date(2026, 10, 25), [(w(2026, 10, 25, 2, 30), w(2026, 10, 25, 3, 30))],
                     id="starts in the fall-back overlap"),
    ],
)
def test_interval_bounds_in_dst_gaps_and_overlaps(hours: str, day: date, expected: list):
    calendar = Calendar("Europe/Warsaw", {WEEKDAYS[day.weekday()]: hours})
    start = datetime.combine(day, time(0), tzinfo=WARSAW)
    got = list(calendar.open_intervals(start, start + 2 * 24 * H))
    assert same(got, expected)
    real = sum((b - a for a, b in ((x.astimezone(UTC), y.astimezone(UTC)) for x, y in got)), timedelta(0))
    assert calendar.business_time_between(start, start + 2 * 24 * H) == real
    if day.month == 10:
        assert real == 2 * H  # 02:30 summer time to 03:30 winter time


def test_a_calendar_with_no_hours_gives_up_instead_of_looping():
    at = w(2026, 6, 1, 12)
    assert NEVER.next_opening(at) is None
    assert NEVER.closes_at(at) is None
    with pytest.raises(ValueError, match=f"no open time in the {SEARCH_DAYS} days after"):
        NEVER.add_business_time(at, H)


def test_open_time_more_than_the_search_bound_away_is_not_found():
    far = date(2026, 6, 1) + timedelta(days=SEARCH_DAYS + 10)
    calendar = Calendar("Europe/Warsaw", openings={far: "09:00-10:00"})
    assert calendar.next_opening(w(2026, 6, 1)) is None
    assert same(calendar.next_opening(w(2027, 6, 1)), datetime.combine(far, time(9), tzinfo=WARSAW))
    # With an explicit end there is no such bound.
    assert calendar.business_time_between(w(2026, 6, 1), w(2030, 1, 1)) == H


@pytest.mark.parametrize(
    "closure, at, is_open",
    [
        pytest.param(Closure(date(2026, 6, 3)), w(2026, 6, 3, 10), False, id="whole day"),
        pytest.param(Closure(date(2026, 6, 3), end=time(12)), w(2026, 6, 3, 11), False, id="until 12:00"),
        pytest.param(Closure(date(2026, 6, 3), end=time(12)), w(2026, 6, 3, 12), True, id="open from 12:00"),
        pytest.param(Closure(date(2026, 6, 3), time(11), time(12)), w(2026, 6, 3, 10), True, id="before a window"),
        pytest.param(Closure(date(2026, 6, 3), time(11), time(12)), w(2026, 6, 3, 11, 30), False, id="in a window"),
        pytest.param(Closure(date(2026, 6, 6)), w(2026, 6, 6, 1), False, id="cuts an overnight span at midnight"),
        pytest.param(Closure(date(2026, 6, 6)), w(2026, 6, 5, 23), True, id="leaves the evening before"),
    ],
)
def test_closures(closure: Closure, at: datetime, is_open: bool):
    calendar = Calendar("Europe/Warsaw", {**{d: "09:00-17:00" for d in WEEKDAYS[:5]}, "fri": ["09:00-17:00", "22:00-02:00"]},
                        closures=[closure])
    assert calendar.is_open(at) is is_open


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        OFFICE.is_open(datetime(2026, 6, 1, 10))
    with pytest.raises(ValueError, match="must not be negative"):
        OFFICE.add_business_time(w(2026, 6, 1, 10), -H)
    with pytest.raises(ValueError, match="weekday keys"):
        Calendar("Europe/Warsaw", {"monday": "09:00-17:00"})
    with pytest.raises(ValueError, match="must end after it starts"):
        Closure(date(2026, 12, 24), time(14), time(9))


def test_weekly_hours_and_shift_copies():
    assert LUNCH.weekly_hours["tue"] == ((time(9), time(12)), (time(13), time(17)))
    assert list(NIGHT.weekly_hours) == list(WEEKDAYS) and NIGHT.weekly_hours["sat"] == ()
    assert ALWAYS.weekly_hours["mon"] == ((time(0), time(0)),)
    shift = OFFICE_PL.with_weekly_hours({"mon": [(time(6), time(14))]}, timezone="Europe/Kyiv")
    assert shift.timezone == "Europe/Kyiv" and shift.country == "PL"
    assert shift.next_opening(w(2026, 12, 24, 17)) == datetime(2026, 12, 28, 6, tzinfo=ZoneInfo("Europe/Kyiv"))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("09:00-17:00", [(time(9), time(17))]),
        ("9:00 - 17:00", [(time(9), time(17))]),
        ("09:00-12:00, 13:00-17:00", [(time(9), time(12)), (time(13), time(17))]),
        (["09:00-12:00", "13:00-17:00"], [(time(9), time(12)), (time(13), time(17))]),
        ("22:00-02:00", [(time(22), time(2))]),
        ("00:00-24:00", [(time(0), time(0))]),
        ("00:00-00:00", [(time(0), time(0))]),
        ([], []),
        ("", []),
    ],
)
def test_parse_hours(value, expected):
    assert parse_hours(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [
        ("9-17", '"9-17" is not HH:MM-HH:MM'),
        (["09:00-17:00", "9-17"], '"9-17" is not HH:MM-HH:MM'),
        ("09:00-12:00, noon-17:00", '"noon-17:00" is not HH:MM-HH:MM'),
        ("24:00-02:00", '"24:00-02:00" is not HH:MM-HH:MM: 24:00 is not a time of day'),
        ("09:00-25:00", '"09:00-25:00" is not HH:MM-HH:MM: 25:00 is not a time of day'),
        (9, '"9" is not HH:MM-HH:MM'),
    ],
)
def test_parse_hours_errors(value, message):
    with pytest.raises(ValueError) as exc:
        parse_hours(value)
    assert str(exc.value) == message


EXAMPLE = """
timezone: Europe/Warsaw
hours:
  mon: ["09:00-17:00"]
  tue: "09:00-12:00, 13:00-17:00"
  fri: ["09:00-17:00", "22:00-02:00"]
holidays: {country: PL, subdivision: null}
closures:
  - {date: 2026-12-24, from: "14:00"}
  - {date: "2026-12-31"}
openings:
  - {date: 2026-12-20, hours: ["10:00-14:00"]}
"""


def test_schema_loads_the_yaml_form():
    calendar = CalendarSchema().load(yaml.safe_load(EXAMPLE))
    assert isinstance(calendar, Calendar)
    assert calendar.timezone == "Europe/Warsaw" and calendar.country == "PL" and calendar.subdivision is None
    assert calendar.weekly_hours["tue"] == ((time(9), time(12)), (time(13), time(17)))
    assert calendar.weekly_hours["wed"] == ()
    assert calendar.closures == (Closure(date(2026, 12, 24), start=time(14)), Closure(date(2026, 12, 31)))
    assert calendar.openings == {date(2026, 12, 20): ((time(10), time(14)),)}
    assert calendar.is_open(w(2026, 12, 20, 11))  # the special Sunday
    assert calendar.is_open(w(2026, 6, 6, 1))  # the Friday night span


def test_schema_subdivision_and_until_24():
    calendar = CalendarSchema().load({
        "timezone": "Europe/Berlin", "hours": {"mon": "09:00-17:00"},
        "holidays": {"country": "de", "subdivision": "by"},
        "closures": [{"date": "2026-06-01", "from": "12:00", "until": "24:00"}],
    })
    assert (calendar.country, calendar.subdivision) == ("DE", "BY")
    assert calendar.closures == (Closure(date(2026, 6, 1), start=time(12)),)


def _with(**changes):
    doc = yaml.safe_load(EXAMPLE)
    for path, value in changes.items():
        node = doc
        *parents, leaf = path.split("__")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(leaf) if isinstance(node, list) else leaf] = value
    return doc


@pytest.mark.parametrize(
    "doc, errors",
    [
        pytest.param(_with(hours__mon="9-17"), {"hours": {"mon": ['"9-17" is not HH:MM-HH:MM']}}, id="bad interval"),
        pytest.param(_with(hours__fri=["09:00-17:00", "22-2"]), {"hours": {"fri": ['"22-2" is not HH:MM-HH:MM']}},
                     id="bad second interval"),
        pytest.param(_with(hours__mo=["09:00-17:00"]),
                     {"hours": {"mo": ["is not a weekday key (use mon, tue, wed, thu, fri, sat, sun)"]}},
                     id="unknown weekday"),
        pytest.param(_with(timezone="Mars/Olympus"), {"timezone": ['"Mars/Olympus" is not a known timezone']},
                     id="unknown timezone"),
        pytest.param(_with(holidays={"country": "XX"}),
                     {"holidays": {"country": ['"XX" is not a country code the holidays package knows']}},
                     id="unknown country"),
        pytest.param(_with(closures__0__date="2026-13-01"),
                     {"closures": {0: {"date": ['"2026-13-01" is not a date (YYYY-MM-DD)']}}}, id="bad date"),
        pytest.param(yaml.safe_load(EXAMPLE.replace('from: "14:00"', "from: 14:00")),
                     {"closures": {0: {"from": ['840 is not HH:MM: YAML read 14:00 as a number; '
                                                'put the time in quotes ("14:00")']}}},
                     id="unquoted YAML time"),
        pytest.param(_with(closures__0={"date": "2026-12-24", "from": "14:00", "until": "09:00"}),
                     {"closures": {0: {"until": ['"09:00" is not after "from" (14:00)']}}}, id="closure backwards"),
        pytest.param(_with(openings=[{"date": "2026-12-20", "hours": "10-14"}]),
                     {"openings": {0: {"hours": ['"10-14" is not HH:MM-HH:MM']}}}, id="bad special hours"),
        pytest.param(_with(openings=[{"date": "2026-12-20", "hours": []}, {"date": date(2026, 12, 20), "hours": []}]),
                     {"openings": {1: {"date": ['"2026-12-20" already has special hours at openings[0]']}}},
                     id="special opening twice"),
        pytest.param({"timezone": "UTC"}, {"hours": ["Missing data for required field."]}, id="hours required"),
    ],
)
def test_schema_errors_name_the_key_and_the_problem(doc, errors):
    with pytest.raises(ValidationError) as exc:
        CalendarSchema().load(doc)
    assert exc.value.messages == errors


def test_schema_unknown_subdivision_lists_the_known_ones():
    with pytest.raises(ValidationError) as exc:
        CalendarSchema().load(_with(holidays={"country": "DE", "subdivision": "ZZ"}))
    (message,) = exc.value.messages["holidays"]["subdivision"]
    assert message.startswith('"ZZ" is not a subdivision of DE (known: ') and "BY" in message

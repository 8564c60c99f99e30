"""Moments and working hours as people say them, in every language we serve.

Shared by the notifier (acknowledgements, agent notices) and the gateway (voice prompts): a pure
helper in shared/, so neither service imports the other. The words live in `<language>.yaml`
next to this file; everything here is pure (the moments come in as aware datetimes).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal

from shared.vocabulary import LANGUAGES, WEEKDAYS

Mode = Literal["at", "by"]
WeeklyHours = Mapping[str, Sequence[tuple[time, time]]]

_DIR = Path(__file__).parent


def language_code(language: str | None, *, default: str | None = None) -> str:
    """Normalise "pl-PL"/"PL" to "pl"; an unsupported language is a caller's bug, said loudly."""
    code = re.split(r"[-_]", (language or default or "").strip().lower(), maxsplit=1)[0]
    if code not in LANGUAGES:
        raise ValueError(f"unsupported language {language!r}; supported: {', '.join(LANGUAGES)}")
    return code


@functools.cache
def words(folder: Path, language: str) -> dict[str, Any]:
    """The words of one language from `<folder>/<language>.yaml`: the one way translations are stored
    (a folder per owner, a file per language, the same keys in each — `missing_words` checks that)."""
    import yaml

    data = yaml.safe_load((folder / f"{language_code(language)}.yaml").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{folder / language}.yaml holds no mapping of words")
    return data


def missing_words(folder: Path, reference: str = "en") -> dict[str, list[str]]:
    """Per language, the keys (dotted paths) it lacks or has beyond the reference language's file."""

    def paths(tree: Any, prefix: str = "") -> set[str]:
        if not isinstance(tree, dict):
            return {prefix}
        return {p for key, sub in tree.items() for p in paths(sub, f"{prefix}.{key}" if prefix else str(key))}

    expected = paths(words(folder, reference))
    out = {}
    for language in LANGUAGES:
        have = paths(words(folder, language))
        if have != expected:
            out[language] = sorted(expected ^ have)
    return out


@functools.cache
def date_words(language: str) -> dict[str, Any]:
    """The date words of one language code (weekdays, months, the "at"/"by" phrases)."""
    data = dict(words(_DIR, language))
    data.setdefault("at_word_by_hour", {})
    return data


def format_when(dt: datetime, now: datetime, language: str, *, mode: Mode = "at") -> str:
    """A moment as people say it: "today at 15:00", "tomorrow at 10:00", "on Monday, 23 November, at 09:00".

    ``mode="at"`` is a moment something happens ("we open ..."); ``mode="by"`` is a deadline
    ("... will reply by 13:00 on Monday, 23 November"). The phrase carries its own preposition,
    so it slots into a sentence in any of the languages without changing case. ``dt`` is shown in
    its own zone; "today" and "tomorrow" are judged in that zone too. The year is added only
    when the date is more than half a year away, where a weekday and a day would be ambiguous.
    """
    if dt.tzinfo is None or now.tzinfo is None:
        raise ValueError("format_when needs aware datetimes")
    if mode not in ("at", "by"):
        raise ValueError(f"mode must be 'at' or 'by', not {mode!r}")
    words = date_words(language_code(language))
    days = (dt.date() - now.astimezone(dt.tzinfo).date()).days
    which = "today" if days == 0 else "tomorrow" if days == 1 else "day"
    date_pattern = words["date_year"] if abs(days) > 183 else words["date"]
    weekday = dt.weekday()
    return words[f"{mode}_{which}"].format(
        time=f"{dt:%H:%M}",
        at=words["at_word_by_hour"].get(dt.hour, words["at_word"]),
        weekday=words["weekdays"][weekday],
        weekday_on=words["weekdays_on"][weekday],
        date=date_pattern.format(day=dt.day, month=words["months"][dt.month - 1], year=dt.year),
    )


def _clock_span(start: time, end: time) -> str:
    # An interval ending at midnight reads better as "24:00" ("09:00–24:00", "00:00–24:00").
    return f"{start:%H:%M}–{'24:00' if end == time(0) else f'{end:%H:%M}'}"


def day_groups(weekly_hours: WeeklyHours) -> list[tuple[int, int, tuple[tuple[time, time], ...]]]:
    """The week as runs of consecutive days with identical hours: (first, last, intervals), days
    numbered from Monday = 0; closed days are left out. Written hours and spoken hours both say it so."""
    days = [tuple(sorted(weekly_hours.get(key) or ())) for key in WEEKDAYS]
    groups: list[tuple[int, int, tuple[tuple[time, time], ...]]] = []
    first = 0
    while first < len(days):
        last = first
        while last + 1 < len(days) and days[last + 1] == days[first]:
            last += 1
        if days[first]:
            groups.append((first, last, days[first]))
        first = last + 1
    return groups


def format_weekly_hours(weekly_hours: WeeklyHours, language: str) -> str:
    """Working hours in compact form: "Mon–Fri 09:00–17:00, Sat 10:00–14:00".

    Consecutive days with identical hours collapse into a range; closed days are left out; an
    overnight interval keeps its wall-clock ends ("Fri 22:00–02:00"). When some day has more than
    one interval, days are separated by "; " so the commas inside a day stay unambiguous. Returns
    "" when the week has no hours at all; the caller decides what to say then.
    """
    names = date_words(language_code(language))["weekdays_short"]
    groups = day_groups(weekly_hours)
    parts = []
    for first, last, intervals in groups:
        label = names[first] if first == last else f"{names[first]}–{names[last]}"
        parts.append(f"{label} {', '.join(_clock_span(a, b) for a, b in intervals)}")
    several = any(len(intervals) > 1 for _, _, intervals in groups)
    return ("; " if several else ", ").join(parts)

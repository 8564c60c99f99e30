"""Every regex in services/ and shared/ runs in linear time: the checker in tests/support/regex_lint.py
finds no nested or adjacent unbounded quantifiers over overlapping characters, and no unanchored
search that starts with a run it may rescan from every position.

The checker is shown to catch the patterns issue 13 measured as slow (the strings as they were on
main before the fix), so a clean run means something.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.regex_lint import patterns_in, problems

ROOT = Path(__file__).resolve().parents[2]

#: The patterns as they were, each with what it cost on a line of 20,000 characters (measured).
BEFORE_THE_FIX = {
    # services/router/classifier.py: 72 s on a line of spaces (the two \s* meet around the optional dashes)
    "router separator": (r"^\s*(-{2,}|_{2,}|={2,})?\s*(original message|forwarded message|ursprüngliche nachricht)"
                         r"\s*(-{2,}|_{2,}|={2,})?\s*$", re.IGNORECASE),
    # services/router/classifier.py: 1.1 s on "re" and spaces (a subject)
    "router reply prefix": (r"^\s*((re|fw|fwd|aw|wg|sv|odp|ats|отв|пересл|vs|tr)\s*(\[\d+\])?\s*:\s*)+",
                            re.IGNORECASE),
    # services/router/classifier.py: 3.9 s on "<a@a@a@…"
    "router webmail attribution": (r"<[^<>\s]+@[^<>\s]+>\s*:\s*$", 0),
    "router sign-off": (r"^\s*(best regards|kind regards|thanks|pozdrawiam)\s*[,.!]*\s*$", re.IGNORECASE),
    # services/gateway/channels/email.py
    "gateway attribution": (r"(?:\bwrote|\bwrites|пишет|napisał|rašė|schrieb\b.*|skrev|a écrit)\s*:\s*$",
                            re.IGNORECASE),
    "gateway sign-off": (r"^\s*(?:best regards|kind regards|thanks|pozdrawiam)\s*[,.!]?\s*$", re.IGNORECASE),
    # services/router/survey_replies.py: 6.6 s on " . . . …x" (an SMS survey answer)
    "survey reply punctuation": (r"[\s.!,;:]+$", 0),
    # shared/log.py: 0.9 s on "a.a.a.…" (log masking)
    "log e-mail mask": (r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b", 0),
    # shared/config.py
    "config duration": (r"^\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$", 0),
    # the textbook shapes
    "nested runs": (r"(a+)+b", 0),
    "a run of something that may be empty": (r"(\s*x?)*y", 0),
    "a run that ends as it starts": (r"(\s*\s)+y", 0),
    "runs split by a shared character": (r"\s*\s\s*x", 0),
}

LINEAR = {
    "a run of spaces": (r"\s+", 0),
    "message ids": (r"<([^<>\s]+)>", 0),
    "anchored quote marker": (r"^\s*>", 0),
    "words or a currency sign": (r"[^\W_]+|¤", 0),
    "a repeated letter": (r"(.)\1+", 0),
    "a bounded run": (r"schrieb\b.{0,300}:$", re.IGNORECASE),
    "separated runs": (r"^\s*-{2,}\s*x\s*-{2,}\s*$", 0),
    "repeated prefixes": (r"(?:(?:re|fw)\s*(?:\[\d{1,9}\]\s*)?:\s*)+", re.IGNORECASE),
    "an IMAP response": (rb"UID (\d+)", 0),
}


@pytest.mark.parametrize("name", list(BEFORE_THE_FIX))
def test_the_checker_catches_the_slow_patterns(name: str) -> None:
    pattern, flags = BEFORE_THE_FIX[name]
    assert problems(pattern, flags), f"{name}: {pattern!r} was not flagged"


@pytest.mark.parametrize("name", list(LINEAR))
def test_the_checker_passes_linear_patterns(name: str) -> None:
    pattern, flags = LINEAR[name]
    assert problems(pattern, flags) == []


def test_every_regex_in_services_and_shared_is_linear() -> None:
    found = patterns_in(ROOT, ("services", "shared"))
    assert len(found) > 40, "the walk over the source found too few patterns: is it still looking?"
    not_literal = [f.where for f in found if f.pattern is None]
    assert not not_literal, f"patterns the checker cannot read (use a literal): {not_literal}"
    flagged = {f.where: problems(f.pattern, f.flags) for f in found if f.pattern is not None}
    assert {where: p for where, p in flagged.items() if p} == {}


def test_the_walk_sees_the_quote_stripper() -> None:
    found = {f.where.split(":")[0] for f in patterns_in(ROOT, ("services", "shared"))}
    assert {"shared/text.py", "services/gateway/channels/loops.py", "shared/reference.py", "shared/log.py",
            "services/router/classifier_text.py"} <= found

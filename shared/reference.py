"""The conversation reference people quote: "SB-" and 10 base32 characters ("SB-7K2QX4MZ3A").

The router makes one per conversation (services.router.trust.new_reference); the notifier's e-mail
sender puts it in brackets at the end of a subject ("Re: order 4471 [SB-7K2QX4MZ3A]"); the gateway
finds it there again in a reply and passes it on as meta["reference"]. The format is written here
only, so the three cannot drift apart.

The pattern reads customer text (a subject), so it runs in linear time: a fixed-length token
between brackets, the only runs being the spaces beside it (tests/unit/test_regex_safety.py).
"""

from __future__ import annotations

import re

PREFIX = "SB-"
#: Base32 characters after the prefix: 50 random bits, short enough to quote, impossible to guess.
LENGTH = 10

#: "[SB-…]" anywhere in a subject, in any case, with spaces inside the brackets allowed.
_BRACKETED = re.compile(r"\[\s*(SB-[A-Z2-7]{10})\s*\]", re.IGNORECASE)


def find_in_subject(subject: str | None) -> str | None:
    """The first bracketed reference in a subject, upper-cased; None when there is none."""
    found = _BRACKETED.search(subject or "")
    return found.group(1).upper() if found else None


def subject_token(reference: object) -> str:
    """The "[SB-…]" a subject carries, for a reference given bare or already in brackets.

    Raises ValueError for anything else: a subject must never carry a token the gateway would not
    find again (the reply would open a new conversation instead of joining this one).
    """
    inner = str(reference).strip().removeprefix("[").removesuffix("]")
    found = _BRACKETED.fullmatch(f"[{inner}]")
    if not found:
        raise ValueError(f"not a conversation reference: {reference!r}")
    return f"[{found.group(1).upper()}]"


__all__ = ["LENGTH", "PREFIX", "find_in_subject", "subject_token"]

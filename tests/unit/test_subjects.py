"""shared.text.clean_subject: the one reader of reply and forward prefixes, for the router's
categoriser (tags kept) and the gateway's automatic-mail check (server tags dropped too); and
shared.reference, the one reader and writer of the "[SB-…]" conversation reference in a subject."""

from __future__ import annotations

import pytest

from shared.reference import LENGTH, PREFIX, find_in_subject, subject_token
from shared.text import clean_subject, is_reply_subject


@pytest.mark.parametrize(("subject", "plain", "without_tags"), [
    ("Re: Fwd: Where is my parcel?", "Where is my parcel?", "Where is my parcel?"),
    ("  AW[3]: Odp : Rücksendung", "Rücksendung", "Rücksendung"),
    ("[SPAM] Re: Out of office", "[SPAM] Re: Out of office", "Out of office"),
    ("Fw: ***SPAM*** [External] Re: Urlaub", "***SPAM*** [External] Re: Urlaub", "Urlaub"),
    ("Отв: пересл: заказ 4471", "заказ 4471", "заказ 4471"),
    ("Odpowiedź na reklamację", "Odpowiedź na reklamację", "Odpowiedź na reklamację"),
    ("[" + "x" * 41 + "] Re: hello", "[" + "x" * 41 + "] Re: hello", "[" + "x" * 41 + "] Re: hello"),
    ("", "", ""),
])
def test_prefixes_go_and_server_tags_only_when_asked(subject: str, plain: str, without_tags: str) -> None:
    assert clean_subject(subject) == plain
    assert clean_subject(subject, server_tags=True) == without_tags


def test_a_reply_is_known_by_its_prefix() -> None:
    assert is_reply_subject(" Re: order") and not is_reply_subject("Regarding order") and not is_reply_subject(None)


@pytest.mark.parametrize(("subject", "found"), [
    ("Re: order 4471 [SB-7K2QX4MZ3A]", "SB-7K2QX4MZ3A"),
    ("AW: [ sb-7k2qx4mz3a ] Rücksendung", "SB-7K2QX4MZ3A"),
    ("SB-7K2QX4MZ3A without brackets", None),  # a bare token is text a customer may have typed anywhere
    ("[SB-7K2QX4MZ3] one short", None), ("[SB-7K2QX4MZ3A1]", None), (None, None),
])
def test_a_reference_is_found_in_brackets_only(subject: str | None, found: str | None) -> None:
    assert find_in_subject(subject) == found


@pytest.mark.parametrize("given", ["SB-7K2QX4MZ3A", " [sb-7k2qx4mz3a] ", "[ SB-7K2QX4MZ3A ]", "[SB-7K2QX4MZ3A", "SB-7K2QX4MZ3A]"])
def test_a_subject_token_is_what_the_gateway_finds_again(given: str) -> None:
    token = subject_token(given)
    assert token == "[SB-7K2QX4MZ3A]" and find_in_subject(f"Re: x {token}") == "SB-7K2QX4MZ3A"


@pytest.mark.parametrize("given", ["SB-7K2Q", "7K2QX4MZ3A", "[[SB-7K2QX4MZ3A]]", "SB-7K2QX4MZ3A x", ""])
def test_anything_else_is_not_a_reference(given: str) -> None:
    with pytest.raises(ValueError, match="not a conversation reference"):
        subject_token(given)


def test_the_router_makes_references_of_this_format() -> None:
    from services.router.trust import new_reference

    made = new_reference(lambda n: bytes(range(n)))
    assert made.startswith(PREFIX) and len(made) == len(PREFIX) + LENGTH and subject_token(made) == f"[{made}]"

"""shared.text.clean_subject: the one reader of reply and forward prefixes, for the router's
categoriser (tags kept) and the gateway's automatic-mail check (server tags dropped too)."""

from __future__ import annotations

import pytest

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

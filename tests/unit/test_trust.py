"""The router's pure trust decisions (services/router/trust.py): whose identity a mail is filed
under, where an answer may go, which reference the agent is shown, and references nobody computes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.router import trust
from shared.contracts import Identity, InboundMessage

AT = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)


def message(channel: str = "email", auth: object = None, sender: str = "piotr@example.pl") -> InboundMessage:
    meta = {} if auth is None else {"sender_auth": auth}
    kind = "email" if channel == "email" else "telegram"
    return InboundMessage(channel=channel, external_id="x1", sender=Identity(kind, sender), reply_to=sender,
                          received_at=AT, text="Hello", meta=meta)


@pytest.mark.parametrize(("msg", "verified", "kind"), [
    (message(auth={"verified": True, "method": "dmarc", "reason": "dmarc=pass"}), True, "email"),
    (message(auth={"verified": False, "method": None, "reason": "dmarc=fail"}), False, "email-unverified"),
    (message(), False, "email-unverified"),  # a gateway that gave no verdict vouches for nothing
    (message(auth={"verified": "yes"}), False, "email-unverified"),  # only a real True counts
    (message(channel="telegram", sender="4242"), True, "telegram"),  # the bot API's own authentication
])
def test_an_email_is_filed_under_a_verified_identity_only_on_our_servers_word(msg, verified, kind) -> None:
    assert trust.sender_verified(msg) is verified
    assert trust.sender_identity(msg) == Identity(kind, msg.sender.value)


@pytest.mark.parametrize(("reply_to", "known", "expected"), [
    (None, [], ("piotr@example.pl", None)),
    ("Piotr@Example.pl", [], ("piotr@example.pl", None)),
    ("thief@evil.example", ["piotr@example.pl"], ("piotr@example.pl", "thief@evil.example")),
    ("office@example.pl", ["piotr@example.pl", "office@example.pl"], ("office@example.pl", None)),
])
def test_a_reply_to_is_used_only_when_it_is_already_the_customers(reply_to, known, expected) -> None:
    assert trust.reply_address("piotr@example.pl", reply_to, known) == expected


@pytest.mark.parametrize(("own", "foreign", "subject_reference", "shown"), [
    ("SB-AAAAAAAAAA", None, "SB-AAAAAAAAAA", None),  # the customer's own thread
    (None, "SB-BBBBBBBBBB", "SB-BBBBBBBBBB", "SB-BBBBBBBBBB"),  # somebody else's
    ("SB-AAAAAAAAAA", "SB-BBBBBBBBBB", None, "SB-BBBBBBBBBB"),  # own by In-Reply-To, another quoted
    (None, None, "sb-cccccccccc", "SB-CCCCCCCCCC"),  # a reference that matches nothing
    (None, None, None, None),
])
def test_the_agent_is_shown_a_reference_that_is_not_the_customers(own, foreign, subject_reference, shown) -> None:
    assert trust.quoted_reference(own, foreign, subject_reference) == shown


def test_references_are_random_in_the_gateways_format() -> None:
    refs = {trust.new_reference() for _ in range(2000)}
    assert len(refs) == 2000
    assert all(len(r) == 13 and r.startswith("SB-") and set(r[3:]) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
               for r in refs)
    # The randomness is the only input: the same bytes give the same reference.
    assert trust.new_reference(lambda n: bytes(n)) == "SB-AAAAAAAAAA"

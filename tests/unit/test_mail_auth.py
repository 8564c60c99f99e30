"""Who sent a mail, by our own mail server's Authentication-Results (services/gateway/channels/mail_auth.py).

Real header fields from other receivers (tests/fixtures/email_auth/, origins in SOURCES.md): the
verdict depends on which server is trusted, and a field from any other server is worth nothing.
"""

from __future__ import annotations

import time
from email import message_from_string, policy
from pathlib import Path

import pytest

from services.gateway.channels.email import parse_mime
from services.gateway.channels.mail_auth import aligned, sender_verdict, verdict_for

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email_auth"


def sample(name: str):
    return message_from_string((FIXTURES / f"{name}.txt").read_text(), policy=policy.default)


def verdict(name: str, *trusted: str):
    msg = sample(name)
    return verdict_for(msg, msg["From"].addresses[0].addr_spec, trusted)


@pytest.mark.parametrize(("name", "trusted", "verified", "method", "reason"), [
    # Gmail as our IMAP mailbox's server: its DMARC pass vouches for the From domain.
    ("gmail_dmarc_pass_discourse", "mx.google.com", True, "dmarc", "dmarc=pass for discoursemail.com"),
    # The very same fields when our server is another one: somebody else's word, ignored.
    ("gmail_dmarc_pass_discourse", "mx.northwind.example", False, None,
     "no Authentication-Results from our mail server (mx.northwind.example)"),
    # SPF failed, but DKIM aligned and DMARC passed: DMARC decides.
    ("blaze_dmarc_pass_spf_fail_janestreet", "omelet", True, "dmarc", "dmarc=pass for janestreet.com"),
    ("blaze_dmarc_pass_two_signatures_github", "omelet", True, "dmarc", "dmarc=pass for github.com"),
    # One mail, two receivers: kernel.org's OpenDMARC said fail (the list had rewritten the
    # envelope), Gmail said pass. Whichever server is ours is believed; a DMARC fail is not
    # overruled by the aligned DKIM pass next to it.
    ("lkml_two_servers_oracle", "mail.kernel.org", False, None, "dmarc=fail for oracle.com"),
    ("lkml_two_servers_oracle", "MX.Google.com", True, "dmarc", "dmarc=pass for oracle.com"),
    # No DMARC result: an aligned DKIM signature vouches, a third party's signature does not.
    ("lkml_dkim_pass_aligned_ziepe", "smtp.subspace.kernel.org", True, "dkim", "dkim=pass by ziepe.ca"),
    ("lkml_dkim_pass_unaligned_gappssmtp", "smtp.subspace.kernel.org", False, None,
     "not authenticated for soleen.com: dkim=pass by soleen-com.20230601.gappssmtp.com, not soleen.com"),
])
def test_the_verdict_is_our_own_servers(name, trusted, verified, method, reason) -> None:
    got = verdict(name, trusted)
    assert (got.verified, got.method, got.reason) == (verified, method, reason)


def test_nothing_is_verified_without_a_configured_server() -> None:
    got = verdict("gmail_dmarc_pass_discourse")
    assert not got.verified and "channels.email.authserv_ids" in got.reason


def test_a_forged_field_claiming_our_id_is_as_good_as_our_servers_so_the_server_must_strip_them() -> None:
    """RFC 8601 §5: our MTA deletes incoming fields carrying its own authserv-id. This is why the
    README insists on it: the parser cannot tell them apart."""
    fields = ["mx.northwind.example; dmarc=pass header.from=victim.example"]
    assert sender_verdict(fields, "victim.example", ["mx.northwind.example"]).verified


def test_a_dmarc_verdict_on_another_domain_says_nothing_about_this_from() -> None:
    fields = ["mx.northwind.example; dmarc=pass header.from=attacker.example; spf=pass smtp.mailfrom=attacker.example"]
    got = sender_verdict(fields, "victim.example", ["mx.northwind.example"])
    assert not got.verified and "spf=pass for attacker.example, not victim.example" in got.reason


@pytest.mark.parametrize(("domain", "from_domain", "expected"), [
    ("mail.example.com", "example.com", True),
    ("example.com", "shop.example.com", True),
    ("bbc.co.uk", "co.uk", False),  # a public suffix is nobody's organisation
    ("attacker.co.uk", "victim.co.uk", False),
    ("sgmail.github.com", "github.com", True),
    ("", "example.com", False),
])
def test_relaxed_alignment_by_organisational_domain(domain, from_domain, expected) -> None:
    assert aligned(domain, from_domain) is expected


def test_spf_alone_vouches_when_aligned() -> None:
    fields = ["mx.northwind.example; spf=pass smtp.mailfrom=bounce@mail.shop.example; dkim=none"]
    got = sender_verdict(fields, "shop.example", ["mx.northwind.example"])
    assert (got.verified, got.method) == (True, "spf")


@pytest.mark.parametrize("field", [
    "mx.northwind.example; " + " " * 100_000 + "dmarc=pass",
    "mx.northwind.example; dkim=pass " + "(" * 3_000 + ")" * 3_000,
    "mx.northwind.example; " + "dkim=pass header.d=x.example; " * 3_000,
    "mx.northwind.example; dkim=pass reason=\"" + "\\\\" * 50_000,
    "mx.northwind.example; " + "=" * 100_000,
    # Just under the length cap, so that the parser itself reads them.
    "mx.northwind.example; " + " " * 2_000 + "x",
    "mx.northwind.example; dkim=pass (" + "(" * 950 + ")" * 950,
    "mx.northwind.example; " + "dkim=fail header.d=x.example; " * 65,
    "mx.northwind.example; dkim=pass reason=\"" + "\\\"" * 650,
    "mx.northwind.example; spf=pass smtp.mailfrom=" + "a." * 1_000,
])
def test_hostile_fields_are_ignored_quickly(field) -> None:
    started = time.perf_counter()
    got = sender_verdict([field] * 60, "x.example", ["mx.northwind.example"])
    assert not got.verified
    assert time.perf_counter() - started < 1.0  # generous: each is milliseconds


def test_a_mail_stuffed_with_somebody_elses_fields_costs_nothing() -> None:
    forged = "mx.evil.example; " + "dkim=pass header.d=victim.example; " * 55  # ~1.9 KB each: parseable
    started = time.perf_counter()
    got = sender_verdict([forged] * 50 + ["mx.northwind.example; dmarc=pass header.from=victim.example"],
                         "victim.example", ["mx.northwind.example"])
    assert time.perf_counter() - started < 0.5  # generous: none of the forged ones is parsed
    # Only the first 50 fields are read: ours came too late (a mail like this is no customer's).
    assert not got.verified


def test_the_gateway_puts_the_verdict_on_the_message() -> None:
    raw = (FIXTURES / "gmail_dmarc_pass_discourse.txt").read_bytes() + (
        b"To: help@support.northwind.example\nSubject: Hi\nMessage-ID: <x1@discoursemail.com>\n\nHello\n")
    from datetime import UTC, datetime

    msg = parse_mime(raw, received_at=datetime(2026, 3, 10, tzinfo=UTC), our_domains=["support.northwind.example"],
                     authserv_ids=["mx.google.com"])
    assert msg.meta["sender_auth"] == {"verified": True, "method": "dmarc",
                                       "reason": "dmarc=pass for discoursemail.com"}
    # The Reply-To is carried as the customer gave it; the router decides whether to use it.
    assert (msg.sender.value, msg.reply_to) == ("ocaml@discoursemail.com",
                                                 "ocaml+bf77c89f3ca4a05f160a08f134224d72@discoursemail.com")

"""Authentication-Results are written by whoever sent the mail: arbitrary fields never raise, and
never vouch for a sender unless they carry our authserv-id (services/gateway/channels/mail_auth.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.channels.mail_auth import sender_verdict
from tests.fuzz.settings import fuzz

OURS = ["mx.northwind.example"]
TOKENS = st.sampled_from(["mx.northwind.example", "mx.evil.example", ";", " ", "(", ")", "\"", "\\", "=", ".",
                          "@", "/", "1", "dmarc", "dkim", "spf", "pass", "fail", "none", "header", "from", "d",
                          "i", "smtp", "mailfrom", "victim.example", "reason", "policy", "\t", "é", "\x00"])
FIELDS = st.lists(TOKENS, max_size=60).map("".join)


@fuzz(400)
@given(fields=st.lists(FIELDS | st.text(max_size=300), max_size=8))
def test_any_fields_give_a_verdict_and_only_ours_can_vouch(fields) -> None:
    got = sender_verdict(fields, "victim.example", OURS)
    assert isinstance(got.reason, str) and got.reason
    if got.verified:
        assert any(f.split(";", 1)[0].split()[:1] == ["mx.northwind.example"] for f in fields)


@fuzz(200)
@given(fields=st.lists(FIELDS, max_size=8))
def test_nothing_vouches_without_a_configured_server(fields) -> None:
    assert not sender_verdict(fields, "victim.example", []).verified

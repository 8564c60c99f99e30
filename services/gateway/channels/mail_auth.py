"""Who really sent an e-mail: the receiving mail server's verdict, read from Authentication-Results.

A From header is whatever the sender typed. What can be believed is what our own mail server
checked when the mail arrived (SPF, DKIM, DMARC) and wrote into an `Authentication-Results` header
field (RFC 8601) stamped with its authserv-id. Anyone can add such a header to a mail they send,
claiming any result, so only fields whose authserv-id is one of ours count (`authserv_ids`, from
`channels.email.authserv_ids`); our server removes incoming fields that claim its own id (RFC 8601
§5), which is what the README asks of the relay and the IMAP server's MTA.

The verdict, in order:
1. a `dmarc` result for the From domain: `pass` verifies; `fail` does not (the domain's own policy
   says the mail is not theirs), whatever DKIM or SPF say;
2. else (no DMARC verdict, or none/temperror/permerror) a `dkim=pass` whose signing domain
   (header.d, else the domain of header.i) is aligned with the From domain;
3. else an `spf=pass` whose checked domain (smtp.mailfrom) is aligned with the From domain.
Aligned means the same organisational domain (RFC 7489's relaxed alignment: `mail.example.com`
and `example.com` align; two registrations under one public suffix do not), from the Public Suffix
List shipped with `publicsuffixlist`.

Parsing is `authres`'s (the reference implementation of RFC 8601's grammar). It is a hostile input:
fields are capped in length and number before they are parsed, and anything it rejects is
ignored, never trusted.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from email.message import Message
from typing import Any

import authres
from publicsuffixlist import PublicSuffixList

#: A real field is a few hundred characters (Gmail's, with comments, about 600). authres consumes
#: the text token by token from a copy (quadratic in the length), so the length is capped first.
MAX_FIELD_CHARS = 2048
#: Fields looked at per mail: a relay chain adds a handful; a mail stuffed with thousands is not
#: worth reading further.
MAX_FIELDS = 50
#: Fields of ours parsed per mail: our servers add one to four (OpenDKIM, OpenDMARC, SPF each
#: their own). Parsing a long field costs milliseconds, so the number is bounded too.
MAX_OURS = 10

HEADER = "Authentication-Results"


@dataclass(frozen=True)
class SenderVerdict:
    """verified: our mail server vouched that the From domain sent this mail; method: which check
    (dmarc, dkim, spf); reason: what an agent is shown."""

    verified: bool
    method: str | None
    reason: str

    def as_meta(self) -> dict[str, Any]:
        return {"verified": self.verified, "method": self.method, "reason": self.reason}


@functools.cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()  # parses the bundled list once (~0.15 s)


def organisational_domain(domain: str) -> str | None:
    """`mail.example.co.uk` → `example.co.uk`; a public suffix itself (`co.uk`) has none."""
    domain = domain.strip().strip(".").lower()
    if not domain or len(domain) > 253:
        return None
    return _psl().privatesuffix(domain)


def aligned(domain: str | None, from_domain: str) -> bool:
    """RFC 7489 relaxed alignment: both under the same organisational domain."""
    if not domain:
        return False
    org = organisational_domain(domain)
    return org is not None and org == organisational_domain(from_domain)


def _domain_of(value: str | None) -> str | None:
    """`user@example.com`, `@example.com` or `example.com` → `example.com`."""
    if not value:
        return None
    return value.rpartition("@")[2].strip().strip("<>").lower() or None


def _prop(result: Any, ptype: str, name: str) -> str | None:
    for p in getattr(result, "properties", ()) or ():
        if (p.type or "").lower() == ptype and (p.name or "").lower() == name:
            return p.value
    return None


def _parse(field: str) -> Any | None:
    if len(field) > MAX_FIELD_CHARS:
        return None
    # Some verifiers end the field with a ";" (blaze, for one); RFC 8601's grammar has no empty
    # result there, and dropping it changes no result.
    field = field.rstrip()
    field = field[:-1] if field.endswith(";") else field
    try:
        return authres.AuthenticationResultsHeader.parse_value(field)
    except Exception:  # noqa: BLE001 - authres raises SyntaxError, RecursionError on nested comments…: not ours
        return None


def sender_verdict(fields: Iterable[str], from_domain: str, authserv_ids: Collection[str]) -> SenderVerdict:
    """The verdict on a mail whose From is in `from_domain`, from its Authentication-Results field
    values (without the field name). Pure."""
    from_domain = from_domain.strip().lower()
    ours = {a.strip().lower() for a in authserv_ids if a.strip()}
    if not ours:
        return SenderVerdict(False, None, "no trusted mail server is configured (channels.email.authserv_ids)")
    results = []
    parsed = 0
    for n, field in enumerate(fields):
        if n >= MAX_FIELDS or parsed >= MAX_OURS:
            break
        # The authserv-id comes first: anybody else's field is skipped unparsed, so a mail stuffed
        # with forged fields costs nothing. (A comment before the id, legal but unseen in practice,
        # makes one of ours look like somebody else's: unverified, the safe side.)
        head = field.split(";", 1)[0].split()
        if not head or head[0].lower() not in ours:
            continue
        parsed += 1
        header = _parse(field)
        if header is not None and (header.authserv_id or "").lower() in ours:
            results.extend(header.results)
    if not results:
        return SenderVerdict(False, None, f"no Authentication-Results from our mail server ({', '.join(sorted(ours))})")

    def by(method: str) -> list[Any]:
        return [r for r in results if (r.method or "").lower() == method]

    dmarc = [r for r in by("dmarc") if _domain_of(_prop(r, "header", "from")) in (None, from_domain)]
    verdicts = {(r.result or "").lower() for r in dmarc}
    if "fail" in verdicts:
        return SenderVerdict(False, None, f"dmarc=fail for {from_domain}")
    if "pass" in verdicts:
        return SenderVerdict(True, "dmarc", f"dmarc=pass for {from_domain}")
    seen = []
    for r in by("dkim"):
        signer = _domain_of(_prop(r, "header", "d")) or _domain_of(_prop(r, "header", "i"))
        if (r.result or "").lower() == "pass":
            if aligned(signer, from_domain):
                return SenderVerdict(True, "dkim", f"dkim=pass by {signer}")
            seen.append(f"dkim=pass by {signer or 'an unnamed signer'}, not {from_domain}")
    for r in by("spf"):
        checked = _domain_of(_prop(r, "smtp", "mailfrom")) or _domain_of(_prop(r, "smtp", "helo"))
        if (r.result or "").lower() == "pass":
            if aligned(checked, from_domain):
                return SenderVerdict(True, "spf", f"spf=pass for {checked}")
            seen.append(f"spf=pass for {checked or 'an unnamed domain'}, not {from_domain}")
    summary = "; ".join(seen) or ", ".join(f"{r.method}={r.result}" for r in results[:6])
    return SenderVerdict(False, None, f"not authenticated for {from_domain}: {summary}")


def header_fields(msg: Message) -> list[str]:
    """The raw Authentication-Results field values, unfolded, top (newest) first, at most MAX_FIELDS."""
    found = []
    for key, value in msg.raw_items():
        if key.lower() == HEADER.lower():
            raw = str(value)
            # Unfolded. An overlong field is skipped whole (by _parse), never cut: what a cut
            # left out could be the failing result.
            found.append(" ".join(raw.split()) if len(raw) <= 2 * MAX_FIELD_CHARS else "\x00" * (MAX_FIELD_CHARS + 1))
            if len(found) >= MAX_FIELDS:
                break
    return found


def verdict_for(msg: Message, from_address: str, authserv_ids: Collection[str]) -> SenderVerdict:
    return sender_verdict(header_fields(msg), from_address.rpartition("@")[2], authserv_ids)


__all__ = ["SenderVerdict", "sender_verdict", "verdict_for", "header_fields", "aligned", "organisational_domain"]

"""Automatic mail: one test per real fixture in tests/fixtures/email/automatic/ (SOURCES.md says
where each comes from) — the raw mail in, the exact verdict out: automatic or a person, which kind,
and for a bounce or complaint the Message-ID of our message it quotes, the address that failed or
complained, and whether that is permanent. A test checks that every fixture has its expectation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.channels.email import parse_mime
from services.gateway.channels.loops import classify_bytes

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email" / "automatic"
RECEIVED = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Outcome:
    kind: str
    original_message_id: str | None = None
    recipient: str | None = None
    permanent: bool | None = None
    failed: bool = False
    status: str | None = None


def bounce(original: str | None, recipient: str, status: str | None, permanent: bool = True) -> Outcome:
    return Outcome("bounce", original, recipient, permanent, True, status)


EXPECTED: dict[str, Outcome | None] = {
    # --- bounces: standard DSNs (RFC 3464) ---
    "bounce_postfix_dsn_dmarc": bounce("20201113004243.AF578C0196A@smtp.example.jp", "kijitora@google.example.com",
                                       "5.7.26"),
    "bounce_hotmail_dsn_mailbox_full": bounce("BLU436-SMTP6645ECA6E7FEFFE86D040BBA770@phx.gbl", "kijitora@example.jp",
                                              "5.2.2"),
    "bounce_yandex_dsn_ru": bounce("446281417885946@web20h.yandex.ru", "kijitora@example.jp", "5.1.1"),
    # The original was cut before its Message-ID: nothing of ours to mark, the recipient still named.
    "bounce_postfix_empty_from_chatwoot": bounce(None, "noreply@example-service.com", "5.7.1"),
    # Gmail's DSN with an empty delivery-status part: X-Failed-Recipients and the text say it all.
    "bounce_gmail_dsn_empty_report_chatwoot": bounce(
        "conversation/93775311-9416-4428-964b-862001f8a8b2/messages/27855337@gmail.com",
        "alex.jones@fictionalcorp.com", "5.1.1"),
    "bounce_exim_dsn_no_from_mimekit": bounce(None, "source@domain.com", "5.0.0"),
    # Exchange 2007's NDR (the attached message and In-Reply-To both name our message).
    "bounce_exchange2007_ndr_message_too_large": bounce("20100629141825.BC9AC16586D3@server4.example.co.uk",
                                                        "john.smith@eu.a.b.c", "5.2.3"),
    # --- bounces in words only: qmail, Exim, Gmail, Yahoo, Exchange 5.5, mail.ru ---
    "bounce_qmail_failure_notice": bounce("000000000.9999999999999.JavaMail.postmaster@mailhub",
                                          "kijitora@example.ne.jp", "5.5.0"),
    "bounce_exim_x_failed_recipients": bounce("E1X58pB-0004bW-2s@marutamachi.example.org", "kijitora@example.jp",
                                              "5.1.1"),
    "bounce_gmail_failed_permanently": bounce("45B7FBD7-1218-4FCD-ACA1-4706F111E682@gmail.com",
                                              "aougoueioaldljgoiuiorghladkgke@example.fr", "5.1.1"),
    "bounce_yahoo_failure_notice": bounce("6AE6249A-E7A8-4980-862C-F499F6B8E7C5@y.example.co.jp",
                                          "kijitora@example.org", "5.1.1"),
    # Subject "E", no status code: the sentence "did not reach the following recipient(s)" and
    # "not recognized" make it a permanent bounce.
    "bounce_exchange55_did_not_reach": bounce("00000000000.ffffffffffff.ff@example.net", "kijitora@example.jp", None),
    # A multipart/report whose boundary never appears (sendmail 8.8): read as the text it is.
    "bounce_sendmail_report_without_parts": bounce("00000000000.000000@mx4.example.co.jp",
                                                   "kijitora@neko.example.edu", "5.5.0"),
    "bounce_mailru_exim_ru": bounce("8F3CE2D8-D60E-48C3-B9AF-BED628EE2CA5@mail.example.ru", "kijitora@example.jp",
                                    "5.1.1"),
    # --- complaints (ARF, RFC 5965) ---
    "complaint_arf_terra": Outcome("complaint", "f6fbba8a761ce682e1b00a323a21b372@example.net", None, True),
    "complaint_arf_rfc5965_mimekit": Outcome("complaint", "8787KJKJ3K4J3K4J3K4J3.mail@example.net",
                                             "user@example.com", True),
    # --- read receipts (MDN) ---
    "read_receipt_rfc_mdn_mimekit": Outcome("read-receipt", "199509192301.23456@example.org"),
    # --- vacation replies: RFC 3834, Exchange, iCloud, Mimecast ---
    "vacation_auto_submitted_away_until": Outcome("vacation"),
    "vacation_exchange_automatic_reply": Outcome("vacation"),
    "vacation_icloud_x_apple_action": Outcome("vacation"),
    "vacation_exchange_messagelabs_windows1252": Outcome("vacation"),
    "vacation_auto_submitted_mbox_from_line": Outcome("vacation"),
    "vacation_mimecast_inbox_no_longer_in_use": Outcome("vacation"),
    # --- spam tagged by the receiving server (also list mail: the spam verdict is what matters) ---
    "spam_spamassassin_status_yes_vger": Outcome("spam"),
    # A person's mail the receiving server (Gandi) tagged as spam: stored, never answered.
    "spam_gandi_x_spam_flag_lkml": Outcome("spam"),
    # --- a person ---
    "person_plain_text_chatwoot": None,
}

#: Fixtures without a usable From: the gateway refuses them (there is nobody to store them under),
#: so only their classification is tested here.
NO_SENDER = {"bounce_postfix_empty_from_chatwoot", "bounce_exim_dsn_no_from_mimekit"}


def raw(name: str) -> bytes:
    return (FIXTURES / f"{name}.eml").read_bytes()


def outcome(name: str) -> Outcome | None:
    verdict = classify_bytes(raw(name), {"support.northwind.example"})
    if verdict is None:
        return None
    return Outcome(verdict.kind, verdict.original_message_id, verdict.recipient, verdict.permanent, verdict.failed,
                   verdict.status)


def test_every_fixture_has_an_expected_outcome() -> None:
    on_disk = {p.stem for p in FIXTURES.glob("*.eml")}
    assert on_disk == set(EXPECTED)
    listed = (FIXTURES / "SOURCES.md").read_text(encoding="utf-8")
    assert all(f"| {name}.eml |" in listed for name in on_disk), "every fixture names its origin in SOURCES.md"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_classified_exactly(name: str) -> None:
    assert outcome(name) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(set(EXPECTED) - NO_SENDER))
def test_gateway_marks_it_automatic_with_its_kind(name: str) -> None:
    msg = parse_mime(raw(name), received_at=RECEIVED, our_domains={"support.northwind.example"})
    expected = EXPECTED[name]
    assert msg.automatic is (expected is not None)
    assert msg.meta.get("automatic_kind") == (expected.kind if expected else None)
    if expected is not None and expected.kind in ("bounce", "complaint"):
        report = msg.meta["report"]
        assert (report.get("original_message_id"), report.get("recipient"), report["permanent"]) == (
            expected.original_message_id, expected.recipient, expected.permanent)


# --- the subjects and headers the fixtures do not cover, one per language --------------------------

def mail(headers: str, body: str = "Hello") -> bytes:
    return (f"From: Someone <someone@example.com>\r\nTo: help@support.northwind.example\r\n"
            f"Message-ID: <x1@example.com>\r\n{headers}\r\n\r\n{body}\r\n").encode()


@pytest.mark.parametrize("subject", [
    "Auto reply: Re: order 4471", "Automatic reply: Where is my parcel?", "Out of Office: delivery",
    "Abwesenheitsnotiz", "Automatische Antwort: Rücksendung", "Automatyczna odpowiedź: zwrot",
    "Odpowiedź automatyczna: paczka", "Автоответ: заказ", "Автоматический ответ: возврат",
    "Автоматична відповідь: замовлення", "Автоматичен отговор: поръчка", "Automatinis atsakymas: užsakymas",
    "RE: Out of office (until Monday)",
    # Server tags and reply prefixes in any order, read by shared.text.clean_subject like the router's
    "[SPAM] Fw: ***SPAM*** Re: Abwesenheitsnotiz", "Odp: Automatyczna odpowiedź: zwrot", "Re[2]: Out of office",
])
def test_auto_reply_subjects_in_the_business_languages(subject: str) -> None:
    verdict = classify_bytes(mail(f"Subject: {subject}"), ())
    assert verdict is not None and verdict.kind == "vacation"


@pytest.mark.parametrize("subject", [
    "Out of office chairs: are they in stock?", "Urlaubsreise: Koffer kaputt", "Where is my parcel?",
    "Re: Ваш заказ 4471", "Odpowiedź na reklamację",
])
def test_a_customer_subject_is_not_an_auto_reply(subject: str) -> None:
    assert classify_bytes(mail(f"Subject: {subject}"), ()) is None


@pytest.mark.parametrize(("header", "kind"), [
    ("X-Autoreply: yes", "vacation"), ("X-Autorespond: Vacation", "vacation"), ("X-Apple-Action: VACATION", "vacation"),
    ("Precedence: auto_reply", "vacation"), ("X-Spam-Flag: YES", "spam"), ("X-Spam: Yes", "spam"),
    ("X-Spam-Status: Yes, score=9.1 required=5.0", "spam"), ("X-Auto-Response-Suppress: OOF", "auto"),
])
def test_vendor_headers(header: str, kind: str) -> None:
    verdict = classify_bytes(mail(f"Subject: Hello\r\n{header}"), ())
    assert verdict is not None and verdict.kind == kind


@pytest.mark.parametrize("header", ["X-Spam-Flag: NO", "X-Spam-Status: No, score=0.1 required=5.0", "X-Autoreply: no"])
def test_negative_vendor_headers_are_a_person(header: str) -> None:
    assert classify_bytes(mail(f"Subject: Hello\r\n{header}"), ()) is None


def test_adversarial_input_is_classified_well_under_a_second() -> None:
    # Long runs of the characters the patterns look for: spaces, digits and dots, '@', "Re:".
    nasty = ("Re: " * 5000) + " " * 100_000
    body = ("5." * 200_000) + ("a@" * 100_000) + ("\n" + " " * 500) * 1000
    raw_mail = mail(f"Subject: {nasty}\r\nFrom: MAILER-DAEMON@x.example\r\nX-Failed-Recipients: {'x' * 50_000}",
                    body)
    started = time.perf_counter()
    classify_bytes(raw_mail, ())
    assert time.perf_counter() - started < 1.0


def test_a_delay_notice_and_a_temporary_failure_are_soft() -> None:
    # The Postfix DSN above as Postfix words its delay warning ("Action: delayed", a 4.x.x status)
    # and its give-up after a temporary error ("Action: failed", 4.x.x): neither suppresses anyone.
    raw = (FIXTURES / "bounce_postfix_dsn_dmarc.eml").read_bytes()
    delayed = classify_bytes(raw.replace(b"Action: failed", b"Action: delayed").replace(b"5.7.26", b"4.4.7"), ())
    assert (delayed.kind, delayed.failed, delayed.permanent, delayed.status) == ("bounce", False, False, "4.4.7")
    gave_up = classify_bytes(raw.replace(b"5.7.26", b"4.2.2").replace(b"550", b"452"), ())
    assert (gave_up.kind, gave_up.failed, gave_up.permanent, gave_up.status) == ("bounce", True, False, "4.2.2")
    msg = parse_mime(raw.replace(b"Action: failed", b"Action: delayed").replace(b"5.7.26", b"4.4.7"),
                     received_at=RECEIVED, our_domains=set())
    assert msg.automatic and "bounced_recipient" not in msg.meta  # a delay names nobody to block


def test_a_bounce_whose_part_names_a_charset_with_a_nul_is_still_read() -> None:
    """codecs.lookup raises ValueError (not LookupError) on a NUL in the name: the fuzz tier found
    that one such label made the whole mail a 500 instead of a stored bounce."""
    raw = (b"From: MAILER-DAEMON@mx.example.net\r\nTo: shop@northwind.example\r\n"
           b"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <b1@mx.example.net>\r\n"
           b"Content-Type: text/plain; charset=\"utf\x00-8\"\r\n\r\n"
           b"This is the mail system at host mx.example.net.\r\n"
           b"I'm sorry to have to inform you that your message could not be delivered.\r\n")
    msg = parse_mime(raw, received_at=RECEIVED, our_domains={"support.northwind.example"})
    assert msg.automatic and msg.meta["automatic_kind"] == "bounce"
    assert "could not be delivered" in msg.text

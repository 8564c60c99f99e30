"""The IMAP poller against a real, private Dovecot: order, moves, UIDVALIDITY, crashes, quarantine.

Mail is delivered by IMAP APPEND of the e-mail fixtures; each test has its own account and state
file. The accepted InboundMessages must equal what parse_mime makes of the same bytes — which also
proves the bytes came back from the server unchanged (the no-Message-ID fixture's external_id is a
hash of them).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.gateway.channels.email import parse_mime
from services.gateway.imap_poller import ImapPoller
from shared.contracts import InboundMessage
from tests.support import dovecot

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email"
NOW = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
OURS = {"support.northwind.example"}


def fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.eml").read_bytes()


def expected(name: str) -> InboundMessage:
    return parse_mime(fixture(name), received_at=NOW, our_domains=OURS)


@pytest.fixture(scope="module")
def server():
    srv = dovecot.start()
    yield srv
    srv.stop()


class Intake:
    """The gateway's intake as the poller sees it: a callable that keeps what it was given, and can
    be told to fail (broker and spool both gone) from the n-th call on."""

    def __init__(self, fail_from_call: int | None = None, fail_after_keeping: bool = False):
        self.accepted: list[InboundMessage] = []
        self.calls = 0
        self.fail_from_call = fail_from_call
        self.fail_after_keeping = fail_after_keeping

    def __call__(self, msg: InboundMessage) -> None:
        self.calls += 1
        failing = self.fail_from_call is not None and self.calls >= self.fail_from_call
        if failing and not self.fail_after_keeping:
            raise ConnectionError("intake down: neither the broker nor the spool took it")
        self.accepted.append(msg)
        if failing:
            # Kept downstream, but the poller dies before it hears so (kill -9 right after publish).
            raise ConnectionError("killed after the publish was confirmed")


@pytest.fixture
def account(server):
    return server.new_account()


def make_poller(server, account, tmp_path, accept, **kw) -> ImapPoller:
    user, password = account
    return ImapPoller(server.host, server.port, user, password, state_path=tmp_path / "imap-state.sqlite",
                      accept=accept, our_domains=OURS, clock=lambda: NOW, ssl=False, allow_insecure=True, **kw)


def test_new_mail_is_accepted_in_order_and_moved_to_processed(server, account, tmp_path) -> None:
    names = ["plain_question_en", "koi8r_encoded_subject_ru", "no_message_id", "alternative_with_pdf_attachment"]
    for name in names:
        server.append(account[0], fixture(name))
    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake)

    assert poller.poll_once() == 4
    assert intake.accepted == [expected(n) for n in names]
    assert server.messages(account[0], "INBOX") == []
    assert server.messages(account[0], "Processed") == [fixture(n) for n in names]
    assert server.messages(account[0], "Quarantine") == []  # created, empty

    assert poller.poll_once() == 0  # nothing new: nothing accepted twice
    assert len(intake.accepted) == 4

    server.append(account[0], fixture("thunderbird_reply_bg"))
    assert poller.poll_once() == 1
    assert intake.accepted[-1] == expected("thunderbird_reply_bg")


def test_flags_are_left_alone(server, account, tmp_path) -> None:
    server.append(account[0], fixture("plain_question_en"))
    make_poller(server, account, tmp_path, Intake()).poll_once()
    with server.connect(account[0]) as box:
        box.folder.set("Processed", readonly=True)
        [msg] = box.fetch(mark_seen=False, headers_only=True)
        assert "\\Seen" not in msg.flags  # BODY.PEEK: \Seen belongs to the people who read the box


def test_an_empty_mailbox_polls_to_nothing(server, account, tmp_path) -> None:
    intake = Intake()
    assert make_poller(server, account, tmp_path, intake).poll_once() == 0
    assert intake.accepted == []


def test_uidvalidity_change_restarts_from_the_first_uid(server, account, tmp_path) -> None:
    user = account[0]
    server.append(user, fixture("plain_question_en"), folder="Support")
    server.append(user, fixture("windows1251_uk"), folder="Support")
    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake, folder="Support")
    assert poller.poll_once() == 2
    before = poller.state.get(poller.key)
    assert before is not None and before.last_uid == 2

    # The folder is recreated (a restore, a migration): UIDs start at 1 again under a new UIDVALIDITY.
    with server.connect(user) as box:
        box.folder.delete("Support")
        box.folder.create("Support")
    server.append(user, fixture("utf8_base64_signature_lt"), folder="Support")

    assert poller.poll_once() == 1  # UID 1 ≤ the stored last UID 2, but it is a new mailbox
    assert intake.accepted[-1] == expected("utf8_base64_signature_lt")
    after = poller.state.get(poller.key)
    assert after is not None and after.uidvalidity != before.uidvalidity and after.last_uid == 1


def test_intake_failure_mid_batch_loses_nothing(server, account, tmp_path) -> None:
    names = ["plain_question_en", "html_only_de", "windows1251_uk", "utf8_base64_signature_lt"]
    for name in names:
        server.append(account[0], fixture(name))
    failing = Intake(fail_from_call=3)
    with pytest.raises(ConnectionError):
        make_poller(server, account, tmp_path, failing).poll_once()
    assert [m.external_id for m in failing.accepted] == [expected(n).external_id for n in names[:2]]
    assert server.messages(account[0], "INBOX") == [fixture(n) for n in names[2:]]  # not moved: still queued

    healthy = Intake()
    assert make_poller(server, account, tmp_path, healthy).poll_once() == 2  # a restarted poller, same state
    assert healthy.accepted == [expected(n) for n in names[2:]]
    assert server.messages(account[0], "INBOX") == []
    assert server.messages(account[0], "Processed") == [fixture(n) for n in names]


def test_killed_after_accept_delivers_again_with_the_same_external_id(server, account, tmp_path) -> None:
    """At-least-once: the copy downstream carries the same Message-ID external_id, which the router
    dedupes on — so after dedupe every mail is there exactly once."""
    names = ["plain_question_en", "html_only_de", "no_message_id"]
    for name in names:
        server.append(account[0], fixture(name))
    downstream = Intake(fail_from_call=3, fail_after_keeping=True)
    with pytest.raises(ConnectionError):
        make_poller(server, account, tmp_path, downstream).poll_once()
    downstream.fail_from_call = None
    assert make_poller(server, account, tmp_path, downstream).poll_once() == 1

    ids = [m.external_id for m in downstream.accepted]
    assert ids == [expected(n).external_id for n in names] + [expected("no_message_id").external_id]
    assert list(dict.fromkeys(ids)) == [expected(n).external_id for n in names]


def test_killed_between_recording_and_moving_finishes_the_move(server, account, tmp_path) -> None:
    server.append(account[0], fixture("plain_question_en"))
    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake)
    assert poller.poll_once() == 1
    server.append(account[0], fixture("html_only_de"))  # UID 2
    # As if the last poll died right after recording UID 2 as accepted, before its MOVE.
    state = poller.state.get(poller.key)
    assert state is not None
    poller.state.handled(poller.key, state.uidvalidity, 2, "Processed")

    assert poller.poll_once() == 0  # not accepted again ...
    assert server.messages(account[0], "INBOX") == []  # ... but moved where it belongs
    assert server.messages(account[0], "Processed") == [fixture("plain_question_en"), fixture("html_only_de")]
    assert poller.state.pending_moves(poller.key, state.uidvalidity) == []


def test_unparseable_mail_goes_to_quarantine_and_the_rest_goes_on(server, account, tmp_path) -> None:
    server.append(account[0], fixture("plain_question_en"))
    server.append(account[0], fixture("malformed_no_headers"))
    server.append(account[0], fixture("html_only_de"))
    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake)

    assert poller.poll_once() == 2
    assert intake.accepted == [expected("plain_question_en"), expected("html_only_de")]
    assert server.messages(account[0], "Quarantine") == [fixture("malformed_no_headers")]
    assert server.messages(account[0], "INBOX") == []
    assert poller.poll_once() == 0


def test_mail_over_the_size_limit_is_quarantined_without_download(server, account, tmp_path) -> None:
    server.append(account[0], fixture("alternative_with_pdf_attachment"))
    server.append(account[0], fixture("plain_question_en"))
    intake = Intake()
    limit = len(fixture("plain_question_en")) + 10
    assert make_poller(server, account, tmp_path, intake, max_bytes=limit).poll_once() == 1
    assert intake.accepted == [expected("plain_question_en")]
    assert server.messages(account[0], "Quarantine") == [fixture("alternative_with_pdf_attachment")]


def test_run_polls_until_stopped(server, account, tmp_path) -> None:
    import threading

    from tests.support.wait import until

    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake)
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop, 0.05), daemon=True)
    thread.start()
    try:
        server.append(account[0], fixture("plain_question_en"))
        until(lambda: intake.accepted, timeout=10, message="the running poller to accept the mail")
        server.append(account[0], fixture("html_only_de"))
        until(lambda: len(intake.accepted) == 2, timeout=10, message="the second mail")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()
    assert intake.accepted == [expected("plain_question_en"), expected("html_only_de")]


def test_wrong_password_fails_loudly(server, account, tmp_path) -> None:
    from imap_tools.errors import MailboxLoginError

    poller = ImapPoller(server.host, server.port, account[0], "wrong", state_path=tmp_path / "s.sqlite",
                        accept=Intake(), our_domains=OURS, clock=lambda: NOW, ssl=False, allow_insecure=True)
    with pytest.raises(MailboxLoginError):
        poller.poll_once()


def test_mail_nested_too_deeply_is_quarantined_with_the_reason(server, account, tmp_path, caplog) -> None:
    # Issue 13: 3,000 nested parts exhausted the parser's stack; now a named refusal, not a crash.
    from tests.contract.test_email_mime_depth import nested

    server.append(account[0], nested(3_000))
    server.append(account[0], fixture("plain_question_en"))
    intake = Intake()
    poller = make_poller(server, account, tmp_path, intake)

    with caplog.at_level("WARNING", logger="services.gateway.imap_poller"):
        assert poller.poll_once() == 1
    assert intake.accepted == [expected("plain_question_en")]
    assert server.messages(account[0], "Quarantine") == [nested(3_000)]
    assert [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()] == [
        f"IMAP {poller.key} UID 1 cannot be parsed (the MIME structure is nested too deeply (over 100 levels)):"
        " quarantined"]


def test_the_mailbox_servers_verdict_comes_with_each_mail(server, account, tmp_path) -> None:
    """A Gmail mailbox read over IMAP: mx.google.com's Authentication-Results vouch for the sender
    once that id is configured (channels.email.authserv_ids); the same mail without it does not."""
    raw = ((FIXTURES.parent / "email_auth" / "gmail_dmarc_pass_discourse.txt").read_bytes()
           + b"To: help@support.northwind.example\nSubject: Style guide\nMessage-ID: <imap-auth-1@discoursemail.com>"
           + b"\n\nHardly definitive, but here it is.\n")
    server.append(account[0], raw)
    trusting, plain = Intake(), Intake()
    assert make_poller(server, account, tmp_path, trusting, authserv_ids=["mx.google.com"]).poll_once() == 1
    assert trusting.accepted[0].meta["sender_auth"] == {"verified": True, "method": "dmarc",
                                                        "reason": "dmarc=pass for discoursemail.com"}
    server.append(account[0], raw.replace(b"imap-auth-1", b"imap-auth-2"))
    assert make_poller(server, account, tmp_path / "other", plain).poll_once() == 1
    assert plain.accepted[0].meta["sender_auth"]["verified"] is False

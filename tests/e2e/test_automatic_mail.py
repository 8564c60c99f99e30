"""End to end, services mode (gateway, router and notifier as processes, RabbitMQ, PostgreSQL, a real
SMTP server): a bounce of our own acknowledgement marks that outbox row failed and suppresses the
address, and the agents see it in the customer's conversation; a vacation reply and a spam-tagged
mail open nothing and notify nobody. The automatic mails are real ones (tests/fixtures/email/
automatic/SOURCES.md); the bounce is Postfix's DSN with our acknowledgement's Message-ID and
recipient put where Postfix puts the returned message's, as the receiving server would."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest

from tests.e2e.test_channels import FIXTURES, MAIL, email, fakes, services  # noqa: F401 - fixtures used by name
from tests.support.barrier import at_rest
from tests.support.db import db_count
from tests.support.wait import until

pytestmark = pytest.mark.e2e

AUTOMATIC = FIXTURES / "email" / "automatic"
CUSTOMER = "mark.evans@example.com"


def bounce_of(ack_message_id: str) -> bytes:
    raw = (AUTOMATIC / "bounce_postfix_dsn_dmarc.eml").read_bytes()
    raw = raw.replace(b"<20201113004243.AF578C0196A@smtp.example.jp>", ack_message_id.encode())
    return raw.replace(b"kijitora@google.example.com", CUSTOMER.encode())


def test_a_bounce_of_our_acknowledgement_fails_it_and_suppresses_the_address(services, fakes, pg_url) -> None:  # noqa: F811
    assert email(services, MAIL).status_code == 200
    until(lambda: fakes["smtp"].to(CUSTOMER), timeout=60, message="the acknowledgement")
    [ack] = fakes["smtp"].to(CUSTOMER)
    ack_id = message_from_bytes(ack.content, policy=policy.default)["Message-ID"].strip()

    assert email(services, bounce_of(ack_id)).status_code == 200
    until(lambda: db_count(pg_url, "SELECT count(*) FROM outbox WHERE kind = 'ack' AND delivery_status = 'failed' "
                                   "AND delivery_error LIKE '%5.7.26%'") == 1,
          timeout=60, message="the acknowledgement marked failed with the bounce's reason")
    until(lambda: db_count(pg_url, f"SELECT count(*) FROM suppressions WHERE channel = 'email' "
                                   f"AND address = '{CUSTOMER}' AND until IS NULL") == 1,
          timeout=30, message="the address suppressed")
    # The agents see it: a note in the customer's own conversation, which stays open and owned.
    until(lambda: db_count(pg_url, "SELECT count(*) FROM messages m JOIN conversations c ON c.id = m.conversation_id "
                                   f"WHERE m.direction = 'note' AND c.status = 'open' "
                                   f"AND m.text LIKE 'No more messages are sent to {CUSTOMER}%'") == 1,
          timeout=30, message="the suppression shown in the customer's conversation")
    # The bounce itself is stored as automatic mail: no owner, no promise, nothing sent.
    assert db_count(pg_url, "SELECT count(*) FROM conversations WHERE status = 'automatic' "
                            "AND owner_id IS NULL") == 1
    assert db_count(pg_url, "SELECT count(*) FROM promises p JOIN conversations c ON c.id = p.conversation_id "
                            "WHERE c.status = 'automatic'") == 0
    assert fakes["smtp"].to(CUSTOMER) == [ack]


def test_a_vacation_reply_and_spam_open_nothing_and_notify_nobody(services, fakes, pg_url,  # noqa: F811
                                                                 rabbit_url) -> None:
    assert email(services, MAIL).status_code == 200
    until(lambda: fakes["smtp"].to(CUSTOMER), timeout=60, message="the acknowledgement")
    at_rest(rabbit_url, pg_url)  # whatever the customer's mail notifies (an agent on shift) has gone out
    before = (len(fakes["smtp"].received), db_count(pg_url, "SELECT count(*) FROM agent_notices"),
              db_count(pg_url, "SELECT count(*) FROM promises"))

    for name in ("vacation_exchange_automatic_reply", "spam_spamassassin_status_yes_vger"):
        assert email(services, (AUTOMATIC / f"{name}.eml").read_bytes()).status_code == 200
    until(lambda: db_count(pg_url, "SELECT count(*) FROM conversations WHERE status = 'automatic'") == 2,
          timeout=60, message="both stored as automatic mail")
    at_rest(rabbit_url, pg_url)  # anything they would cause (an acknowledgement, a notice) has happened
    assert db_count(pg_url, "SELECT count(*) FROM conversations WHERE status = 'open'") == 1  # the customer's only
    assert (len(fakes["smtp"].received), db_count(pg_url, "SELECT count(*) FROM agent_notices"),
            db_count(pg_url, "SELECT count(*) FROM promises")) == before
    assert db_count(pg_url, "SELECT count(*) FROM outbox o JOIN conversations c ON c.id = o.conversation_id "
                            "WHERE c.status = 'automatic'") == 0

"""End to end, services mode: a hostile 100 k-character mail through the relay does not hold up the
next customer (issue 13: a 6 KB mail of whitespace runs delayed the next Telegram message by 15 s).

The Telegram acknowledgement after the mail is compared with one sent without it, in the same test
on the same stack; the margin is generous (three times the baseline plus three seconds), since the
quadratic strippers took minutes on a body like this one.
"""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.db import db_count
from tests.support.procs import running_services
from tests.support.telegram import post, update
from tests.support.wait import until

pytestmark = pytest.mark.e2e

RELAY_SECRET = "relay-secret"


@pytest.fixture
def services(rabbit_url, pg_url, fake_bot_api, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fake_bot_api.base_url, extra={"EMAIL_RELAY_SECRET": RELAY_SECRET}) as svc:
        yield svc


def hostile_body() -> str:
    """100,000 characters of what backtracking regexes choke on, as lines a quote stripper reads."""
    lines = ["Hello, where is my parcel?", " " * 16000 + "x", "\t" * 16000 + "x", "-" * 8000 + "x", "_" * 8000 + "x",
             ">" * 8000 + "x", "thanks" + " " * 8000 + "!x", "re" + " " * 8000 + "x", "<" + "a@" * 4000,
             " ." * 4000 + "x", "Kind regards " * 600, "-- " + " " * 4000 + "original message" + " " * 4000 + "x"]
    body = "\n".join(lines)
    return (body + "\n" + " \t-_>" * 20_000)[:100_000]


def relay(svc, raw: bytes) -> httpx.Response:
    return httpx.post(f"{svc.gateway}/webhooks/email", content=raw, timeout=30,
                      headers={"X-Switchboard-Relay-Secret": RELAY_SECRET, "Content-Type": "message/rfc822"})


def acknowledged_after(svc, fake_bot_api, update_id: int, user: int) -> float:
    started = time.monotonic()
    assert post(svc, update(update_id, user, "Where is my parcel? Order 48213.", "Ann", "en")).status_code == 200
    until(lambda: fake_bot_api.sent_to(user), timeout=120, message=f"the acknowledgement to {user}")
    return time.monotonic() - started


def test_a_hostile_mail_does_not_hold_up_the_next_telegram_message(services, fake_bot_api, pg_url) -> None:
    baseline = acknowledged_after(services, fake_bot_api, 930001, 8100001)

    body = hostile_body()
    assert len(body) == 100_000
    mail = ("From: Mallory <mallory@example.com>\r\nTo: help@northwind.example\r\nSubject: " + "re " * 300
            + "\r\nMessage-ID: <hostile-100k@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            + body.replace("\n", "\r\n")).encode()
    accepted = relay(services, mail)
    assert accepted.status_code == 200, accepted.text

    after_mail = acknowledged_after(services, fake_bot_api, 930002, 8100002)
    assert after_mail <= 3 * baseline + 3.0, f"{after_mail:.1f} s after the mail, {baseline:.1f} s without it"
    # The mail itself was routed too, and stored whole for the agent.
    until(lambda: db_count(pg_url, "SELECT count(*) FROM messages WHERE channel = 'email'") == 1, timeout=60,
          message="the hostile mail stored")

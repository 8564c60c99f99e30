"""End to end, services mode: three processes, the real RabbitMQ and PostgreSQL, a fake Bot API.

A signed Telegram update becomes one stored message and exactly one acknowledgement at the fake
Bot API; redelivery changes nothing; the router killed mid-stream loses nothing.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.db import db_count
from tests.support.procs import TELEGRAM_SECRET, running_services, to_customers
from tests.support.telegram import post, update
from tests.support.wait import until

pytestmark = pytest.mark.e2e


@pytest.fixture
def services(rabbit_url, pg_url, fake_bot_api, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fake_bot_api.base_url) as svc:
        yield svc


def test_update_becomes_one_message_and_one_acknowledgement(services, fake_bot_api, pg_url) -> None:
    first = update(900001, 5012345678, "Добрий день! Де моя посилка? Замовлення 48213.")
    assert post(services, first).status_code == 200
    until(lambda: fake_bot_api.sent_to(5012345678), timeout=30, message="the acknowledgement")
    [ack] = fake_bot_api.sent_to(5012345678)
    assert "Olena" in ack.text

    # Telegram delivers the same update again: still one message, one acknowledgement.
    assert post(services, first).status_code == 200
    # A later update from someone else is processed after the duplicate (one queue, in order).
    assert post(services, update(900002, 6023456789, "Hi, where is my parcel?", "Mark", "en")).status_code == 200
    until(lambda: fake_bot_api.sent_to(6023456789), timeout=30, message="the second customer's acknowledgement")
    assert len(fake_bot_api.sent_to(5012345678)) == 1
    assert db_count(pg_url, "SELECT count(*) FROM messages WHERE external_id = '123456:900001'") == 1
    assert db_count(pg_url, "SELECT count(*) FROM conversations") == 2
    assert db_count(pg_url, "SELECT count(*) FROM outbox WHERE status = 'sent' AND kind <> 'notice'") == 2


def test_rejected_requests_publish_nothing(services, fake_bot_api, pg_url) -> None:
    bad = post(services, update(900010, 111, "hello"), secret="wrong")
    assert bad.status_code == 403 and bad.json()["error"] == "forbidden"
    missing = httpx.post(f"{services.gateway}/webhooks/telegram", json=update(900011, 112, "hello"), timeout=10)
    assert missing.status_code == 403
    malformed = httpx.post(f"{services.gateway}/webhooks/telegram", content=b'{"update_id": 1, "message": ',
                           headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET,
                                    "Content-Type": "application/json"}, timeout=10)
    assert malformed.status_code == 400 and "not JSON" in malformed.json()["message"]
    huge = httpx.post(f"{services.gateway}/webhooks/telegram", content=b"x" * (4 * 1024 * 1024),
                      headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}, timeout=10)
    assert huge.status_code == 413
    # A valid one afterwards is the only thing that gets through.
    assert post(services, update(900012, 113, "Where is my parcel?", "Ann", "en")).status_code == 200
    until(lambda: fake_bot_api.sent_to(113), timeout=30, message="the valid update's acknowledgement")
    assert db_count(pg_url, "SELECT count(*) FROM messages") == 1
    assert [s.chat_id for s in to_customers(fake_bot_api.sent)] == ["113"]


def test_router_killed_mid_stream_loses_nothing(services, fake_bot_api, pg_url) -> None:
    n = 40
    users = [700000 + i for i in range(n)]
    for i, user in enumerate(users[: n // 2]):
        assert post(services, update(910000 + i, user, f"Where is my order {i}?", f"C{i}", "en")).status_code == 200
    until(lambda: len(to_customers(fake_bot_api.sent)) >= 3, timeout=30, message="the first acknowledgements")
    services.kill("router")  # SIGKILL: no chance to finish cleanly
    for i, user in enumerate(users[n // 2:], start=n // 2):
        assert post(services, update(910000 + i, user, f"Where is my order {i}?", f"C{i}", "en")).status_code == 200
    services.start("router")
    until(lambda: len(to_customers(fake_bot_api.sent)) >= n, timeout=60, message=f"{n} acknowledgements")
    # A sentinel behind everything: once it is acknowledged, any redelivered duplicate was handled.
    assert post(services, update(919999, 799999, "sentinel", "S", "en")).status_code == 200
    until(lambda: fake_bot_api.sent_to(799999), timeout=30, message="the sentinel's acknowledgement")
    assert sorted(int(s.chat_id) for s in to_customers(fake_bot_api.sent)) == users + [799999]
    assert db_count(pg_url, "SELECT count(*) FROM messages") == n + 1


def test_an_update_dated_two_days_ago_gets_a_promise_in_the_future_and_the_true_hours(
        services, fake_bot_api, pg_url, example_config) -> None:
    """Telegram redelivers an update two days late (a webhook outage on our side): the promise
    starts when the gateway accepted it, and every sentence of the acknowledgement is true when
    it is sent — the hours, whether we are open now, when we open next, a time still ahead."""
    from datetime import UTC, datetime

    from services.notifier.texts import format_weekly_hours, format_when

    two_days_ago = int(time.time()) - 2 * 86400
    old = update(900020, 5099887766, "Hi, where is my parcel? Order 48213.", "Mark", "en")
    old["message"]["date"] = two_days_ago
    posted = datetime.now(UTC)
    assert post(services, old).status_code == 200
    until(lambda: fake_bot_api.sent_to(5099887766), timeout=30, message="the acknowledgement")
    [ack] = fake_bot_api.sent_to(5099887766)
    sent = datetime.fromtimestamp(ack.at, UTC)

    engine = create_engine(pg_url)
    try:
        with engine.connect() as conn:
            received, due, details = conn.execute(text(
                "SELECT m.received_at, c.promise_due, m.details FROM messages m"
                " JOIN conversations c ON c.id = m.conversation_id WHERE m.external_id = '123456:900020'")).one()
    finally:
        engine.dispose()
    received, due = (v if v.tzinfo else v.replace(tzinfo=UTC) for v in (received, due))
    assert posted - timedelta(seconds=5) <= received <= sent  # arrival: when the gateway took it
    assert details["sent_at"] == datetime.fromtimestamp(two_days_ago, UTC).isoformat()  # Telegram's date, kept
    assert due > sent  # the promise is ahead of the customer, never "already breached"

    calendar = example_config.business_calendar
    now = sent.astimezone(calendar.tz)
    assert f"will reply to you personally {format_when(due.astimezone(calendar.tz), now, 'en', mode='by')}." \
        in ack.text
    assert f"Our working hours: {format_weekly_hours(calendar.weekly_hours, 'en')}" in ack.text
    if calendar.is_open(now):
        assert "closed" not in ack.text
    else:
        reopens = format_when(calendar.next_opening(now), now, "en", mode="at")
        assert f"We are closed at the moment and will be back {reopens}." in ack.text


def test_a_business_chat_is_answered_through_its_connection_and_a_bots_message_publishes_nothing(
        services, fake_bot_api, pg_url) -> None:
    bot = update(900030, 87654321, "Hi, world!", "OtherBot", "en")
    bot["message"]["from"]["is_bot"] = True
    answered = post(services, bot)
    assert answered.status_code == 200 and answered.json()["accepted"] == []  # not a 400 any more

    business = {"update_id": 900031, "business_message": {
        "business_connection_id": "AbCdEfGh123456-business", "message_id": 771, "date": int(time.time()),
        "from": {"id": 5012345001, "is_bot": False, "first_name": "Olena", "language_code": "uk"},
        "chat": {"id": 5012345001, "type": "private", "first_name": "Olena"},
        "text": "Добрий день! Чи є ця куртка в розмірі M?"}}
    assert post(services, business).status_code == 200
    until(lambda: fake_bot_api.sent_to(5012345001), timeout=30, message="the business chat's acknowledgement")
    [ack] = fake_bot_api.sent_to(5012345001)
    assert ack.business_connection_id == "AbCdEfGh123456-business"  # the customer sees the business account
    assert db_count(pg_url, "SELECT count(*) FROM messages") == 1  # the bot's message was never stored

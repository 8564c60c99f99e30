"""End to end, services mode: the notifier's promises to customers.

- A message whose phone says Friday 17:55 is promised from its arrival at the gateway, and the
  acknowledgement names that promise in the customer's language, by name.
- The Bot API answers 500 and 429 for a whole minute: afterwards every acknowledgement is delivered,
  once, and an agent's two replies written during the outage arrive in the order they were written.
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.test_surveys import Agent
from tests.support.barrier import at_rest
from tests.support.db import db_count, query
from tests.support.procs import Services, running_services
from tests.support.telegram import post as post_update
from tests.support.telegram import update
from tests.support.wait import until

pytestmark = pytest.mark.e2e

WARSAW = ZoneInfo("Europe/Warsaw")


def weekdays_only(config: dict) -> None:
    """The example business, open Monday to Friday 09:00-17:00 only, delivery promised in 4 h."""
    config["calendars"]["business"]["hours"].pop("sat", None)
    for agent in config["agents"]:
        agent["hours"].pop("sat", None)


@pytest.fixture
def services(rabbit_url, pg_url, fake_bot_api, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fake_bot_api.base_url, edit_config=weekdays_only) as svc:
        yield svc


def post(svc: Services, body: dict) -> None:
    r = post_update(svc, body)
    assert r.status_code == 200, r.text


def test_a_message_sent_on_friday_evening_is_promised_from_its_arrival_in_the_customers_language_by_name(
        services, fake_bot_api, pg_url, tmp_path) -> None:
    """The phone says Friday 17:55; the promise counts from when the gateway took the message (the
    device's clock is kept, never trusted), and the acknowledgement names that promise in Polish,
    by name, worded for the moment it is sent — whatever day this test runs on."""
    from datetime import UTC, timedelta

    from shared.config import load_config
    from shared.locale import format_when

    friday = datetime(2026, 11, 27, 17, 55, tzinfo=WARSAW)  # the provider's timestamp of the message
    posted = datetime.now(UTC)
    post(services, update(920001, 5012345001, "Dzień dobry, gdzie jest moja paczka? Zamówienie 48213.",
                          name="Piotr", lang="pl", at=friday))
    until(lambda: fake_bot_api.sent_to(5012345001), timeout=30, message="the acknowledgement")
    [ack] = fake_bot_api.sent_to(5012345001)
    sent = datetime.fromtimestamp(ack.at, UTC)
    [(due,)] = query(pg_url, "SELECT promise_due FROM conversations")
    due = due if due.tzinfo else due.replace(tzinfo=UTC)
    assert due > sent > posted - timedelta(seconds=5)  # from arrival, still ahead: not from Friday
    calendar = load_config(tmp_path / "switchboard.yaml").business_calendar
    assert "Piotr" in ack.text
    assert format_when(due.astimezone(calendar.tz), sent.astimezone(calendar.tz), "pl", mode="by") in ack.text, ack.text
    assert "paczk" in ack.text or "dostaw" in ack.text  # what we understood: a delivery, in Polish


def test_a_minute_of_provider_errors_loses_nothing_and_keeps_each_conversations_order(
        services, fake_bot_api, pg_url, rabbit_url) -> None:
    customers = [5012346000 + i for i in range(6)]
    post(services, update(930000, customers[0], "Hi, where is my parcel? Order 48213", name="Mark", lang="en"))
    until(lambda: fake_bot_api.sent_to(customers[0]), timeout=30, message="the first acknowledgement")
    [(conversation_id,)] = query(pg_url, "SELECT id FROM conversations")
    agent = Agent(services, pg_url, conversation_id)

    fake_bot_api.fail_for(60, statuses=(500, 429))  # from now on, for a minute, every send fails
    for i, user in enumerate(customers[1:], start=1):
        post(services, update(930000 + i, user, "Hello, my order has not arrived yet.", name="Ann", lang="en"))
    agent.post("reply", {"text": "First: your parcel left our warehouse on Monday."})
    agent.post("reply", {"text": "Second: the courier will call you before noon."})
    # Every one of the five acknowledgements and two replies has been tried at least once (or held
    # behind the one before it), all during the outage.
    until(lambda: db_count(pg_url, "SELECT count(*) FROM outbox WHERE kind IN ('ack', 'reply') "
                                   "AND status = 'pending' AND attempts >= 1") == 7,
          timeout=60, message="every message tried during the outage")
    assert all(len(fake_bot_api.sent_to(u)) == 0 for u in customers[1:])  # nothing got through yet

    try:
        until(lambda: all(fake_bot_api.sent_to(u) for u in customers[1:]) and len(fake_bot_api.sent_to(customers[0])) == 3,
              timeout=400, interval=1, message="every message delivered after the outage")
    finally:
        print("outbox:", query(pg_url, "SELECT id, kind, address, status, attempts, left(last_error, 80) FROM outbox"
                                       " ORDER BY id"))
    at_rest(rabbit_url, pg_url)
    assert [len(fake_bot_api.sent_to(u)) for u in customers] == [3, 1, 1, 1, 1, 1]
    texts = [m.text for m in fake_bot_api.sent_to(customers[0])]
    assert texts[1].startswith("First:") and texts[2].startswith("Second:"), texts
    assert fake_bot_api.failed_sends() > 0  # the outage really happened

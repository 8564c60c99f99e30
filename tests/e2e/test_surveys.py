"""End to end, services mode (three processes, RabbitMQ, PostgreSQL, fake Bot API and Twilio API):
a reply by the owner and a resolve → exactly one survey after the delay, with inline buttons;
pressing twice records one answer; STOP by SMS → no survey on the next resolve, on any channel.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from services.router.operations import issue_token
from shared.db import make_engine, session_factory, transaction
from shared.runtime import utc_now
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support.barrier import at_rest
from tests.support.db import db_count, query
from tests.support.procs import TELEGRAM_SECRET, Services, running_services
from tests.support.wait import until

pytestmark = pytest.mark.e2e

USER = 6023456789
PHONE = "+48601234567"


@pytest.fixture
def twilio_api():
    fake = FakeTwilioApi().start()
    yield fake
    fake.stop()


def quick_surveys(config: dict) -> None:
    """A two-second survey delay and no cooldown, so that only the opt-out can stop the second survey."""
    config["survey"] = {"delay": "2s", "cooldown": "1s", "nps_sample": 0.0}


@pytest.fixture
def services(rabbit_url, pg_url, fake_bot_api, twilio_api, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fake_bot_api.base_url, edit_config=quick_surveys, extra={
                              "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                              "TWILIO_API_BASE": twilio_api.base_url, "SURVEY_SECRET": "e2e-survey-secret-0123456789",
                          }) as svc:
        yield svc


def telegram(svc: Services, update: dict) -> httpx.Response:
    return httpx.post(f"{svc.gateway}/webhooks/telegram", json=update, timeout=10,
                      headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})


def message(update_id: int, **content) -> dict:
    return {"update_id": update_id, "message": {
        "message_id": update_id % 1000, "date": int(time.time()),
        "from": {"id": USER, "is_bot": False, "first_name": "Mark", "language_code": "en"},
        "chat": {"id": USER, "type": "private", "first_name": "Mark"}, **content}}


def press(update_id: int, data: str) -> dict:
    return {"update_id": update_id, "callback_query": {
        "id": f"cq-{update_id}", "from": {"id": USER, "is_bot": False, "first_name": "Mark"},
        "message": {"message_id": 90, "date": int(time.time()), "chat": {"id": USER, "type": "private"}},
        "chat_instance": "-88111", "data": data}}


def sms(svc: Services, body: str, sid: str) -> httpx.Response:
    path = "/webhooks/twilio/sms"
    form = {"MessageSid": sid, "AccountSid": ACCOUNT_SID, "From": PHONE, "To": "+48221002030", "Body": body,
            "NumMedia": "0"}
    signature = RequestValidator(AUTH_TOKEN).compute_signature(svc.env["PUBLIC_BASE_URL"] + path, form)
    return httpx.post(f"{svc.gateway}{path}", content=urlencode(form), timeout=10,
                      headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})


class Agent:
    """The conversation's owner (or the team lead, for a queued one) on the agent API."""

    def __init__(self, svc: Services, pg_url: str, conversation_id: str):
        [(owner,)] = query(pg_url, f"SELECT owner_id FROM conversations WHERE id = '{conversation_id}'")
        engine = make_engine(pg_url)
        with transaction(session_factory(engine)) as s:
            self.token = issue_token(s, owner or "anna", utc_now())
        engine.dispose()
        self.base = f"http://127.0.0.1:{svc.ports['router']}/api/v1/conversations/{conversation_id}"

    def post(self, action: str, body: dict | None = None) -> httpx.Response:
        r = httpx.post(f"{self.base}/{action}", json=body or {}, timeout=10,
                       headers={"Authorization": f"Bearer {self.token}"})
        assert r.status_code in (200, 201), r.text
        return r


def surveys_to_user(fake_bot_api) -> list:
    return [m for m in fake_bot_api.sent_to(USER) if m.reply_markup and "inline_keyboard" in m.reply_markup]


def test_one_survey_after_a_human_reply_one_answer_and_stop_is_honoured(services, fake_bot_api, twilio_api, pg_url,
                                                                        rabbit_url):
    # The customer writes, then shares their own contact: Telegram user and phone are one customer.
    assert telegram(services, message(810001, text="Hi, where is my parcel? Order 48213")).status_code == 200
    until(lambda: fake_bot_api.sent_to(USER), timeout=30, message="the acknowledgement")
    contact = {"contact": {"phone_number": PHONE.lstrip("+"), "first_name": "Mark", "user_id": USER}}
    assert telegram(services, message(810002, **contact)).status_code == 200
    until(lambda: db_count(pg_url, "SELECT count(*) FROM messages") == 2, timeout=30, message="both stored")
    [(conversation_id,)] = query(pg_url, "SELECT id FROM conversations")

    agent = Agent(services, pg_url, conversation_id)
    agent.post("reply", {"text": "Your parcel is with the courier and arrives tomorrow."})
    until(lambda: len(fake_bot_api.sent_to(USER)) == 2, timeout=30, message="the agent's reply")
    agent.post("resolve")

    # Exactly one survey, after the delay, with CSAT buttons 1-5.
    until(lambda: surveys_to_user(fake_bot_api), timeout=30, message="the survey")
    [survey] = surveys_to_user(fake_bot_api)
    buttons = [b for row in survey.reply_markup["inline_keyboard"] for b in row]
    assert [b["text"] for b in buttons] == ["1", "2", "3", "4", "5"]
    assert "How would you rate" in survey.text

    # The customer presses 4: acknowledged to Telegram in the webhook's response, recorded once.
    r = telegram(services, press(810003, buttons[3]["callback_data"]))
    assert r.status_code == 200
    assert r.json() == {"method": "answerCallbackQuery", "callback_query_id": "cq-810003"}
    until(lambda: query(pg_url, "SELECT status, score FROM surveys") == [("answered", 4)], timeout=30,
          message="the answer recorded")
    until(lambda: len(fake_bot_api.sent_to(USER)) == 4, timeout=30, message="the thanks")
    assert fake_bot_api.sent_to(USER)[-1].text.startswith("Thank you for your rating")

    # A second press (another button) records nothing and is still acknowledged.
    r = telegram(services, press(810004, buttons[0]["callback_data"]))
    assert r.json()["method"] == "answerCallbackQuery"

    # STOP by SMS from the customer's phone: no more surveys, on any channel. It opens no conversation.
    assert sms(services, "STOP", "SM5f0c2a9e8b7d6c5b4a39281706f5e4d3").status_code == 200
    until(lambda: db_count(pg_url, "SELECT count(*) FROM survey_opt_outs") == 1, timeout=30, message="the opt-out")
    assert query(pg_url, "SELECT status, score FROM surveys") == [("answered", 4)]  # the second press: nothing
    assert db_count(pg_url, "SELECT count(*) FROM conversations") == 1

    # The customer writes again, the agent answers and resolves: no survey this time.
    assert telegram(services, message(810005, text="One more question: can I change the address?")).status_code == 200
    until(lambda: query(pg_url, "SELECT opening, status FROM conversations") == [(2, "open")], timeout=30,
          message="the conversation reopened")
    agent.post("reply", {"text": "Yes, done."})
    agent.post("resolve")
    until(lambda: db_count(pg_url, "SELECT count(*) FROM surveys") == 2, timeout=30, message="the second resolve")
    # Past the delay, the survey decided (nothing scheduled any more), and whatever it sent has left.
    at_rest(rabbit_url, pg_url,
            also=lambda: db_count(pg_url, "SELECT count(*) FROM surveys WHERE status = 'scheduled'") == 0)
    assert query(pg_url, "SELECT opening, status FROM surveys ORDER BY opening") == [(1, "answered"), (2, "skipped")]
    assert len(surveys_to_user(fake_bot_api)) == 1
    assert twilio_api.sent_to(PHONE) == []

"""End to end, services mode: a correctly signed message on each of the seven channels reaches the router and gets
exactly one acknowledgement on its own channel — at the fake Bot API, the fake Twilio API, the fake
Graph API and a real SMTP server (aiosmtpd). A provider's redelivery changes nothing; an auto-reply
never gets an acknowledgement, and our own acknowledgement fed back in (another Switchboard, or a
forwarding loop) is not answered either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email import message_from_bytes, policy
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from twilio.request_validator import RequestValidator

from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support.barrier import at_rest
from tests.support.db import db_count
from tests.support.procs import ROOT, TELEGRAM_SECRET, Services, running_services, to_customers
from tests.support.smtp import SmtpServer
from tests.support.wait import until

pytestmark = pytest.mark.e2e

META_SECRET = "meta-app-secret"
RELAY_SECRET = "relay-secret"
WA_NUMBER_ID = "106540352242922"
FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture
def fakes(fake_bot_api):
    twilio, graph, smtp = FakeTwilioApi().start(), FakeGraphApi().start(), SmtpServer().start()
    yield {"telegram": fake_bot_api, "twilio": twilio, "graph": graph, "smtp": smtp}
    twilio.stop()
    graph.stop()
    smtp.stop()


def all_channels_active(config: dict) -> None:
    """Every channel active (the example redirects Instagram)."""
    for channel in config["channels"].values():
        channel["mode"] = "active"
        channel.pop("redirect_to", None)


@pytest.fixture
def services(rabbit_url, pg_url, fakes, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fakes["telegram"].base_url, edit_config=all_channels_active, extra={
                              "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                              "TWILIO_API_BASE": fakes["twilio"].base_url,
                              "META_APP_SECRET": META_SECRET, "META_VERIFY_TOKEN": "verify-me",
                              "META_PAGE_TOKEN": "page-token", "WHATSAPP_TOKEN": "wa-token",
                              "META_GRAPH_BASE": fakes["graph"].base_url,
                              "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(fakes["smtp"].port), "SMTP_SECURITY": "none",
                              "EMAIL_RELAY_SECRET": RELAY_SECRET,
                          }) as svc:
        yield svc


# --- one signed request per channel, as each provider sends it -----------------------------------

def telegram(svc: Services) -> httpx.Response:
    body = {"update_id": 700001, "message": {
        "message_id": 17, "date": int(time.time()), "text": "Добрий день! Де моя посилка? Замовлення 48213.",
        "from": {"id": 5012345678, "is_bot": False, "first_name": "Olena", "language_code": "uk"},
        "chat": {"id": 5012345678, "type": "private", "first_name": "Olena"}}}
    return httpx.post(f"{svc.gateway}/webhooks/telegram", json=body, timeout=10,
                      headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})


def twilio(svc: Services, path: str, fixture: str) -> httpx.Response:
    form = dict(parse_qsl((FIXTURES / fixture).read_text().strip(), keep_blank_values=True))
    signature = RequestValidator(AUTH_TOKEN).compute_signature(svc.env["PUBLIC_BASE_URL"] + path, form)
    return httpx.post(f"{svc.gateway}{path}", content=urlencode(form), timeout=10,
                      headers={"X-Twilio-Signature": signature,
                               "Content-Type": "application/x-www-form-urlencoded"})


def sms(svc: Services) -> httpx.Response:
    return twilio(svc, "/webhooks/twilio/sms", "sms/sms_polish.txt")


def voicemail(svc: Services) -> list[httpx.Response]:
    """A caller out of hours leaves a voicemail: the recording, then its transcription."""
    return [twilio(svc, "/webhooks/twilio/voice/recording", "phone/recording_completed.txt"),
            twilio(svc, "/webhooks/twilio/voice/transcription", "phone/transcription_completed.txt")]


def meta(svc: Services, payload: dict) -> httpx.Response:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return httpx.post(f"{svc.gateway}/webhooks/meta", content=body, timeout=10,
                      headers={"X-Hub-Signature-256": signature, "Content-Type": "application/json"})


def messenger_payload(obj: str, psid: str, mid: str, text: str) -> dict:
    now = int(time.time() * 1000)
    return {"object": obj, "entry": [{"id": "104512345678901", "time": now, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": "104512345678901"}, "timestamp": now,
        "message": {"mid": mid, "text": text}}]}]}


def whatsapp_payload() -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "48732125401", "phone_number_id": WA_NUMBER_ID},
            "contacts": [{"profile": {"name": "Rūta Petrauskienė"}, "wa_id": "37061234567"}],
            "messages": [{"from": "37061234567", "id": "wamid.E2E-0001", "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": "Laba diena, užsakymas 48213 dar neatėjo. Kada jį gausiu?"}}],
        }}]}]}


def email(svc: Services, raw: bytes) -> httpx.Response:
    return httpx.post(f"{svc.gateway}/webhooks/email", content=raw, timeout=10,
                      headers={"X-Switchboard-Relay-Secret": RELAY_SECRET, "Content-Type": "message/rfc822"})


MAIL = (FIXTURES / "email" / "plain_question_en.eml").read_bytes()


def send_all(svc: Services) -> list[httpx.Response]:
    return [
        telegram(svc),
        sms(svc),
        meta(svc, messenger_payload("page", "7712345678901234", "m_E2E-messenger-1",
                                    "Hallo, mein Paket ist seit einer Woche unterwegs. Wo ist es?")),
        meta(svc, messenger_payload("instagram", "17841400000000001", "m_E2E-instagram-1",
                                    "Hi! Is the rain jacket still in stock in size M?")),
        meta(svc, whatsapp_payload()),
        email(svc, MAIL),
        *voicemail(svc),
    ]


def acks(fakes) -> dict[str, int]:
    graph: FakeGraphApi = fakes["graph"]
    return {
        "telegram": len(fakes["telegram"].sent_to(5012345678)),
        "sms": len(fakes["twilio"].sent_to("+48601234567")),
        "messenger": len([s for s in graph.sent_to("7712345678901234")]),
        "instagram": len([s for s in graph.sent_to("17841400000000001")]),
        "whatsapp": len(graph.sent_to("37061234567")),
        "email": len(fakes["smtp"].to("mark.evans@example.com")),
        "phone": len(fakes["twilio"].sent_to("+442071838750")),  # a voicemail is answered by SMS
    }


def test_every_channel_gets_exactly_one_acknowledgement_on_its_own_channel(services, fakes, pg_url, rabbit_url) -> None:
    for response in send_all(services):
        assert response.status_code == 200, response.text
    until(lambda: all(n >= 1 for n in acks(fakes).values()), timeout=60,
          message=lambda: f"an acknowledgement on every channel, got {acks(fakes)}")

    # Every provider delivers the same events again: nothing new is stored or sent.
    for response in send_all(services):
        assert response.status_code == 200, response.text
    at_rest(rabbit_url, pg_url)  # the redeliveries are through: any (wrong) answer to them has left
    assert acks(fakes) == dict.fromkeys(acks(fakes), 1)
    assert db_count(pg_url, "SELECT count(*) FROM messages") == 7
    assert db_count(pg_url, "SELECT count(*) FROM conversations") == 7
    # The voicemail is one message with its transcript, and one call-back task for its owner.
    assert db_count(pg_url, "SELECT count(*) FROM callback_tasks") == 1
    assert db_count(pg_url, "SELECT count(*) FROM messages WHERE channel = 'phone'"
                            " AND text LIKE '%courier never came%'") == 1

    # Each answer is in the customer's language and on the number/page it wrote to.
    [sms_ack] = fakes["twilio"].sent_to("+48601234567")
    assert sms_ack.from_ == "+48732125400"
    [wa] = fakes["graph"].sent_to("37061234567")
    assert wa.target == WA_NUMBER_ID
    [mail] = fakes["smtp"].to("mark.evans@example.com")
    parsed = message_from_bytes(mail.content, policy=policy.default)
    assert parsed["Auto-Submitted"] == "auto-replied"
    assert parsed["In-Reply-To"] == "<CAF7x3Qk2p9zrV1mE8d0hYb+Jd3=Q@mail.example.com>"
    assert parsed["Subject"].startswith("Re: Where is my order #48213? [SB-")
    assert parsed["Message-ID"].endswith("@support.northwind.example>")


def test_automatic_mail_and_our_own_acknowledgement_are_never_answered(services, fakes, pg_url, rabbit_url) -> None:
    assert email(services, MAIL).status_code == 200
    until(lambda: fakes["smtp"].to("mark.evans@example.com"), timeout=60, message="the acknowledgement")
    [ack] = fakes["smtp"].to("mark.evans@example.com")

    # An out-of-office answer to it, and our acknowledgement itself coming back (a second
    # Switchboard, a forwarding rule): both are stored, neither is answered.
    assert email(services, (FIXTURES / "email" / "auto_reply_out_of_office.eml").read_bytes()).status_code == 200
    assert email(services, ack.content).status_code == 200
    until(lambda: db_count(pg_url, "SELECT count(*) FROM messages") == 3, timeout=30,
          message="all three mails stored")
    at_rest(rabbit_url, pg_url)
    assert to_customers(fakes["smtp"].received) == [ack]


def test_bad_signatures_are_refused_on_every_channel_and_nothing_is_stored(services, fakes, pg_url, rabbit_url) -> None:
    refused = [
        httpx.post(f"{services.gateway}/webhooks/telegram", json={"update_id": 1}, timeout=10,
                   headers={"X-Telegram-Bot-Api-Secret-Token": "wrong"}),
        httpx.post(f"{services.gateway}/webhooks/twilio/sms", content="From=%2B48601234567&Body=hi", timeout=10,
                   headers={"X-Twilio-Signature": "forged", "Content-Type": "application/x-www-form-urlencoded"}),
        httpx.post(f"{services.gateway}/webhooks/meta", content=json.dumps(whatsapp_payload()), timeout=10,
                   headers={"X-Hub-Signature-256": "sha256=" + "0" * 64, "Content-Type": "application/json"}),
        httpx.post(f"{services.gateway}/webhooks/email", content=MAIL, timeout=10,
                   headers={"X-Switchboard-Relay-Secret": "guess"}),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert all(r.json()["error"] == "forbidden" for r in refused)
    at_rest(rabbit_url, pg_url)
    assert db_count(pg_url, "SELECT count(*) FROM messages") == 0

"""Survey answers at the gateway: one test per fixture (tests/fixtures/surveys/) — a pressed
Telegram button, a Messenger quick reply or postback button, a WhatsApp list row or template button
in, the exact SurveyAnswer out; SMS digits and STOP as the router reads them; and the one-click e-mail links over HTTP: a valid click
publishes one answer, a tampered or expired link gets a friendly page and publishes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from twilio.request_validator import RequestValidator
from werkzeug.datastructures import MultiDict

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels import RawRequest
from services.gateway.channels.meta import MetaAdapter
from services.gateway.channels.telegram import TelegramAdapter, parse_update
from services.gateway.channels.twilio import TwilioSmsAdapter
from services.gateway.survey_pages import TEXTS, survey_blueprint
from services.router.survey_replies import is_stop, normalise
from shared.contracts import Envelope, SurveyAnswer, SurveyOptOut, decode, encode
from shared.survey_links import sign_link

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "surveys"
NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
META_SECRET = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
TWILIO_TOKEN = "12345678901234567890123456789012"
SMS_URL = "https://support.northwind.example/webhooks/twilio/sms"
TG_SECRET = "test-secret_1"
LINK_SECRET = "link-secret-0123456789abcdef"


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def meta_request(body: bytes) -> RawRequest:
    sig = "sha256=" + hmac.new(META_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return RawRequest(url="https://support.example/webhooks/meta", headers={"X-Hub-Signature-256": sig},
                      body=body, form={}, received_at=NOW)


def sms_request(body: bytes) -> RawRequest:
    form = parse_qs(body.decode(), keep_blank_values=True)
    sig = RequestValidator(TWILIO_TOKEN).compute_signature(
        SMS_URL, MultiDict([(k, v) for k, vs in form.items() for v in vs]))
    return RawRequest(url=SMS_URL, headers={"X-Twilio-Signature": sig}, body=body, form=form, received_at=NOW)


def parse(name: str) -> list:
    if name.startswith("telegram_"):
        return parse_update(json.loads(raw(name)), bot_id="123456", received_at=NOW)
    if name.startswith(("messenger_", "whatsapp_")):
        adapter = MetaAdapter(META_SECRET, "verify")
        request = meta_request(raw(name))
        adapter.verify(request)
        return adapter.parse(request)
    adapter = TwilioSmsAdapter(TWILIO_TOKEN, default_region="PL")
    request = sms_request(raw(name))
    adapter.verify(request)
    return adapter.parse(request)


EXPECTED_ANSWERS: dict[str, SurveyAnswer] = {
    "telegram_callback_query_survey.json": SurveyAnswer(
        channel="telegram", external_id="123456:804211020", token="Qm3xT9aZ0bYc8dWe", score=5, received_at=NOW),
    "messenger_quick_reply_survey.json": SurveyAnswer(
        channel="messenger", token="Hk2Lp8Qw4Zr6Ty1U", score=9,
        external_id="m_Sv7uT1vW4xY7zA0bC3dE6fG9hJ2kL5mN8pQ1rS4tU7vW0xY3zA6bC9dE2fG5hJ8kL1mN4pQ7rS0t",
        received_at=NOW),
    # A button (button template, persistent menu) answers as a postback: the same payload, the same answer.
    "messenger_postback_survey.json": SurveyAnswer(
        channel="messenger", token="Pb4Rt7Yu1Io3Pa5S", score=4,
        external_id="m_Pv2sV5wX8yZ1aB4cD7eF0gH3jK6lM9nP2qR5sT8uV1wX4yZ7aB0cD3eF6gH9jK2lM5nP8qR1sT4u",
        received_at=NOW),
    "whatsapp_list_reply_survey.json": SurveyAnswer(
        channel="whatsapp", token="Wa9Zx3Cv5Bn7Mq2K", score=4,
        external_id="wamid.HBgLMzcwNjEyMzQ1NjcVAgASGBRTVVJWRVlBTlNXRVIwMDAwMDAxAA==",
        received_at=NOW),
    # Outside the 24-hour window the survey goes as an approved template; its quick-reply button
    # comes back as a message of type "button" carrying the payload we gave it.
    "whatsapp_template_button_survey.json": SurveyAnswer(
        channel="whatsapp", token="Tm5Qw8Er2Ty4Ui6O", score=5,
        external_id="wamid.HBgLMzcwNjIzNDU2NzgVAgASGBRURU1QTEFURUJVVFRPTjAwMDAxAA==",
        received_at=NOW),
}
#: SMS has no buttons: the gateway passes the text on; the router reads it (services/router/survey_replies.py).
EXPECTED_SMS: dict[str, tuple[str, bool]] = {
    "sms_digit_reply.txt": ("4", False),  # (the text as the router reads it, is it STOP)
    "sms_stop_ru.txt": ("стоп", True),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_a_survey_button_is_an_answer_not_a_message(name: str) -> None:
    [answer] = parse(name)
    assert answer == EXPECTED_ANSWERS[name]
    envelope = Envelope.wrap(answer, message_id="m", correlation_id="c", occurred_at=NOW)
    assert decode(encode(envelope)).payload == answer  # it is a valid survey.answer on the bus


@pytest.mark.parametrize("name", sorted(EXPECTED_SMS))
def test_an_sms_reply_reaches_the_router_as_its_text(name: str) -> None:
    [msg] = parse(name)
    assert msg.channel == "sms" and msg.reply_to == "+48601234567"
    assert (normalise(msg.text), is_stop(msg)) == EXPECTED_SMS[name]


def test_every_fixture_is_used() -> None:
    assert {p.name for p in FIXTURES.iterdir()} == set(EXPECTED_ANSWERS) | set(EXPECTED_SMS)


@pytest.mark.parametrize("text,stop", [
    ("STOP", True), ("stop.", True), ("Unsubscribe", True), ("СТОП!", True), ("please stop calling me", False),
    ("5", False), ("", False),
])
def test_stop_is_the_whole_message_only(text: str, stop: bool) -> None:
    from shared.contracts import Identity, InboundMessage

    msg = InboundMessage(channel="telegram", external_id="1", sender=Identity("telegram", "1"), reply_to="1",
                         received_at=NOW, text=text)
    assert is_stop(msg) is stop


# --- over HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def client(example_config, intake):
    deps = GatewayDeps(config=example_config, intake=intake,
                       adapters={"telegram": TelegramAdapter(secret=TG_SECRET, bot_id="123456")},
                       public_base_url="https://support.example", max_body_bytes=64 * 1024, clock=lambda: NOW)
    pages = survey_blueprint(secret=LINK_SECRET, intake=intake, config=example_config, clock=lambda: NOW)
    return create_app(deps, [pages]).test_client()


def link(*, score: int | None = 4, unsubscribe: bool = False, language: str = "pl", signed_at: datetime = NOW,
         secret: str = LINK_SECRET, kind: str | None = "csat") -> str:
    return "/survey/" + sign_link(secret, token="Qm3xT9aZ0bYc8dWe", language=language, score=score,
                                  unsubscribe=unsubscribe, kind=kind, now=signed_at)


def radios(page: str) -> list[tuple[str, bool]]:
    """The scores offered on a page, each with whether it is preselected."""
    return [(value, bool(checked)) for value, checked in
            re.findall(r'<input type="radio" name="score" value="(\d+)" required( checked)?>', page)]


def test_a_pressed_telegram_button_is_published_and_answered_in_the_response(client, intake) -> None:
    r = client.post("/webhooks/telegram", data=raw("telegram_callback_query_survey.json"),
                    headers={"X-Telegram-Bot-Api-Secret-Token": TG_SECRET, "Content-Type": "application/json"})
    assert r.status_code == 200
    assert r.json == {"method": "answerCallbackQuery", "callback_query_id": "4382bfdwdsb323b2e1"}
    [envelope] = intake.accepted
    assert envelope.type == "survey.answer" and envelope.payload.score == 5


def test_opening_a_rating_link_shows_the_score_preselected_and_records_nothing(client, intake) -> None:
    # E-mail security scanners open every link of a mail: a GET must answer nothing.
    r = client.get(link())
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    page = r.get_data(as_text=True)
    assert 'lang="pl"' in page and "Prosimy o ocenę naszej pomocy." in page
    assert radios(page) == [("1", False), ("2", False), ("3", False), ("4", True), ("5", False)]
    assert f'<form method="post" action="{link()}">' in page
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
    assert "form-action 'self'" in r.headers["Content-Security-Policy"]
    assert intake.accepted == []


def test_one_tap_on_the_page_records_the_rating_and_thanks_in_the_surveys_language(client, intake) -> None:
    r = client.post(link(), data={"score": "4"})
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    page = r.get_data(as_text=True)
    assert "Dziękujemy za ocenę!" in page and 'lang="pl"' in page and "<form" in page
    [envelope] = intake.accepted
    assert envelope.payload == SurveyAnswer(channel="email", external_id="link:Qm3xT9aZ0bYc8dWe:4",
                                            token="Qm3xT9aZ0bYc8dWe", score=4, received_at=NOW)
    # A second tap is the same event (same message id): the notifier records it once.
    client.post(link(), data={"score": "4"})
    assert intake.accepted[1].message_id == envelope.message_id


def test_another_score_of_the_scale_may_be_chosen_on_the_page(client, intake) -> None:
    assert client.post(link(score=4), data={"score": "2"}).status_code == 200
    [envelope] = intake.accepted
    assert envelope.payload.score == 2 and envelope.payload.external_id == "link:Qm3xT9aZ0bYc8dWe:2"


@pytest.mark.parametrize("posted", ["0", "6", "11", "-1", "4.5", "four", "", "1" * 40])
def test_a_score_outside_the_links_scale_records_nothing(client, intake, posted) -> None:
    r = client.post(link(), data={"score": posted})
    assert r.status_code == 400 and "nieprawidłowy" in r.get_data(as_text=True)
    assert intake.accepted == []


def test_a_link_signed_before_links_carried_their_kind_answers_only_its_own_score(client, intake) -> None:
    old = link(score=4, kind=None)
    assert radios(client.get(old).get_data(as_text=True)) == [("4", True)]
    assert client.post(old, data={"score": "2"}).status_code == 400
    assert client.post(old, data={"score": "4"}).status_code == 200
    assert [e.payload.score for e in intake.accepted] == [4]


def test_the_comment_form_publishes_the_comment(client, intake) -> None:
    r = client.post(link(), data={"comment": "<b>Fast</b> and kind"})
    assert r.status_code == 200 and "Dziękujemy, otrzymaliśmy" in r.get_data(as_text=True)
    [envelope] = intake.accepted
    assert envelope.payload.comment == "<b>Fast</b> and kind" and envelope.payload.score is None


def test_the_unsubscribe_link_asks_and_its_post_opts_out(client, intake) -> None:
    r = client.get(link(unsubscribe=True, language="de"))
    assert r.status_code == 200 and "Keine Umfragen mehr" in r.get_data(as_text=True)
    assert '<form method="post"' in r.get_data(as_text=True) and intake.accepted == []
    r = client.post(link(unsubscribe=True, language="de"), data={"unsubscribe": "1"})
    assert r.status_code == 200 and "keine Umfragen mehr" in r.get_data(as_text=True)
    [envelope] = intake.accepted
    assert isinstance(envelope.payload, SurveyOptOut) and envelope.payload.token == "Qm3xT9aZ0bYc8dWe"


def test_a_mail_clients_one_click_unsubscribe_opts_out(client, intake) -> None:
    # RFC 8058 §3.2: the client POSTs this body to the List-Unsubscribe URL, with no cookies.
    r = client.post(link(unsubscribe=True), data="List-Unsubscribe=One-Click",
                    content_type="application/x-www-form-urlencoded")
    assert r.status_code == 200
    [envelope] = intake.accepted
    assert isinstance(envelope.payload, SurveyOptOut)
    assert envelope.payload.external_id == "link:Qm3xT9aZ0bYc8dWe:unsubscribe"


@pytest.mark.parametrize("path,status,words", [
    (link()[:-3] + "abc", 400, "not valid"),  # tampered signature
    (link(secret="another-secret-0123456789"), 400, "not valid"),  # signed by someone else
    ("/survey/" + "x" * 40, 400, "not valid"),
    (link(signed_at=NOW - timedelta(days=31), language="en"), 410, "expired"),
])
def test_a_bad_link_gets_a_friendly_page_and_records_nothing(client, intake, path, status, words) -> None:
    r = client.get(path)
    assert r.status_code == status and r.content_type.startswith("text/html")
    assert words in r.get_data(as_text=True)
    assert client.post(path, data={"comment": "hello"}).status_code == status
    assert client.post(path, data={"score": "4"}).status_code == status
    assert intake.accepted == []


def test_without_a_survey_secret_no_link_is_accepted(example_config, intake) -> None:
    deps = GatewayDeps(config=example_config, intake=intake, adapters={}, public_base_url="https://support.example",
                       max_body_bytes=1024, clock=lambda: NOW)
    pages = survey_blueprint(secret=None, intake=intake, config=example_config, clock=lambda: NOW)
    r = create_app(deps, [pages]).test_client().get(link())
    assert r.status_code == 404 and intake.accepted == []


# --- the score page: a WhatsApp NPS template's URL button opens it --------------------------------


def hrefs(page: str) -> list[str]:
    return re.findall(r'<a href="(/survey/[^"]+)"', page)


def test_a_link_without_a_score_shows_the_eleven_scores_and_records_nothing(client, intake) -> None:
    r = client.get(link(score=None, kind="nps", language="pl"))
    assert r.status_code == 200 and r.content_type.startswith("text/html")
    page = r.get_data(as_text=True)
    assert 'lang="pl"' in page and "Na ile prawdopodobne jest polecenie nas" in page
    assert "na pewno nie … na pewno tak" in page
    assert radios(page) == [(str(i), False) for i in range(11)]  # nothing preselected: the customer picks
    [unsubscribe] = hrefs(page)
    assert "Nie chcę więcej ankiet" in page
    # Opening the page (a customer looking, or WhatsApp's link preview) answers nothing.
    assert intake.accepted == []
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]

    thanks = client.post(link(score=None, kind="nps", language="pl"), data={"score": "7"})
    assert thanks.status_code == 200 and "Dziękujemy za ocenę!" in thanks.get_data(as_text=True)
    [envelope] = intake.accepted
    assert envelope.payload == SurveyAnswer(channel="email", external_id="link:Qm3xT9aZ0bYc8dWe:7",
                                            token="Qm3xT9aZ0bYc8dWe", score=7, received_at=NOW)
    assert "Nie chcę więcej ankiet" in client.get(unsubscribe).get_data(as_text=True)
    assert len(intake.accepted) == 1  # the opt-out page only asks
    assert "nie będziesz już otrzymywać" in client.post(unsubscribe).get_data(as_text=True)
    assert isinstance(intake.accepted[1].payload, SurveyOptOut)


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_the_score_page_speaks_every_language_the_pages_do(client, intake, language) -> None:
    page = client.get(link(score=None, kind="csat", language=language)).get_data(as_text=True)
    assert f'lang="{language}"' in page and TEXTS[language]["question_csat"] in page
    assert len(radios(page)) == 5 and len(hrefs(page)) == 1  # CSAT 1-5 and the opt-out
    assert intake.accepted == []


def test_the_page_answers_only_while_the_link_it_came_from_is_valid(example_config, intake) -> None:
    clock = {"now": NOW}
    deps = GatewayDeps(config=example_config, intake=intake, adapters={}, public_base_url="https://support.example",
                       max_body_bytes=1024, clock=lambda: clock["now"])
    pages = survey_blueprint(secret=LINK_SECRET, intake=intake, config=example_config, clock=lambda: clock["now"])
    client = create_app(deps, [pages]).test_client()
    sent = link(score=None, kind="nps", signed_at=NOW - timedelta(days=29))
    unsubscribe = hrefs(client.get(sent).get_data(as_text=True))[0]
    clock["now"] = NOW + timedelta(days=2)  # 31 days after the template was sent
    assert client.post(sent, data={"score": "9"}).status_code == 410
    assert client.post(unsubscribe).status_code == 410 and intake.accepted == []


def test_an_old_link_without_score_or_kind_is_still_refused(client, intake) -> None:
    r = client.get(link(score=None, kind=None))
    assert r.status_code == 400 and "nieprawidłowy" in r.get_data(as_text=True)
    assert client.post(link(score=None, kind=None), data={"score": "3"}).status_code == 400
    assert intake.accepted == []

"""The follow-up survey against the real PostgreSQL: scheduled once, sent once when due (also by two
tickers at once), answered once, opt-outs honoured on every channel, the router's SMS digits."""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels.meta import parse_payload, survey_answer
from services.gateway.survey_pages import survey_blueprint
from services.notifier.handlers import NotifierDeps, handle_event
from services.notifier.models import Outbox, Survey, SurveyOptOut
from services.notifier.senders import Registry, TransientSendError
from services.notifier.senders.sandbox import SandboxSender
from services.notifier.survey_flow import send_due_surveys
from services.router import models as router_models
from services.router.handlers import RouterDeps, handle_inbound
from shared import contracts
from shared.config import WhatsAppTemplate
from shared.contracts import ConversationResolved, Envelope, InboundMessage, SurveyAnswer, load
from shared.db import transaction
from shared.survey_links import SurveyLinks, read_link

pytestmark = pytest.mark.integration

RESOLVED = datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self, at: datetime):
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def senders():
    return {ch: SandboxSender(ch, out=io.StringIO()) for ch in ("telegram", "sms", "email", "whatsapp")}


@pytest.fixture
def config(example_config):
    # Every conversation gets CSAT here; the sample is tested on its own (unit tests).
    return replace(example_config, survey=replace(example_config.survey, nps_sample=0.0))


def make_deps(config, sessions, senders, clock) -> NotifierDeps:
    return NotifierDeps(config=config, sessions=sessions, senders=Registry(senders), compose_ack=lambda ev, at: "ack",
                        clock=clock, survey_links=SurveyLinks("s" * 32, "https://support.example"))


def resolved(conv: str = "conv-1", *, customer: str = "cust-1", channel: str = "telegram", reply_to: str = "42",
             human: bool = True, opening: int = 1, at: datetime = RESOLVED,
             last_customer_message_at: datetime | None = None) -> Envelope:
    ev = ConversationResolved(conversation_id=conv, customer_id=customer, channel=channel, reply_to=reply_to,
                              language="en", owner_id="anna", resolved_at=at, human_replied=human, opening=opening,
                              customer_name="Mark", last_customer_message_at=last_customer_message_at)
    return Envelope.wrap(ev, message_id=f"r-{conv}-{opening}", correlation_id="c", occurred_at=at)


def answer(token: str, score: int | None, external_id: str = "press-1", comment: str | None = None) -> Envelope:
    ev = SurveyAnswer(channel="telegram", external_id=external_id, token=token, score=score,
                      received_at=RESOLVED + 2 * HOUR, comment=comment)
    return Envelope.wrap(ev, message_id=f"a-{external_id}", correlation_id="c", occurred_at=RESOLVED + 2 * HOUR)


def surveys(sessions) -> list[Survey]:
    with sessions() as s:
        return list(s.scalars(select(Survey).order_by(Survey.id)))


def test_one_survey_after_the_delay_with_buttons_even_if_the_resolution_comes_twice(config, sessions, senders):
    clock = Clock(RESOLVED)
    deps = make_deps(config, sessions, senders, clock)
    handle_event(resolved(), deps)
    handle_event(resolved(), deps)
    assert send_due_surveys(RESOLVED + 30 * timedelta(minutes=1), deps) == 0  # not due yet
    assert senders["telegram"].sent == []

    clock.at = RESOLVED + HOUR
    assert send_due_surveys(clock.at, deps) == 1
    assert send_due_surveys(clock.at + HOUR, deps) == 0
    [sent] = senders["telegram"].sent
    [survey] = surveys(sessions)
    assert survey.status == "sent" and survey.kind == "csat" and survey.sent_at == RESOLVED + HOUR
    assert "How would you rate" in sent.text and "Mark" in sent.text
    assert sent.options["buttons"] == [[[str(i), f"sv:{survey.token}:{i}"] for i in range(1, 6)]]


def test_two_tickers_racing_send_one_survey(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    for i in range(10):
        handle_event(resolved(f"conv-{i}", customer=f"cust-{i}", reply_to=str(100 + i)), deps)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(send_due_surveys(RESOLVED + HOUR, deps)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 10
    assert sorted(r.address for r in senders["telegram"].sent) == sorted(str(100 + i) for i in range(10))


def test_no_survey_without_a_human_reply_and_none_within_the_cooldown(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    handle_event(resolved("bot-only", human=False), deps)
    handle_event(resolved("first"), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    # The same customer, another conversation resolved a week later: within the 30-day cooldown.
    handle_event(resolved("second", at=RESOLVED + timedelta(days=7)), deps)
    send_due_surveys(RESOLVED + timedelta(days=8), deps)
    by_conv = {s.conversation_id: s for s in surveys(sessions)}
    assert by_conv["bot-only"].status == "skipped" and "no human replied" in by_conv["bot-only"].reason
    assert by_conv["first"].status == "sent"
    assert by_conv["second"].status == "skipped" and "cooldown" in by_conv["second"].reason
    assert len(senders["telegram"].sent) == 1


def test_an_answer_is_recorded_once_and_thanked_once(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    handle_event(resolved(), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    [survey] = surveys(sessions)
    handle_event(answer(survey.token, 4), deps)
    handle_event(answer(survey.token, 4), deps)  # the same press redelivered
    handle_event(answer(survey.token, 1, external_id="press-2"), deps)  # a second press
    handle_event(answer(survey.token, 3, external_id="comment-1", comment=None), deps)
    [after] = surveys(sessions)
    assert (after.status, after.score, after.answered_at) == ("answered", 4, RESOLVED + 2 * HOUR)
    texts = [m.text for m in senders["telegram"].sent]
    assert len(texts) == 2 and texts[1].startswith("Thank you for your rating")
    # The optional comment: kept once.
    handle_event(answer(survey.token, None, external_id="c-1", comment="Quick and kind, thanks"), deps)
    handle_event(answer(survey.token, None, external_id="c-2", comment="another"), deps)
    [after] = surveys(sessions)
    assert after.comment == "Quick and kind, thanks" and after.score == 4


def test_out_of_scale_and_unknown_tokens_record_nothing(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    handle_event(resolved(), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    [survey] = surveys(sessions)
    handle_event(answer(survey.token, 9), deps)  # CSAT is 1-5
    handle_event(answer("unknown-token-123", 5, external_id="x"), deps)
    [after] = surveys(sessions)
    assert after.answered_at is None and after.score is None


def test_opt_out_on_one_channel_stops_surveys_on_every_channel(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    handle_event(resolved("by-telegram", customer="cust-9", channel="telegram", reply_to="42"), deps)
    stop = contracts.SurveyOptOut(channel="sms", external_id="SM1", address="+48601234567", received_at=RESOLVED,
                       customer_id="cust-9")
    handle_event(Envelope.wrap(stop, message_id="o1", correlation_id="c", occurred_at=RESOLVED), deps)
    handle_event(Envelope.wrap(stop, message_id="o1", correlation_id="c", occurred_at=RESOLVED), deps)
    handle_event(resolved("by-email", customer="cust-9", channel="email", reply_to="mark@example.com",
                          at=RESOLVED + timedelta(days=40)), deps)
    assert send_due_surveys(RESOLVED + timedelta(days=41), deps) == 0
    assert {s.conversation_id: s.status for s in surveys(sessions)} == {
        "by-telegram": "opted_out", "by-email": "skipped"}
    with sessions() as s:
        assert [(o.customer_id, o.channel, o.address) for o in s.scalars(select(SurveyOptOut))] == [
            ("cust-9", "sms", "+48601234567")]
    assert all(not sender.sent for sender in senders.values())


def test_an_email_unsubscribe_link_finds_the_customer_by_the_survey(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    handle_event(resolved("mail", channel="email", reply_to="mark@example.com"), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    [survey] = surveys(sessions)
    [mail] = senders["email"].sent
    assert mail.options["automatic"] is True and "https://support.example/survey/" in mail.text
    assert mail.options["list_unsubscribe"].startswith("https://support.example/survey/")
    assert mail.options["list_unsubscribe"] in mail.text
    link = load(contracts.SurveyOptOut, {"channel": "email", "external_id": f"link:{survey.token}:unsubscribe",
                                      "address": None, "received_at": RESOLVED.isoformat(), "token": survey.token})
    handle_event(Envelope.wrap(link, message_id="o2", correlation_id="c", occurred_at=RESOLVED), deps)
    with sessions() as s:
        [row] = s.scalars(select(SurveyOptOut))
        assert (row.customer_id, row.channel, row.address) == ("cust-1", "email", "mark@example.com")


def test_a_transient_failure_is_retried_at_the_next_tick_and_sent_once(config, sessions):
    class Flaky(SandboxSender):
        fail = 1

        def send(self, address, text, *, options=None):
            if self.fail:
                self.fail -= 1
                raise TransientSendError("503 from the provider")
            return super().send(address, text, options=options)

    flaky = Flaky("telegram", out=io.StringIO())
    deps = make_deps(config, sessions, {"telegram": flaky}, Clock(RESOLVED + HOUR))
    handle_event(resolved(), deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 0
    assert surveys(sessions)[0].status == "sending"
    assert send_due_surveys(RESOLVED + HOUR, deps) == 1
    assert send_due_surveys(RESOLVED + HOUR, deps) == 0
    assert len(flaky.sent) == 1
    with sessions() as s:
        [row] = s.scalars(select(Outbox).where(Outbox.kind == "survey"))
        assert row.idempotency_key == "survey:conv-1:1" and row.attempts == 2


# --- WhatsApp: after the customer's 24-hour window only an approved template ---------------------

WA_ID = "37062345678"
TEMPLATE_PRESS = Path(__file__).resolve().parent.parent / "fixtures" / "surveys" / "whatsapp_template_button_survey.json"


def whatsapp_config(config, template: WhatsAppTemplate | None):
    channels = {**config.channels, "whatsapp": replace(config.channels["whatsapp"], survey_template=template)}
    return replace(config, channels=channels)


def resolve_after_the_window(deps: NotifierDeps) -> None:
    """A WhatsApp conversation resolved 24 h after the customer last wrote: its survey, due an hour
    later, falls outside the customer's window."""
    handle_event(resolved(channel="whatsapp", reply_to=WA_ID, last_customer_message_at=RESOLVED - 24 * HOUR), deps)


def template_press(token: str, score: int) -> Envelope:
    """The customer presses the template's button: WhatsApp's webhook, as the gateway reads it."""
    payload = json.loads(TEMPLATE_PRESS.read_text(encoding="utf-8").replace("Tm5Qw8Er2Ty4Ui6O:5", f"{token}:{score}"))
    [msg] = parse_payload(payload, received_at=RESOLVED + 30 * HOUR).messages
    answer_ = survey_answer(msg)
    assert answer_ is not None
    return Envelope.wrap(answer_, message_id=f"a-{msg.external_id}", correlation_id="c", occurred_at=answer_.received_at)


def test_a_whatsapp_survey_after_the_window_goes_as_the_template_and_its_button_answers_it(config, sessions, senders):
    config = whatsapp_config(config, WhatsAppTemplate(name="csat_survey", language="lt"))
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    # The customer last wrote 25 hours before the survey is due (resolution + 1 h).
    resolve_after_the_window(deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 1
    [survey] = surveys(sessions)
    [sent] = senders["whatsapp"].sent
    assert sent.address == WA_ID and survey.status == "sent"
    assert sent.options["template"] == {"name": "csat_survey", "language": "lt", "components": [
        {"type": "button", "sub_type": "quick_reply", "index": str(i - 1),
         "parameters": [{"type": "payload", "payload": f"sv:{survey.token}:{i}"}]} for i in range(1, 6)]}
    assert "buttons" not in sent.options and "last_customer_message_at" not in sent.options

    handle_event(template_press(survey.token, 4), deps)
    [after] = surveys(sessions)
    assert (after.status, after.score) == ("answered", 4)


def test_a_whatsapp_survey_inside_the_window_is_the_list_with_the_template_in_reserve(config, sessions, senders):
    config = whatsapp_config(config, WhatsAppTemplate(name="csat_survey", language="en"))
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    handle_event(resolved(channel="whatsapp", reply_to=WA_ID, last_customer_message_at=RESOLVED - HOUR), deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 1
    [sent] = senders["whatsapp"].sent
    assert [payload for _, payload in sent.options["buttons"]] == [f"sv:{surveys(sessions)[0].token}:{i}"
                                                                    for i in range(1, 6)]
    assert sent.options["last_customer_message_at"] == (RESOLVED - HOUR).isoformat()
    assert sent.options["fallback_template"]["name"] == "csat_survey"


def test_a_whatsapp_survey_after_the_window_without_a_template_is_skipped_not_sent_nor_retried(
        config, sessions, senders):
    config = whatsapp_config(config, None)
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    resolve_after_the_window(deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 0
    assert send_due_surveys(RESOLVED + 2 * HOUR, deps) == 0
    [survey] = surveys(sessions)
    assert survey.status == "skipped"
    assert survey.reason == ("outside WhatsApp's 24-hour window only an approved template may be sent: "
                             "channels.whatsapp.survey_template is not configured")
    assert senders["whatsapp"].sent == []
    with sessions() as s:
        assert list(s.scalars(select(Outbox).where(Outbox.kind == "survey"))) == []  # nothing to retry or dead-letter


NPS_TEMPLATE = WhatsAppTemplate(name="nps_survey", language="lt")


def nps_config(config, nps_template: WhatsAppTemplate | None):
    """Every survey is NPS; WhatsApp has its CSAT template and, maybe, its NPS one."""
    config = whatsapp_config(config, WhatsAppTemplate(name="csat_survey", language="en"))
    channels = {**config.channels, "whatsapp": replace(config.channels["whatsapp"], nps_template=nps_template)}
    return replace(config, channels=channels, survey=replace(config.survey, nps_sample=1.0))


class NotifierIntake:
    """The gateway's intake straight into this notifier, as the bus would deliver it."""

    def __init__(self, deps: NotifierDeps):
        self.deps = deps

    def accept(self, envelope: Envelope) -> str:
        handle_event(contracts.decode(contracts.encode(envelope)), self.deps)
        return "published"


def test_a_whatsapp_nps_survey_after_the_window_goes_as_the_template_and_its_page_records_one_answer(
        config, sessions, senders):
    config = nps_config(config, NPS_TEMPLATE)
    deps = make_deps(config, sessions, senders, Clock(RESOLVED))
    resolve_after_the_window(deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 1
    [survey] = surveys(sessions)
    [sent] = senders["whatsapp"].sent
    assert survey.kind == "nps" and survey.status == "sent" and sent.address == WA_ID
    signed = sent.options["template"]["components"][0]["parameters"][0]["text"]
    # The approved template's one URL button is PUBLIC_BASE_URL/survey/{{1}}: we give the suffix.
    assert sent.options["template"] == {"name": "nps_survey", "language": "lt", "components": [
        {"type": "button", "sub_type": "url", "index": "0", "parameters": [{"type": "text", "text": signed}]}]}
    assert "last_customer_message_at" not in sent.options
    link = read_link("s" * 32, signed, now=RESOLVED + HOUR)
    assert (link.token, link.kind, link.score, link.language) == (survey.token, "nps", None, "en")

    # The customer taps the button the next day: the gateway's page lists the scores, answers nothing
    # itself, and a tapped score reaches this notifier like an e-mail click.
    gateway = GatewayDeps(config=config, intake=NotifierIntake(deps), adapters={},
                          public_base_url="https://support.example", max_body_bytes=1024,
                          clock=lambda: RESOLVED + 30 * HOUR)
    pages = survey_blueprint(secret="s" * 32, intake=gateway.intake, config=config, clock=gateway.clock)
    client = create_app(gateway, [pages]).test_client()
    page = client.get(f"/survey/{signed}")
    assert page.status_code == 200 and surveys(sessions)[0].status == "sent"
    scores = re.findall(r'<input type="radio" name="score" value="(\d+)"', page.get_data(as_text=True))
    assert scores == [str(i) for i in range(11)]
    for tapped in (9, 9, 2):  # twice the same, then a change of mind: the first answer stays
        assert client.post(f"/survey/{signed}", data={"score": str(tapped)}).status_code == 200
    [after] = surveys(sessions)
    assert (after.status, after.score) == ("answered", 9)
    assert senders["whatsapp"].sent == [sent]  # the page said thank you; no chat message on top


def test_a_whatsapp_nps_survey_inside_the_window_keeps_the_nps_template_in_reserve(config, sessions, senders):
    deps = make_deps(nps_config(config, NPS_TEMPLATE), sessions, senders, Clock(RESOLVED))
    handle_event(resolved(channel="whatsapp", reply_to=WA_ID, last_customer_message_at=RESOLVED - HOUR), deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 1
    [sent] = senders["whatsapp"].sent
    assert "template" not in sent.options and "0" in sent.text and "10" in sent.text  # answered by a number
    assert sent.options["fallback_template"]["name"] == "nps_survey"
    assert sent.options["fallback_template"]["components"][0]["sub_type"] == "url"


@pytest.mark.parametrize("nps_template,links,why", [
    (NPS_TEMPLATE, None, "the NPS template carries a signed survey link and SURVEY_SECRET is not set"),
    (None, SurveyLinks("s" * 32, "https://support.example"), "channels.whatsapp.nps_template is not configured"),
])
def test_a_whatsapp_nps_survey_after_the_window_that_cannot_go_is_skipped_with_the_reason(
        config, sessions, senders, nps_template, links, why):
    deps = replace(make_deps(nps_config(config, nps_template), sessions, senders, Clock(RESOLVED)), survey_links=links)
    resolve_after_the_window(deps)
    assert send_due_surveys(RESOLVED + HOUR, deps) == 0
    [survey] = surveys(sessions)
    assert survey.status == "skipped" and why in survey.reason
    assert survey.reason.startswith("outside WhatsApp's 24-hour window only an approved template may be sent: ")
    assert senders["whatsapp"].sent == []


# --- the router's side: SMS digits, STOP ---------------------------------------------------------


def router_deps(config, sessions) -> RouterDeps:
    class Result:
        category, confidence, reason = "delivery", 0.9, {}

    return RouterDeps(config=config, sessions=sessions, classify=lambda *a, **k: Result(),
                      detect_language=lambda text, hints: "en")


def sms(text: str, sid: str, at: datetime) -> Envelope:
    msg = InboundMessage(channel="sms", external_id=sid, sender=contracts.Identity("phone", "+48601234567"),
                         reply_to="+48601234567", received_at=at, text=text)
    return Envelope.wrap(msg, message_id=f"m-{sid}", correlation_id="c", occurred_at=at)


class Collecting:
    """The publisher's one method, keeping what is published: the router gets it next, as from the bus."""

    def __init__(self) -> None:
        self.published: list[Envelope] = []

    def publish(self, envelope: Envelope) -> None:
        self.published.append(envelope)


def tell_router(deps, rdeps, now: datetime) -> None:
    """The notifier's survey.result events, handed to the router: its record of the surveys is what
    it reads an SMS digit against (it never reads the notifier's tables)."""
    from services.notifier.survey_flow import report_surveys
    from shared.contracts import decode, encode

    bus = Collecting()
    report_surveys(now, deps, bus)
    assert bus.published
    for envelope in bus.published:
        assert handle_inbound(decode(encode(envelope)), rdeps) == []


def test_an_sms_digit_answers_the_open_survey_and_opens_no_conversation(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    with transaction(sessions) as s:
        s.add(router_models.Customer(id="cust-1", name="Mark", created_at=RESOLVED))
        s.flush()
        s.add(router_models.Identity(customer_id="cust-1", kind="phone", value="+48601234567", created_at=RESOLVED))
    handle_event(resolved(channel="sms", reply_to="+48601234567"), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    rdeps = router_deps(config, sessions)
    tell_router(deps, rdeps, RESOLVED + HOUR)  # the ticker's survey.result, as the bus delivers it

    [event] = handle_inbound(sms("5", "SM-5", RESOLVED + 2 * HOUR), rdeps)
    assert event.type == "survey.answer" and event.payload.score == 5
    assert handle_inbound(sms("5", "SM-5", RESOLVED + 2 * HOUR), rdeps) == [event]  # redelivery: same event
    handle_event(event, deps)
    assert surveys(sessions)[0].score == 5

    # "7" is outside CSAT: an ordinary message, routed (it opens a conversation).
    [opened] = handle_inbound(sms("7", "SM-7", RESOLVED + 3 * HOUR), rdeps)
    assert opened.type == "conversation.opened"

    [stop] = handle_inbound(sms("Stop ", "SM-stop", RESOLVED + 4 * HOUR), rdeps)
    assert stop.type == "survey.opt_out" and stop.payload.customer_id == "cust-1"


def test_the_first_sms_after_an_answer_is_its_comment_and_is_routed_too(config, sessions, senders):
    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    handle_event(resolved(channel="sms", reply_to="+48601234567"), deps)
    send_due_surveys(RESOLVED + HOUR, deps)
    rdeps = router_deps(config, sessions)
    tell_router(deps, rdeps, RESOLVED + HOUR)
    # Before an answer, a text is only a message.
    [opened] = handle_inbound(sms("Where is my parcel?", "SM-q", RESOLVED + HOUR), rdeps)
    assert opened.type == "conversation.opened"

    [answer_event] = handle_inbound(sms("4", "SM-4", RESOLVED + 2 * HOUR), rdeps)
    handle_event(answer_event, deps)
    tell_router(deps, rdeps, RESOLVED + 2 * HOUR)  # the router learns of the answer from the bus

    comment_events = handle_inbound(sms("Quick and kind, thanks", "SM-c", RESOLVED + 3 * HOUR), rdeps)
    comment = next(e for e in comment_events if e.type == "survey.answer")
    assert comment.payload.comment == "Quick and kind, thanks" and comment.payload.score is None
    assert any(e.type != "survey.answer" for e in comment_events)  # routed as well: it may be a question
    # A redelivery gives the same events; the next text is no comment any more.
    again = handle_inbound(sms("Quick and kind, thanks", "SM-c", RESOLVED + 3 * HOUR), rdeps)
    assert sorted(e.message_id for e in again) == sorted(e.message_id for e in comment_events)
    later = handle_inbound(sms("One more thing", "SM-d", RESOLVED + 4 * HOUR), rdeps)
    assert all(e.type != "survey.answer" for e in later)
    handle_event(comment, deps)
    assert (surveys(sessions)[0].score, surveys(sessions)[0].comment) == (4, "Quick and kind, thanks")


def test_a_voicemail_that_says_stop_is_a_message_for_the_owner_not_an_opt_out(config, sessions, senders):
    # A transcript is what the caller said to a person, not a keyword texted to us: "Stop." may
    # well be "stop the delivery". The caller is called back; surveys are not turned off.
    rdeps = router_deps(config, sessions)
    voicemail = InboundMessage(channel="phone", external_id="CA1:RE1", sender=contracts.Identity("phone", "+48601234567"),
                               reply_to="+48601234567", received_at=RESOLVED, text="Stop.",
                               meta={"call_sid": "CA1", "voicemail": True})
    [opened] = handle_inbound(Envelope.wrap(voicemail, message_id="m-vm", correlation_id="c", occurred_at=RESOLVED),
                              rdeps)
    assert opened.type == "conversation.opened" and opened.payload.channel == "phone"


def test_the_router_learns_each_survey_sent_and_answered_from_the_bus_once(config, sessions, senders, rabbit_url):
    """The KPIs' surveys: the notifier's ticker tells the router (survey.result on the bus), the
    router keeps its own record; nothing reads the other service's table."""
    from kombu import Connection

    from services.notifier.survey_flow import report_surveys
    from shared.bus.publisher import Publisher, connect
    from shared.bus.topology import ROUTER_INBOUND, declare, work_queue
    from shared.contracts import decode

    with connect(rabbit_url) as conn:
        declare(conn)
    publisher = Publisher(rabbit_url)
    router = RouterDeps(config=config, sessions=sessions, classify=lambda *a: None, detect_language=lambda *a: "en")

    def deliver_to_router() -> int:
        n = 0
        with Connection(rabbit_url) as conn, conn.SimpleQueue(work_queue(ROUTER_INBOUND, rabbit=True),
                                                               no_ack=False) as q:
            while True:
                try:
                    m = q.get(timeout=0.5)
                except Exception:  # noqa: BLE001 - Empty
                    return n
                assert handle_inbound(decode(m.payload), router) == []
                m.ack()
                n += 1

    deps = make_deps(config, sessions, senders, Clock(RESOLVED + HOUR))
    handle_event(resolved(), deps)
    assert report_surveys(RESOLVED, deps, publisher) == 0  # scheduled: nothing to tell yet
    send_due_surveys(RESOLVED + HOUR, deps)
    assert report_surveys(RESOLVED + HOUR, deps, publisher) == 1
    assert report_surveys(RESOLVED + HOUR, deps, publisher) == 0  # told once
    assert deliver_to_router() == 1
    with sessions() as s:
        [row] = s.scalars(select(router_models.ConversationSurvey)).all()
        assert (row.conversation_id, row.kind, row.sent_at, row.score) == ("conv-1", "csat", RESOLVED + HOUR, None)

    [survey] = surveys(sessions)
    handle_event(answer(survey.token, 4), deps)
    assert report_surveys(RESOLVED + 2 * HOUR, deps, publisher) == 1
    assert deliver_to_router() == 1
    with sessions() as s:
        [row] = s.scalars(select(router_models.ConversationSurvey)).all()
        assert (row.score, row.answered_at) == (4, RESOLVED + 2 * HOUR)
    publisher.close()

"""The Messenger/Instagram and WhatsApp senders over real HTTP against a local fake Graph API:
what reaches Meta, and which failures are transient (retry) or permanent (record, never retry)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError
from services.notifier.senders.meta import (
    OUTSIDE_WINDOW,
    MessengerSender,
    WhatsAppSender,
    graph_error,
    within_customer_window,
)
from tests.fakes.graph_api import FakeGraphApi

PAGE_TOKEN = "EAAGpage-token"
WA_TOKEN = "EAAGwhatsapp-token"
PHONE_NUMBER_ID = "106540352242922"
PSID = "7712345678901234"
WA_ID = "37061234567"
NOW = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
FAST = httpx.Timeout(2.0, connect=1.0)


@pytest.fixture
def graph():
    fake = FakeGraphApi(tokens=frozenset({PAGE_TOKEN, WA_TOKEN})).start()
    yield fake
    fake.stop()


@pytest.fixture
def messenger(graph):
    sender = MessengerSender(PAGE_TOKEN, graph.base_url, timeout=FAST)
    yield sender
    sender.close()


@pytest.fixture
def wa(graph):
    sender = WhatsAppSender(WA_TOKEN, graph.base_url, PHONE_NUMBER_ID, timeout=FAST, clock=lambda: NOW)
    yield sender
    sender.close()


# --- Messenger and Instagram -----------------------------------------------------------------


def test_messenger_text_reaches_the_send_api(messenger, graph) -> None:
    result = messenger.send(PSID, "Danke, Anna! Wir antworten bis Montag 10:00.")
    [sent] = graph.sends
    assert (sent.version, sent.target, sent.token) == ("v21.0", "me", PAGE_TOKEN)
    assert sent.body == {"recipient": {"id": PSID}, "messaging_type": "RESPONSE",
                         "message": {"text": "Danke, Anna! Wir antworten bis Montag 10:00."}}
    assert result == SendResult(provider_message_id="m_fake1")
    assert messenger.channel == "messenger"


def test_instagram_uses_the_same_send_api(graph) -> None:
    sender = MessengerSender(PAGE_TOKEN, graph.base_url, channel="instagram", timeout=FAST)
    try:
        assert sender.channel == "instagram"
        sender.send("6345678901234567", "Благодарим ви!")
    finally:
        sender.close()
    assert graph.sent_to("6345678901234567")[0].target == "me"


def test_quick_replies_become_send_api_quick_replies(messenger, graph) -> None:
    messenger.send(PSID, "How did we do?", options={"quick_replies": [("😀 Great", "csat:5:9f1c"), ("😞 Bad", "csat:1:9f1c")]})
    [sent] = graph.sends
    assert sent.body["message"] == {"text": "How did we do?", "quick_replies": [
        {"content_type": "text", "title": "😀 Great", "payload": "csat:5:9f1c"},
        {"content_type": "text", "title": "😞 Bad", "payload": "csat:1:9f1c"},
    ]}


def test_too_many_quick_replies_is_permanent_and_sends_nothing(messenger, graph) -> None:
    with pytest.raises(PermanentSendError, match="13"):
        messenger.send(PSID, "NPS", options={"quick_replies": [(str(i), f"nps:{i}") for i in range(14)]})
    assert graph.calls == []


def test_human_agent_tag_sends_a_message_tag(messenger, graph) -> None:
    messenger.send(PSID, "Sorry for the wait", options={"tag": "HUMAN_AGENT"})
    [sent] = graph.sends
    assert sent.body["messaging_type"] == "MESSAGE_TAG" and sent.body["tag"] == "HUMAN_AGENT"


def test_default_graph_base_is_the_real_graph_api() -> None:
    sender = MessengerSender(PAGE_TOKEN, None)
    try:
        assert sender._graph.base == "https://graph.facebook.com/v21.0"
    finally:
        sender.close()


def test_unknown_channel_and_missing_token_fail_at_start() -> None:
    with pytest.raises(ValueError, match="messenger or instagram"):
        MessengerSender(PAGE_TOKEN, None, channel="whatsapp")
    with pytest.raises(ValueError, match="token"):
        MessengerSender("", None)


# --- transient failures ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transient_and_the_next_call_goes_through(status, messenger, graph) -> None:
    graph.fail_next(1, status)
    with pytest.raises(TransientSendError):
        messenger.send(PSID, "hello")
    assert graph.sends == []
    messenger.send(PSID, "hello")
    assert len(graph.sends) == 1


def test_429_is_transient_and_honours_retry_after(messenger, graph) -> None:
    graph.fail_next(1, 429, retry_after="7")
    with pytest.raises(TransientSendError) as info:
        messenger.send(PSID, "hello")
    assert info.value.retry_after == 7


def test_429_without_retry_after_is_transient_without_a_hint(wa, graph) -> None:
    graph.fail_next(1, 429, code=130429)
    with pytest.raises(TransientSendError) as info:
        wa.send(WA_ID, "hello")
    assert info.value.retry_after is None


@pytest.mark.parametrize("code", [2, 4, 613, 1200, 130429, 131056])
def test_rate_limit_and_temporary_graph_codes_on_400_are_transient(code, messenger, graph) -> None:
    graph.fail_next(1, 400, code=code)
    with pytest.raises(TransientSendError):
        messenger.send(PSID, "hello")


def test_a_slow_graph_api_is_a_transient_timeout(graph) -> None:
    sender = MessengerSender(PAGE_TOKEN, graph.base_url, timeout=httpx.Timeout(0.2, connect=1.0))
    graph.fail_next(1, 500, delay=1.0)
    try:
        with pytest.raises(TransientSendError, match="timed out"):
            sender.send(PSID, "hello")
    finally:
        sender.close()


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    sender = WhatsAppSender(WA_TOKEN, f"http://127.0.0.1:{port}/v21.0", PHONE_NUMBER_ID, timeout=FAST)
    try:
        with pytest.raises(TransientSendError, match="unreachable"):
            sender.send(WA_ID, "hello")
    finally:
        sender.close()


# --- permanent failures ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [100, 190, 200, 551, 10])
def test_graph_refusals_are_permanent(code, messenger, graph) -> None:
    graph.fail_next(1, 400, code=code)
    with pytest.raises(PermanentSendError, match=f"code {code}"):
        messenger.send(PSID, "hello")


def test_a_wrong_token_is_permanent(graph) -> None:
    sender = MessengerSender("EAAGexpired", graph.base_url, timeout=FAST)
    try:
        with pytest.raises(PermanentSendError, match="190"):
            sender.send(PSID, "hello")
    finally:
        sender.close()
    assert graph.sends == []


def test_whatsapp_undeliverable_is_permanent(wa, graph) -> None:
    graph.fail_next(1, 400, code=131026)
    with pytest.raises(PermanentSendError, match="131026"):
        wa.send(WA_ID, "hello")


def test_whatsapp_reengagement_error_says_a_template_is_required(wa, graph) -> None:
    graph.fail_next(1, 400, code=131047)
    with pytest.raises(PermanentSendError, match=OUTSIDE_WINDOW):
        wa.send(WA_ID, "hello")


def test_accepted_without_an_id_is_not_retried(messenger, graph) -> None:
    graph.reply_next(1, 200, {})
    assert messenger.send(PSID, "hello") == SendResult(provider_message_id=None)


# --- WhatsApp --------------------------------------------------------------------------------


def test_whatsapp_text_reaches_the_phone_numbers_messages_endpoint(wa, graph) -> None:
    result = wa.send(WA_ID, "Ačiū, Rūta! Atsakysime iki pirmadienio 10:00.")
    [sent] = graph.sends
    assert (sent.version, sent.target, sent.token) == ("v21.0", PHONE_NUMBER_ID, WA_TOKEN)
    assert sent.body == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID,
                         "type": "text", "text": {"body": "Ačiū, Rūta! Atsakysime iki pirmadienio 10:00.",
                                                  "preview_url": False}}
    assert result == SendResult(provider_message_id="wamid.FAKE1")


def test_whatsapp_answers_a_username_customer_by_their_business_scoped_user_id(wa, graph) -> None:
    # No phone number is known for a customer who hides it behind a username: only the BSUID.
    wa.send("US.13491208655302741918", "Yes, we ship to Lithuania.")
    [sent] = graph.sends
    assert sent.body["recipient"] == "US.13491208655302741918" and "to" not in sent.body
    assert sent.recipient == "US.13491208655302741918"


def test_whatsapp_answers_from_the_number_the_customer_wrote_to(wa, graph) -> None:
    wa.send(WA_ID, "hello", options={"phone_number_id": "109999999999999"})
    assert graph.sends[0].target == "109999999999999"


def test_whatsapp_template(wa, graph) -> None:
    components = [{"type": "body", "parameters": [{"type": "text", "text": "Rūta"}, {"type": "text", "text": "A-48213"}]}]
    wa.send(WA_ID, "(ignored for templates)", options={"template": {
        "name": "ack_out_of_hours", "language": "lt", "components": components}})
    [sent] = graph.sends
    assert sent.body == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID,
                         "type": "template", "template": {"name": "ack_out_of_hours", "language": {"code": "lt"},
                                                          "components": components}}


def test_whatsapp_up_to_three_buttons_are_reply_buttons(wa, graph) -> None:
    wa.send(WA_ID, "Ar esate patenkinti?", options={"buttons": [("😀 Taip", "csat:5:9f1c"), ("😞 Ne", "csat:1:9f1c")]})
    [sent] = graph.sends
    assert sent.body["type"] == "interactive"
    assert sent.body["interactive"] == {"type": "button", "body": {"text": "Ar esate patenkinti?"}, "action": {
        "buttons": [{"type": "reply", "reply": {"id": "csat:5:9f1c", "title": "😀 Taip"}},
                    {"type": "reply", "reply": {"id": "csat:1:9f1c", "title": "😞 Ne"}}]}}


def test_whatsapp_more_than_three_buttons_become_a_list(wa, graph) -> None:
    wa.send(WA_ID, "Rate us 1-5", options={"buttons": [(str(i), f"csat:{i}:9f1c") for i in range(1, 6)],
                                            "list_button": "Rate"})
    [sent] = graph.sends
    assert sent.body["interactive"] == {"type": "list", "body": {"text": "Rate us 1-5"}, "action": {
        "button": "Rate", "sections": [{"rows": [{"id": f"csat:{i}:9f1c", "title": str(i)} for i in range(1, 6)]}]}}


def test_whatsapp_more_than_ten_choices_do_not_fit_a_list(wa, graph) -> None:
    with pytest.raises(PermanentSendError, match="10"):
        wa.send(WA_ID, "NPS 0-10", options={"buttons": [(str(i), f"nps:{i}") for i in range(11)]})
    assert graph.calls == []


# --- the 24-hour window ----------------------------------------------------------------------


@pytest.mark.parametrize(("ago", "inside"), [
    (timedelta(0), True), (timedelta(hours=23, minutes=59, seconds=59), True),
    (timedelta(hours=24), False), (timedelta(days=3), False), (timedelta(minutes=-5), True),
])
def test_within_customer_window(ago: timedelta, inside: bool) -> None:
    assert within_customer_window(NOW - ago, NOW) is inside


def test_a_customer_who_never_wrote_has_no_window() -> None:
    assert within_customer_window(None, NOW) is False


def test_window_needs_aware_times() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        within_customer_window(datetime(2026, 11, 24, 12, 0), NOW)


def test_inside_the_window_free_text_is_sent(wa, graph) -> None:
    wa.send(WA_ID, "hello", options={"last_customer_message_at": NOW - timedelta(hours=23), "now": NOW})
    assert len(graph.sends) == 1


@pytest.mark.parametrize("last", [NOW - timedelta(hours=25), None])
def test_outside_the_window_free_text_is_refused_before_calling_meta(last, wa, graph) -> None:
    with pytest.raises(PermanentSendError, match=OUTSIDE_WINDOW):
        wa.send(WA_ID, "hello", options={"last_customer_message_at": last, "now": NOW})
    assert graph.calls == []


def test_outside_the_window_a_template_is_sent(wa, graph) -> None:
    wa.send(WA_ID, "", options={"last_customer_message_at": NOW - timedelta(days=2), "now": NOW,
                                "template": {"name": "survey_csat", "language": {"code": "en_US"}}})
    [sent] = graph.sends
    assert sent.body["template"] == {"name": "survey_csat", "language": {"code": "en_US"}}


def test_window_options_may_be_iso_strings_and_now_defaults_to_the_injected_clock(wa, graph) -> None:
    with pytest.raises(PermanentSendError, match=OUTSIDE_WINDOW):
        wa.send(WA_ID, "hello", options={"last_customer_message_at": (NOW - timedelta(hours=30)).isoformat()})
    wa.send(WA_ID, "hello", options={"last_customer_message_at": (NOW - timedelta(hours=1)).isoformat()})
    assert len(graph.sends) == 1


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-24T12:00:00", 12345])
def test_unusable_window_options_are_permanent(bad, wa, graph) -> None:
    with pytest.raises(PermanentSendError, match="last_customer_message_at"):
        wa.send(WA_ID, "hello", options={"last_customer_message_at": bad, "now": NOW})


# --- the pure error mapping ------------------------------------------------------------------


def test_is_transient_flag_from_graph_makes_any_code_transient() -> None:
    err = graph_error(400, {"error": {"code": 99999, "message": "x", "is_transient": True}}, {}, NOW)
    assert isinstance(err, TransientSendError)


def test_an_unreadable_4xx_is_permanent_and_an_unreadable_5xx_transient() -> None:
    assert isinstance(graph_error(404, None, {}, NOW), PermanentSendError)
    assert isinstance(graph_error(504, None, {}, NOW), TransientSendError)


def test_outside_the_window_a_configured_reply_template_carries_the_text(wa, graph) -> None:
    last = (NOW - timedelta(days=3)).isoformat()
    wa.send(WA_ID, "Your parcel left our warehouse today.", options={
        "last_customer_message_at": last, "now": NOW.isoformat(),
        "fallback_template": {"name": "support_reply", "language": "lt"}})
    [sent] = graph.sends
    assert sent.body["type"] == "template"
    assert sent.body["template"] == {"name": "support_reply", "language": {"code": "lt"}, "components": [
        {"type": "body", "parameters": [{"type": "text", "text": "Your parcel left our warehouse today."}]}]}


def test_inside_the_window_the_reply_template_is_not_used(wa, graph) -> None:
    wa.send(WA_ID, "Hello", options={"last_customer_message_at": NOW.isoformat(), "now": NOW.isoformat(),
                                      "fallback_template": {"name": "support_reply", "language": "lt"}})
    assert graph.sends[0].body["type"] == "text"


# --- a survey after the 24-hour window: the approved template with its quick-reply payloads ---


SURVEY_TEMPLATE = {"name": "csat_survey", "language": "pl", "components": [
    {"type": "button", "sub_type": "quick_reply", "index": str(i),
     "parameters": [{"type": "payload", "payload": f"sv:Tm5Qw8Er2Ty4Ui6O:{i + 1}"}]} for i in range(5)]}


def test_a_survey_template_reaches_meta_with_its_button_payloads(wa, graph) -> None:
    wa.send(WA_ID, "How would you rate the help you received?", options={
        "template": SURVEY_TEMPLATE, "phone_number_id": "106540352242999"})
    [sent] = graph.sends
    assert sent.target == "106540352242999"
    assert sent.body == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": WA_ID,
                         "type": "template", "template": {
                             "name": "csat_survey", "language": {"code": "pl"}, "components": [
                                 {"type": "button", "sub_type": "quick_reply", "index": "0",
                                  "parameters": [{"type": "payload", "payload": "sv:Tm5Qw8Er2Ty4Ui6O:1"}]},
                                 {"type": "button", "sub_type": "quick_reply", "index": "1",
                                  "parameters": [{"type": "payload", "payload": "sv:Tm5Qw8Er2Ty4Ui6O:2"}]},
                                 {"type": "button", "sub_type": "quick_reply", "index": "2",
                                  "parameters": [{"type": "payload", "payload": "sv:Tm5Qw8Er2Ty4Ui6O:3"}]},
                                 {"type": "button", "sub_type": "quick_reply", "index": "3",
                                  "parameters": [{"type": "payload", "payload": "sv:Tm5Qw8Er2Ty4Ui6O:4"}]},
                                 {"type": "button", "sub_type": "quick_reply", "index": "4",
                                  "parameters": [{"type": "payload", "payload": "sv:Tm5Qw8Er2Ty4Ui6O:5"}]}]}}


def test_a_survey_whose_window_closes_before_a_retry_goes_as_its_template(wa, graph) -> None:
    """The interactive survey was claimed inside the window; a retry after it closed sends the
    fallback template with its own components, not the question as a body parameter."""
    options = {"buttons": [[str(i), f"sv:Tm5Qw8Er2Ty4Ui6O:{i}"] for i in range(1, 6)], "list_button": "Oceń",
               "last_customer_message_at": (NOW - timedelta(hours=24, minutes=1)).isoformat(),
               "fallback_template": SURVEY_TEMPLATE}
    wa.send(WA_ID, "How would you rate the help you received?", options=options)
    [sent] = graph.sends
    assert sent.body["type"] == "template"
    assert sent.body["template"] == {**SURVEY_TEMPLATE, "language": {"code": "pl"}}

    options["last_customer_message_at"] = (NOW - timedelta(hours=2)).isoformat()
    wa.send(WA_ID, "How would you rate the help you received?", options=options)
    assert graph.sends[1].body["type"] == "interactive"
    assert [r["id"] for r in graph.sends[1].body["interactive"]["action"]["sections"][0]["rows"]] == [
        f"sv:Tm5Qw8Er2Ty4Ui6O:{i}" for i in range(1, 6)]

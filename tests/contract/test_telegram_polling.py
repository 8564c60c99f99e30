"""Telegram long polling against the fake Bot API over real HTTP (python-telegram-bot's getUpdates):
the same InboundMessages as the webhook, the offset kept across restarts, nothing lost when the
intake fails, pressed buttons answered (answerCallbackQuery) once, and the embedded mode answering
a polled message."""

from __future__ import annotations

import io
import json
import logging
import time
from pathlib import Path

import pytest

from services.embedded import start
from services.gateway.telegram_poller import TelegramPoller
from shared.contracts import SurveyAnswer
from shared.settings import load_settings
from tests.support.wait import until

TOKEN = "123456:poll-token"
SURVEY_PRESS = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "surveys"
                           / "telegram_callback_query_survey.json").read_text(encoding="utf-8"))


def update(update_id: int, text: str, user: int = 5012345678) -> dict:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": int(time.time()), "text": text,
        "from": {"id": user, "is_bot": False, "first_name": "Olena", "language_code": "uk"},
        "chat": {"id": user, "type": "private"}}}


def poller(fake_bot_api, tmp_path, accept) -> TelegramPoller:
    return TelegramPoller(TOKEN, bot_id="123456", accept=accept, api_base=fake_bot_api.base_url,
                          state_path=tmp_path / "offset.sqlite", long_poll_seconds=1)


def test_polled_updates_become_the_same_messages_as_webhooks_and_the_offset_moves_on(fake_bot_api, tmp_path) -> None:
    got = []
    fake_bot_api.queue_update(update(501, "Де моя посилка?"))
    fake_bot_api.queue_update({"update_id": 502, "edited_message": {"message_id": 1}})  # irrelevant kind
    fake_bot_api.queue_update(update(503, "Замовлення 48213"))
    p = poller(fake_bot_api, tmp_path, got.append)
    assert p.poll_once(timeout=0) == 2
    assert [(m.external_id, m.text, m.sender.value) for m in got] == [
        ("123456:501", "Де моя посилка?", "5012345678"), ("123456:503", "Замовлення 48213", "5012345678")]

    # A new poller (a restart) asks from the stored offset: nothing is fetched twice.
    again = poller(fake_bot_api, tmp_path, got.append)
    assert again.poll_once(timeout=0) == 0
    assert fake_bot_api.get_updates_offsets[-1] == 504


def test_an_update_the_intake_refused_is_fetched_again(fake_bot_api, tmp_path) -> None:
    fake_bot_api.queue_update(update(601, "first"))
    fake_bot_api.queue_update(update(602, "second"))
    got: list = []
    failures = ["second"]  # the broker and the spool both refuse "second", once

    def accept(msg) -> None:
        if msg.text in failures:
            failures.remove(msg.text)
            raise OSError("broker down and disk full")
        got.append(msg.text)

    p = poller(fake_bot_api, tmp_path, accept)
    with pytest.raises(OSError):
        p.poll_once(timeout=0)
    assert got == ["first"]
    assert p.poll_once(timeout=0) == 1  # "second" again, "first" not again
    assert got == ["first", "second"]
    assert fake_bot_api.get_updates_offsets[-1] == 602


def press(update_id: int, query_id: str, data: str) -> dict:
    return {**SURVEY_PRESS, "update_id": update_id, "callback_query": {**SURVEY_PRESS["callback_query"],
                                                                         "id": query_id, "data": data}}


def test_a_pressed_survey_button_is_accepted_and_answered_once(fake_bot_api, tmp_path) -> None:
    got: list = []
    fake_bot_api.queue_update(SURVEY_PRESS)
    fake_bot_api.queue_update(press(804211021, "77120000000000001", "menu:orders"))  # a button not ours
    p = poller(fake_bot_api, tmp_path, got.append)
    assert p.poll_once(timeout=0) == 1
    [answer] = got
    assert isinstance(answer, SurveyAnswer)
    assert (answer.token, answer.score, answer.external_id) == ("Qm3xT9aZ0bYc8dWe", 5, "123456:804211020")
    # Every press is answered, ours or not, each with its own callback_query_id, once.
    assert [a["callback_query_id"] for a in fake_bot_api.answered] == ["4382bfdwdsb323b2e1", "77120000000000001"]

    assert poller(fake_bot_api, tmp_path, got.append).poll_once(timeout=0) == 0  # a restart
    assert len(got) == 1 and len(fake_bot_api.answered) == 2


def test_a_refused_answer_is_logged_and_the_press_is_kept_once(fake_bot_api, tmp_path, caplog) -> None:
    got: list = []
    fake_bot_api.fail_answers_next(1)
    fake_bot_api.queue_update(SURVEY_PRESS)
    fake_bot_api.queue_update(update(804211021, "thanks!"))
    p = poller(fake_bot_api, tmp_path, got.append)
    with caplog.at_level(logging.WARNING, logger="services.gateway.telegram_poller"):
        assert p.poll_once(timeout=0) == 2
    assert [type(m).__name__ for m in got] == ["SurveyAnswer", "InboundMessage"]  # the rest of the batch too
    [warning] = [r for r in caplog.records if "answerCallbackQuery" in r.getMessage()]
    assert "query is too old" in warning.getMessage().lower() and warning.update_id == 804211020
    # Not retried, not fetched again: the press is one answer, the spinner Telegram's to time out.
    assert p.poll_once(timeout=0) == 0
    assert len(got) == 2 and fake_bot_api.answered == []
    assert fake_bot_api.get_updates_offsets[-1] == 804211022


def test_a_press_the_intake_refused_is_answered_only_when_accepted(fake_bot_api, tmp_path) -> None:
    got: list = []
    refuse = [True]

    def accept(msg) -> None:
        if refuse.pop() if refuse else False:
            raise OSError("broker down and disk full")
        got.append(msg)

    fake_bot_api.queue_update(SURVEY_PRESS)
    p = poller(fake_bot_api, tmp_path, accept)
    with pytest.raises(OSError):
        p.poll_once(timeout=0)
    assert fake_bot_api.answered == []  # not accepted, so not answered: the update comes again
    assert p.poll_once(timeout=0) == 1
    assert len(got) == 1
    assert [a["callback_query_id"] for a in fake_bot_api.answered] == ["4382bfdwdsb323b2e1"]


def test_embedded_mode_answers_a_message_that_came_by_long_polling(fake_bot_api, tmp_path) -> None:
    settings = load_settings({}, DATABASE_URL=f"sqlite:///{tmp_path}/sb.db", SWITCHBOARD_SPOOL_DIR=str(tmp_path),
                             TELEGRAM_BOT_TOKEN=TOKEN, TELEGRAM_API_BASE=fake_bot_api.base_url,
                             TELEGRAM_POLLING="true", BROKER_URL="memory://")
    from shared.config import load_config

    app = start(settings, load_config(settings.config_path), port=0, sandbox_out=io.StringIO())
    try:
        assert app.wait_ready()
        fake_bot_api.queue_update(update(701, "Hi, where is my parcel? Order 48213", user=6023456789))
        until(lambda: fake_bot_api.sent_to(6023456789), timeout=30, message="the acknowledgement")
        [ack] = fake_bot_api.sent_to(6023456789)
        assert "Olena" in ack.text
    finally:
        app.shutdown()

"""The Telegram sender through python-telegram-bot against a local fake Bot API server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from telegram.error import RetryAfter

from services.notifier.senders import PermanentSendError, TransientSendError
from services.notifier.senders.telegram import TelegramSender


@pytest.fixture
def sender(fake_bot_api):
    s = TelegramSender("123456:TEST-token", api_base=fake_bot_api.base_url, timeout=5)
    yield s
    s.close()


def test_sends_through_the_configured_api_base(sender, fake_bot_api) -> None:
    result = sender.send("5012345678", "Дякуємо! Відповімо до понеділка.")
    [sent] = fake_bot_api.sent_to("5012345678")
    assert sent.text == "Дякуємо! Відповімо до понеділка."
    assert sent.token == "123456:TEST-token"
    assert result.provider_message_id == "1"
    assert fake_bot_api.calls[0] == "getMe"  # the token is proven once, before the first send


def test_inline_buttons_reach_the_api(sender, fake_bot_api) -> None:
    sender.send("42", "Rate us", options={"buttons": [[("1", "csat:1"), ("5", "csat:5")]]})
    [sent] = fake_bot_api.sent_to("42")
    assert sent.reply_markup["inline_keyboard"][0][1] == {"text": "5", "callback_data": "csat:5"}


def test_a_business_chat_is_answered_through_its_business_connection(sender, fake_bot_api) -> None:
    # The router keeps a Telegram Business chat's connection id as the conversation's "from".
    sender.send("5012345678", "Так, є в розмірі M.", options={"from": "AbCdEfGh123456-business"})
    sender.send("6023456789", "Thanks!")
    [business] = fake_bot_api.sent_to("5012345678")
    [plain] = fake_bot_api.sent_to("6023456789")
    assert business.business_connection_id == "AbCdEfGh123456-business"
    assert plain.business_connection_id is None


def test_server_error_is_transient(sender, fake_bot_api) -> None:
    fake_bot_api.fail_next(1, 502)
    with pytest.raises(TransientSendError):
        sender.send("42", "hello")
    sender.send("42", "hello")  # the next call goes through
    assert len(fake_bot_api.sent_to("42")) == 1


def test_flood_control_is_transient_with_retry_after(sender, fake_bot_api) -> None:
    fake_bot_api.fail_next(1, 429, retry_after=7)
    with pytest.raises(TransientSendError) as info:
        sender.send("42", "hello")
    assert info.value.retry_after == 7


@pytest.mark.parametrize("status", [403, 400])
def test_blocked_bot_and_bad_chat_are_permanent(sender, fake_bot_api, status) -> None:
    fake_bot_api.fail_next(1, status)
    with pytest.raises(PermanentSendError):
        sender.send("42", "hello")
    assert fake_bot_api.sent_to("42") == []


def test_an_api_that_does_not_answer_is_transient_within_the_timeout() -> None:
    # Accepts connections (the kernel's backlog) and never answers: the client's read timeout ends the call.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        sender = TelegramSender("123456:TEST-token", api_base=f"http://127.0.0.1:{port}/bot", timeout=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(TransientSendError, match="timed out|Timed out"):
                sender.send("42", "hello")
            assert time.monotonic() - started < 5
        finally:
            sender.close()


def test_an_unreachable_api_is_transient() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sender = TelegramSender("123456:TEST-token", api_base=f"http://127.0.0.1:{port}/bot", timeout=2)
    try:
        with pytest.raises(TransientSendError, match="unreachable"):
            sender.send("42", "hello")
    finally:
        sender.close()


def test_each_sending_thread_sends_on_its_own_and_close_ends_them_all(fake_bot_api) -> None:
    # No thread of the sender's own: a send runs on its caller's thread, so none is left behind.
    before = set(threading.enumerate())
    sender = TelegramSender("123456:TEST-token", api_base=fake_bot_api.base_url, timeout=5)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda n: sender.send(str(n), f"message {n}").provider_message_id, range(9)))
    sender.close()
    assert sorted(results, key=int) == [str(n) for n in range(1, 10)]
    assert sorted(s.chat_id for s in fake_bot_api.sent) == sorted(str(n) for n in range(9))
    # (The fake API's threads serving the kept-alive connections are the fake's, not the sender's.)
    left = [t for t in set(threading.enumerate()) - before if "process_request" not in t.name]
    assert left == []


def test_a_call_that_waits_on_the_event_loop_still_finishes(fake_bot_api) -> None:
    # Sends run PTB's coroutine without a loop while it never waits on one; a PTB step that does
    # wait (a sleep, a future) is finished on the thread's own loop, answers and errors included.
    # (The first step runs outside a loop: what needs the running loop comes after a first yield.)
    sender = TelegramSender("123456:TEST-token", api_base=fake_bot_api.base_url, timeout=5)

    async def waits_then_sends() -> str:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        return sender.send("42", "after a wait").provider_message_id or ""

    async def waits_then_fails() -> None:
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        raise RetryAfter(3)

    try:
        assert sender.send("41", "first").provider_message_id == "1"
        assert sender._run(waits_then_sends()) == "2"
        with pytest.raises(TransientSendError) as info:
            sender._call(waits_then_fails())
        assert info.value.retry_after == 3.0
    finally:
        sender.close()
    assert [s.text for s in fake_bot_api.sent] == ["first", "after a wait"]

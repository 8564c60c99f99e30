"""Keep-alive: each provider's client library, as the senders use it, carries many sends over few
TCP connections to the (fake) provider, counted where they are accepted — one connect, and for
SMTP one EHLO, STARTTLS and login, for many messages instead of one per message."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.notifier.senders import Sender
from services.notifier.senders.email import SmtpSender
from services.notifier.senders.meta import MessengerSender, WhatsAppSender
from services.notifier.senders.telegram import TelegramSender
from services.notifier.senders.twilio_sms import TwilioSmsSender
from tests.fakes.graph_api import FakeGraphApi
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support.smtp import SmtpServer

SENDS = 40
THREADS = 4  # consumers sending at once share the sender's pool


def send_all(sender: Sender, addresses: list[str]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(sender.send, address, f"message {i}") for i, address in enumerate(addresses)]:
            future.result()


def test_telegram_sends_share_one_pool_of_kept_connections(fake_bot_api) -> None:
    sender = TelegramSender("123456:TEST-token", api_base=fake_bot_api.base_url, timeout=5)
    try:
        send_all(sender, [str(5012345000 + i) for i in range(SENDS)])
    finally:
        sender.close()
    assert len(fake_bot_api.sent) == SENDS
    # getMe and the sends: at most one connection per thread sending at once.
    assert fake_bot_api.connections <= THREADS + 1


@pytest.fixture
def fake_twilio():
    fake = FakeTwilioApi().start()
    yield fake
    fake.stop()


def test_twilio_sends_share_one_keep_alive_session(fake_twilio) -> None:
    sender = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, "+48732125400", api_base=fake_twilio.base_url, timeout=5)
    try:
        send_all(sender, [f"+4860123{i:04d}" for i in range(SENDS)])
    finally:
        sender.close()
    assert len(fake_twilio.sent) == SENDS
    assert fake_twilio.connections <= THREADS


@pytest.fixture
def graph():
    fake = FakeGraphApi().start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("make", [
    lambda base: MessengerSender("page-token", base),
    lambda base: WhatsAppSender("wa-token", base, "106540352242922"),
], ids=["messenger", "whatsapp"])
def test_meta_sends_share_one_keep_alive_client(graph, make: Callable[[str], Sender]) -> None:
    sender = make(graph.base_url)
    try:
        # WhatsApp's free-form text needs the customer's window open: a template needs none.
        options = {"template": {"name": "hello_world", "language": "en_US"}}
        with ThreadPoolExecutor(THREADS) as pool:
            for future in [pool.submit(sender.send, f"4860123{i:04d}", "hello", options=options)
                           for i in range(SENDS)]:
                future.result()
    finally:
        sender.close()
    assert len(graph.sends) == SENDS
    assert graph.connections <= THREADS


def test_consecutive_mails_share_one_smtp_connection() -> None:
    server = SmtpServer().start()
    sender = SmtpSender("127.0.0.1", server.port, None, None, from_address="support@shop.example",
                        domain="shop.example", security="none", timeout=5)
    try:
        for i in range(SENDS):
            sender.send(f"customer{i}@example.com", f"message {i}")
        assert len(server.received) == SENDS
        assert len(server.sessions) == 1
        sender.max_idle = 0  # reuse off: a connection per mail, as before
        for i in range(3):
            sender.send(f"customer{i}@example.com", f"again {i}")
        assert len(server.sessions) == 1 + 3
    finally:
        sender.close()
        server.stop()


def test_a_kept_smtp_connection_the_server_dropped_costs_a_reconnect_not_a_mail() -> None:
    server = SmtpServer().start()
    sender = SmtpSender("127.0.0.1", server.port, None, None, from_address="support@shop.example",
                        domain="shop.example", security="none", timeout=5)
    try:
        sender.send("anna@example.com", "first")
        server.stop()  # drops the kept connection, as a server's idle timeout does
        server.start()  # ... and is back, on a new port
        sender.port = server.port
        sender.send("anna@example.com", "second")
        assert [b"second" in r.content for r in server.received] == [False, True]  # once, not lost
        assert len(server.sessions) == 2
    finally:
        sender.close()
        server.stop()

"""One slow provider delays no other channel (issue "Channels": sends run concurrently).

The notifier's consumers against the real RabbitMQ and PostgreSQL, with the real Twilio and
Telegram client libraries pointed at local fakes: Twilio takes 5 s to answer each message, and a
Telegram customer's acknowledgement queued behind a burst of SMS ones still leaves at once.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial

import pytest
from sqlalchemy import select

from services.notifier.handlers import MAX_SEND_ATTEMPTS, NotifierDeps, handle_event
from services.notifier.models import Outbox
from services.notifier.senders import Registry
from services.notifier.senders.sandbox import SandboxSender
from services.notifier.senders.telegram import TelegramSender
from services.notifier.senders.twilio_sms import TwilioSmsSender
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import NOTIFIER_EVENTS
from shared.contracts import ConversationOpened, Envelope
from shared.db import make_engine, migrate, session_factory
from tests.fakes.telegram_api import FakeBotApi
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FakeTwilioApi
from tests.support.wait import until

pytestmark = pytest.mark.integration

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
CONSUMERS = 4
TWILIO_SECONDS = 5.0


def opened(n: int, channel: str, reply_to: str) -> Envelope:
    ev = ConversationOpened(
        conversation_id=f"bulkhead-{channel}-{n}", opening=1, reference="SB-ABCDEFGHIJ", customer_id=f"c{n}",
        customer_name=None, channel=channel, reply_to=reply_to, language="en", category="delivery",
        owner_id=None, owner_name=None, assignment_reason="r", received_at=AT, promise_due=AT + timedelta(hours=4),
        inbound_message_id=f"in-{channel}-{n}", acknowledge=True)
    return Envelope.wrap(ev, message_id=f"bulkhead-{channel}-{n}", correlation_id=f"c-{n}", occurred_at=AT)


@pytest.fixture
def fakes():
    twilio = FakeTwilioApi(delay=TWILIO_SECONDS).start()
    telegram = FakeBotApi().start()
    yield twilio, telegram
    twilio.stop()
    telegram.stop()


def test_a_slow_sms_provider_does_not_hold_up_a_telegram_acknowledgement(example_config, pg_url, rabbit_url,
                                                                           fakes) -> None:
    twilio, telegram = fakes
    engine = make_engine(pg_url)
    migrate(engine)
    sessions = session_factory(engine)
    sms = TwilioSmsSender(ACCOUNT_SID, AUTH_TOKEN, "+48732125400", api_base=twilio.base_url, timeout=10)
    bot = TelegramSender("123:TEST", api_base=telegram.base_url)
    senders = Registry({"sms": sms, "telegram": bot, "email": SandboxSender("email", out=open("/dev/null", "w"))},
                       max_in_flight=CONSUMERS - 2)
    deps = NotifierDeps(config=example_config, sessions=sessions, senders=senders,
                        compose_ack=lambda ev, at: f"Thank you, {ev.reference}", clock=lambda: AT)
    publisher = Publisher(rabbit_url)
    worker = Worker(url=rabbit_url, spec=NOTIFIER_EVENTS, handler=partial(handle_event, deps=deps),
                    publisher=publisher, prefetch=1, name="bulkhead", max_attempts=MAX_SEND_ATTEMPTS)
    stop = threading.Event()
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True) for _ in range(CONSUMERS)]
    for t in threads:
        t.start()
    try:
        assert worker.ready.wait(20)
        # A burst of SMS acknowledgements (more than there are consumers), then one on Telegram.
        for n in range(6):
            publisher.publish(opened(n, "sms", f"+4860012340{n}"))
        publisher.publish(opened(0, "telegram", "777"))
        started = time.monotonic()
        until(lambda: telegram.sent_to("777"), timeout=30, message="the Telegram acknowledgement")
        waited = time.monotonic() - started
        # Without the bulkhead every consumer would be waiting on Twilio and the Telegram message
        # would leave only after the first SMS did (5 s); with it, before any SMS has.
        assert twilio.sent == [], f"an SMS finished first; Telegram waited {waited:.1f}s"
        # And the slow channel still gets everything out, each message once.
        until(lambda: len(twilio.sent) == 6, timeout=90, message="all six SMS acknowledgements")
        with sessions() as s:
            statuses = s.scalars(select(Outbox.status).where(Outbox.kind == "ack")).all()
        assert sorted(statuses) == ["sent"] * 7
        assert sorted(m.to for m in twilio.sent) == [f"+4860012340{n}" for n in range(6)]
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        publisher.close()
        senders.close()
        engine.dispose()

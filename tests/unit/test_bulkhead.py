"""The notifier's bulkhead (services/notifier/senders Registry.slot): a provider's places."""

from __future__ import annotations

import threading
import time

import pytest

from services.notifier.senders import ChannelBusy, Registry, SendResult


class Quiet:
    channel = "sms"

    def send(self, address, text, *, options=None) -> SendResult:
        return SendResult("x")


def test_a_full_provider_makes_the_next_send_wait_for_a_place_not_fail() -> None:
    sms = Quiet()
    registry = Registry({"sms": sms, "phone": sms, "telegram": Quiet()}, max_in_flight=1, wait=2.0)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with registry.slot("sms"):
            held.set()
            release.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(5)
    with registry.slot("telegram"):  # another provider is not held up at all
        pass
    threading.Timer(0.2, release.set).start()  # a healthy provider frees its place quickly
    started = time.monotonic()
    with registry.slot("phone") as sender:  # phone calls are answered by SMS: Twilio's place
        assert sender is sms
    assert 0.1 < time.monotonic() - started < 2.0
    t.join(5)


def test_a_provider_that_stays_full_sends_the_message_back_to_wait_on_the_bus() -> None:
    registry = Registry({"sms": Quiet()}, max_in_flight=1, wait=0.2)
    with registry.slot("sms"):
        with pytest.raises(ChannelBusy) as info:
            with registry.slot("sms"):
                pass
    assert info.value.retry_after == 1.0
    with registry.slot("sms"):  # the place was given back
        pass

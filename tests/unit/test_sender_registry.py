"""The notifier's sender registry (services/notifier/bootstrap.py): one line a channel, the sandbox
wherever a channel's credentials are unset, phone answered by the very sender of SMS."""

from __future__ import annotations

from services.notifier.bootstrap import SENDERS, SENT_AS, build_senders
from services.notifier.senders.sandbox import SandboxSender
from shared.contracts import CHANNELS
from shared.settings import load_settings

NONE = load_settings({})
CREDENTIALS = load_settings({}, TWILIO_ACCOUNT_SID="AC" + "0" * 32, TWILIO_AUTH_TOKEN="token-0123456789",
                            META_PAGE_TOKEN="page-token", WHATSAPP_TOKEN="wa-token",
                            TELEGRAM_BOT_TOKEN="123456:ABC", SMTP_HOST="smtp.example")


def test_the_registry_names_only_channels_and_every_channel_has_a_sender_or_an_alias() -> None:
    assert set(SENDERS) | set(SENT_AS) <= set(CHANNELS)
    assert set(SENT_AS.values()) <= set(SENDERS)
    assert set(CHANNELS) == set(SENDERS) | set(SENT_AS)


def test_without_credentials_every_channel_is_the_sandbox(example_config) -> None:
    registry = build_senders(NONE, example_config)
    senders = {channel: registry.for_channel(channel) for channel in CHANNELS}
    assert all(isinstance(sender, SandboxSender) for sender in senders.values())
    assert senders["phone"] is senders["sms"]


def test_with_credentials_every_registered_channel_has_its_real_sender(example_config) -> None:
    registry = build_senders(CREDENTIALS, example_config)
    senders = {channel: registry.for_channel(channel) for channel in CHANNELS}
    assert {channel for channel, sender in senders.items() if isinstance(sender, SandboxSender)} == set()
    assert type(senders["sms"]).__name__ == "TwilioSmsSender" and senders["phone"] is senders["sms"]
    assert senders["messenger"] is not senders["instagram"]  # each its own bulkhead, as before
    assert type(senders["email"]).__name__ == "SmtpSender"

"""Settings that keep a deployment safe: IMAP never logs in in clear by accident, the embedded mode
never listens beyond loopback with the published development secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.embedded import check_bind, development_secrets
from services.gateway.imap_poller import ImapPoller
from shared.errors import ConfigError
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
ALL_SECRETS = {"TELEGRAM_WEBHOOK_SECRET": "tg-secret-0123456789", "TWILIO_AUTH_TOKEN": "9f3c1d2e4b5a69788f7e6d5c4b3a2910",
               "META_APP_SECRET": "meta-app-secret-0123", "META_VERIFY_TOKEN": "meta-verify-0123",
               "EMAIL_RELAY_SECRET": "relay-secret-0123456"}


def test_imap_without_tls_is_refused_at_start() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"IMAP_HOST": "mail.example", "IMAP_SECURITY": "none"})
    assert "IMAP_SECURITY" in str(info.value) and "IMAP_ALLOW_INSECURE" in str(info.value)


def test_imap_without_tls_needs_the_explicit_flag() -> None:
    settings = load_settings({"IMAP_HOST": "127.0.0.1", "IMAP_SECURITY": "none", "IMAP_ALLOW_INSECURE": "1"})
    assert settings.imap_security == "none" and settings.imap_allow_insecure


def test_the_poller_itself_refuses_a_login_in_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match="in clear"):
        ImapPoller("127.0.0.1", 143, "support", "pw", state_path=tmp_path / "s.sqlite", accept=lambda m: None,
                   our_domains=["northwind.example"], clock=lambda: None, ssl=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "switchboard.example"])
def test_embedded_mode_refuses_a_public_bind_with_a_development_secret(host: str) -> None:
    settings = load_settings({**ALL_SECRETS, "TWILIO_AUTH_TOKEN": ""})
    assert development_secrets(settings) == ["TWILIO_AUTH_TOKEN"]
    with pytest.raises(ConfigError) as info:
        check_bind(settings, host)
    assert "TWILIO_AUTH_TOKEN" in info.value.render()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_embedded_mode_on_loopback_is_fine_with_development_secrets(host: str) -> None:
    check_bind(load_settings({}), host)


def test_embedded_mode_on_a_public_address_with_every_secret_set() -> None:
    check_bind(load_settings(ALL_SECRETS), "0.0.0.0")


def test_switchboard_run_on_all_interfaces_exits_2_naming_the_secrets(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ALL_SECRETS}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/sb.db"
    done = subprocess.run([sys.executable, "-m", "services.cli", "run", "--host", "0.0.0.0", "--port", "0"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "TELEGRAM_WEBHOOK_SECRET" in done.stderr and "127.0.0.1" in done.stderr

"""What a newcomer sees: `switchboard run` in one process, `switchboard simulate` from another.

Runs the real console scripts as subprocesses, on a free port with a throw-away ./var.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.db import query
from tests.support.procs import ROOT, embedded_run
from tests.support.wait import until

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture
def embedded(tmp_path):
    with embedded_run(tmp_path, ROOT / "deploy" / "switchboard.yaml") as run:
        yield run.base, run.env, run.log
    assert run.proc.returncode == 0  # Ctrl-C / SIGTERM is a clean stop


def simulate(base: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "switchboard"), "simulate", "telegram", *args, "--url", base], env=env,
                          capture_output=True, text=True, timeout=30)


def test_newcomer_sees_the_acknowledgement_printed(embedded) -> None:
    base, env, out = embedded
    banner = out.read_text()
    assert "Switchboard is running in embedded mode" in banner and "simulate telegram" in banner
    done = simulate(base, env, "Where is my parcel?", "--name", "Alex Customer", "--update-id", "77")
    assert done.returncode == 0 and "→ 200" in done.stdout, done.stdout + done.stderr
    until(lambda: "[sandbox telegram → 424242]" in out.read_text(), timeout=30, message="the printed ack")
    text = out.read_text()
    assert "Alex" in text

    # Telegram's redelivery of the same update: no second acknowledgement.
    assert simulate(base, env, "Where is my parcel?", "--update-id", "77").returncode == 0
    assert simulate(base, env, "Gdzie jest moja paczka?", "--user-id", "5150", "--lang", "pl",
                    "--update-id", "78").returncode == 0
    until(lambda: "[sandbox telegram → 5150]" in out.read_text(), timeout=30, message="the second ack")
    assert out.read_text().count("[sandbox telegram → 424242]") == 1


def test_simulate_with_a_wrong_secret_is_refused(embedded) -> None:
    base, env, _ = embedded
    done = simulate(base, env, "hello", "--secret", "not-the-secret")
    assert done.returncode == 1 and "403" in done.stdout


def test_a_broken_config_stops_with_exit_code_2_and_the_key_path(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text((ROOT / "deploy" / "switchboard.yaml").read_text().replace(
        'hours: {mon: "12:00-20:00"', 'hours: {mon: "12-20"', 1))
    env = {**os.environ, "SWITCHBOARD_CONFIG": str(broken)}
    for cmd in ([str(BIN / "switchboard"), "run"], [sys.executable, "-m", "services.router"],
                [sys.executable, "-m", "services.gateway"], [sys.executable, "-m", "services.notifier"]):
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (cmd, done.stderr)
        assert 'agents[1].hours.mon: "12-20" is not HH:MM-HH:MM' in done.stderr


def test_an_agent_answers_through_the_api_on_the_same_port(embedded) -> None:
    base, env, out = embedded
    assert simulate(base, env, "Where is my parcel?", "--user-id", "6060", "--update-id", "91").returncode == 0
    until(lambda: "[sandbox telegram → 6060]" in out.read_text(), timeout=30, message="the ack")
    done = subprocess.run([str(BIN / "switchboard"), "agents", "token", "anna"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    auth = {"Authorization": f"Bearer {done.stdout.strip()}"}
    assert httpx.get(base + "/api/v1/conversations", timeout=10).status_code == 401
    convs = httpx.get(base + "/api/v1/conversations", headers=auth, timeout=10).json()["conversations"]
    [conv] = [c for c in convs if c["channel"] == "telegram"]  # anna leads the one team: she sees it
    r = httpx.post(f"{base}/api/v1/conversations/{conv['id']}/reply", json={"text": "Your parcel left today."},
                   headers=auth, timeout=10)
    assert r.status_code == 201, r.text
    until(lambda: "Your parcel left today." in out.read_text(), timeout=30, message="the reply sent")
    assert out.read_text().count("[sandbox telegram → 6060]") == 2
    assert "/api/v1/conversations/{conversation_id}/reply" in httpx.get(base + "/api/v1/openapi.json",
                                                                         timeout=10).json()["paths"]


def simulate_on(base: str, env: dict, channel: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "switchboard"), "simulate", channel, *args, "--url", base], env=env,
                          capture_output=True, text=True, timeout=30)


def test_every_webhook_channel_can_be_simulated_and_is_answered_on_its_own_channel(embedded) -> None:
    base, env, out = embedded
    sent = {
        "sms": simulate_on(base, env, "sms", "Dzień dobry, gdzie jest moja paczka?", "--from", "+48601234567"),
        "whatsapp": simulate_on(base, env, "whatsapp", "Laba diena, kur mano siuntinys?", "--from", "+37061234567"),
        "messenger": simulate_on(base, env, "messenger", "Hallo, wo ist mein Paket?", "--from", "7712345678901234"),
        "email": simulate_on(base, env, "email", "Hello, my order 48213 has not arrived yet.",
                             "--from", "mark@example.com", "--subject", "Order 48213"),
        # Instagram is in redirect mode in the example config: one note says where to write instead.
        "instagram": simulate_on(base, env, "instagram", "Hi! Is the jacket in stock?", "--from", "178414000001"),
    }
    for channel, done in sent.items():
        assert done.returncode == 0 and "→ 200" in done.stdout, (channel, done.stdout, done.stderr)
    for header in ("[sandbox sms → +48601234567]", "[sandbox whatsapp → 37061234567]",
                   "[sandbox messenger → 7712345678901234]", "[sandbox email → mark@example.com]",
                   "[sandbox instagram → 178414000001]"):
        until(lambda h=header: h in out.read_text(), timeout=30, message=header)
    assert "https://m.me/northwind" in out.read_text()  # the redirect note


def test_a_forged_signature_is_refused_on_every_simulated_channel(embedded) -> None:
    base, env, _ = embedded
    for channel in ("sms", "whatsapp", "email"):
        done = simulate_on(base, env, channel, "hello", "--secret", "not-the-secret")
        assert done.returncode == 1 and "→ 403" in done.stdout, (channel, done.stdout)


def test_a_newcomer_can_leave_a_voicemail_or_hang_up_and_is_answered_by_sms(embedded) -> None:
    base, env, out = embedded
    voicemail = simulate_on(base, env, "call", "Please call me back about order 4471", "--from", "+48601777666")
    # Four callbacks, five in hours (the <Dial> nobody answered first): each answered 200.
    steps = voicemail.stdout.count("POST ")
    assert voicemail.returncode == 0 and steps in (4, 5) and voicemail.stdout.count("→ 200") == steps, (
        voicemail.stdout + voicemail.stderr)
    assert "<Record " in voicemail.stdout and "<Hangup />" in voicemail.stdout  # the TwiML a caller hears
    missed = simulate_on(base, env, "call", "", "--hang-up", "--from", "+48601777555")
    assert missed.returncode == 0 and missed.stdout.count("→ 200") == 2, missed.stdout + missed.stderr
    # Both callers are answered by SMS, once each: the one who hung up before the beep too.
    for number in ("+48601777666", "+48601777555"):
        until(lambda n=number: f"[sandbox sms → {n}]" in out.read_text(), timeout=30, message=f"the SMS to {number}")
    done = subprocess.run([str(BIN / "switchboard"), "agents", "token", "anna"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    auth = {"Authorization": f"Bearer {done.stdout.strip()}"}
    convs = httpx.get(base + "/api/v1/conversations", headers=auth, timeout=10).json()["conversations"]
    phone = [c for c in convs if c["channel"] == "phone"]
    assert len(phone) == 2
    texts = [m["text"] for c in phone
             for m in httpx.get(f"{base}/api/v1/conversations/{c['id']}", headers=auth, timeout=10).json()["history"]]
    assert "Please call me back about order 4471" in texts  # the transcript is the voicemail's text
    text = out.read_text()
    assert text.count("[sandbox sms → +48601777666]") == 1 and text.count("[sandbox sms → +48601777555]") == 1


def test_a_texting_customers_owner_reaches_the_gateways_own_table_for_their_calls(embedded) -> None:
    # One process, the in-memory bus: the router's ownership.phone reaches the gateway's consumer,
    # which keeps whom this number's calls ring in its own table, beside the router's.
    base, env, out = embedded
    done = simulate_on(base, env, "sms", "Dzień dobry, gdzie jest moja paczka?", "--from", "+48601234567")
    assert done.returncode == 0 and "→ 200" in done.stdout, (done.stdout, done.stderr)
    db = env["DATABASE_URL"]
    rows = until(lambda: query(db, "SELECT phone, owner_id, open FROM gateway_phone_owners"), timeout=30,
                 message="the gateway's row for the number")
    assert rows == [("+48601234567", *query(db, "SELECT owner_id FROM conversations")[0], 1)]


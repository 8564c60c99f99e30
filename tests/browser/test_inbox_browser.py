"""The inbox in a real browser: the embedded mode (`switchboard run`) as a process, a fake Telegram
Bot API, chromium driven by Playwright.

A customer writes on Telegram with a script tag in the message; the lead logs in with a token from
`switchboard agents token`, sees the message as text, replies with a macro, resolves; the reply
arrives at the fake Bot API. Screenshots of the inbox and the dashboard go to test-artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.browser.conftest import ARTIFACTS
from tests.support.procs import ROOT, embedded_run
from tests.support.wait import until

BIN = Path(sys.executable).parent
TOKEN = "123456:browser-test-token"
SECRET = "browser-test-secret"
CHAT = 5550001
XSS = "<script>alert(1)</script> Where is my parcel? <img src=x onerror=alert(2)>"


@pytest.fixture
def embedded(tmp_path, fake_bot_api):
    # The example config, with the survey due one second after resolution instead of an hour.
    config = tmp_path / "switchboard.yaml"
    config.write_text((ROOT / "deploy" / "switchboard.yaml").read_text().replace("  delay: 1h", "  delay: 1s"))
    with embedded_run(tmp_path, config, {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_API_BASE": fake_bot_api.base_url,
                                         "TELEGRAM_WEBHOOK_SECRET": SECRET}) as run:
        yield run.base, run.env


def customer_writes(base: str, text: str) -> None:
    now = int(time.time())
    update = {"update_id": now % 1_000_000, "message": {
        "message_id": 1, "date": now, "text": text,
        "from": {"id": CHAT, "is_bot": False, "first_name": "Alex", "last_name": "Customer", "language_code": "en"},
        "chat": {"id": CHAT, "type": "private", "first_name": "Alex"}}}
    r = httpx.post(base + "/webhooks/telegram", json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
                   timeout=10)
    assert r.status_code == 200, r.text


def test_lead_replies_with_a_macro_and_resolves_in_a_real_browser(embedded, fake_bot_api, page) -> None:
    base, env = embedded
    customer_writes(base, XSS)
    until(lambda: fake_bot_api.sent_to(CHAT), timeout=30, message="the acknowledgement")
    token = subprocess.run([str(BIN / "switchboard"), "agents", "token", "anna"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert token.returncode == 0, token.stderr
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    page.goto(base + "/inbox/")
    assert "/inbox/login" in page.url
    page.fill("#token-login input[name=token]", token.stdout.strip())
    page.click("#token-login button")
    page.wait_for_url(base + "/inbox/")
    row = page.locator("table.list tbody tr").first
    assert "Alex Customer" in row.inner_text() and ("due in" in row.inner_text() or "overdue" in row.inner_text())
    page.screenshot(path=str(ARTIFACTS / "inbox.png"), full_page=True)

    page.click("text=Alex Customer")
    message = page.locator(".msg.in .text").first
    assert message.inner_text() == XSS  # shown as text, tags and all
    assert page.locator(".msg.in .text script, .msg.in .text img").count() == 0
    assert page.locator(".conv-head .badge.ch-telegram").is_visible()

    page.select_option("#macro", "delivery-late")
    page.fill("input[name=order_number]", "NW-4711")
    page.click("#insert-macro")
    page.wait_for_url("**macro=delivery-late**")
    draft = page.input_value("#reply-form textarea")
    assert draft.startswith("Hello Alex Customer,") and "order NW-4711" in draft and "Anna Kowalska" in draft
    page.screenshot(path=str(ARTIFACTS / "conversation.png"), full_page=True)
    page.click("#send")
    page.wait_for_selector("text=Reply sent on telegram")
    reply = until(lambda: [s for s in fake_bot_api.sent_to(CHAT) if "NW-4711" in s.text], timeout=30,
                  message="the reply at the fake Bot API")
    assert reply[0].text == draft and len(reply) == 1

    page.click("#resolve")
    page.wait_for_selector("text=Resolved.")
    assert page.locator(".status-resolved").inner_text() == "resolved"

    # The survey follows the resolution on the customer's channel, with its answer buttons.
    survey = until(lambda: [s for s in fake_bot_api.sent_to(CHAT) if s.reply_markup], timeout=30,
                   message="the survey at the fake Bot API")
    assert len(survey) == 1 and len(fake_bot_api.sent_to(CHAT)) == 3  # ack, reply, survey

    page.goto(base + "/dashboard/")
    assert page.locator("#heatmap").is_visible() and page.locator("#trend").is_visible()
    assert page.locator("#kpi-conversations").inner_text() == "1"
    assert page.locator("#kpi-kept").inner_text() == "100.0 %"
    assert page.locator("#kpi-survey-rate").inner_text() == "0.0 %"  # sent, not answered yet
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert dialogs == []  # no customer script ever ran

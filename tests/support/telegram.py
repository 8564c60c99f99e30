"""A customer's Telegram message as the Bot API sends it to our webhook, for the end-to-end tests."""

from __future__ import annotations

import time
from datetime import datetime

import httpx

from tests.support.procs import TELEGRAM_SECRET, Services


def update(update_id: int, user: int, text: str, name: str = "Olena", lang: str = "uk", *,
           at: datetime | None = None) -> dict:
    """A private chat's text message; `at`: the phone's own date of it (now when not given)."""
    return {"update_id": update_id, "message": {
        "message_id": update_id % 1000, "date": int(at.timestamp() if at else time.time()), "text": text,
        "from": {"id": user, "is_bot": False, "first_name": name, "language_code": lang},
        "chat": {"id": user, "type": "private", "first_name": name}}}


def post(svc: Services, body: dict, secret: str = TELEGRAM_SECRET) -> httpx.Response:
    """The webhook, signed with the secret token (another one: a forged request)."""
    return httpx.post(f"{svc.gateway}/webhooks/telegram", json=body, timeout=10,
                      headers={"X-Telegram-Bot-Api-Secret-Token": secret})

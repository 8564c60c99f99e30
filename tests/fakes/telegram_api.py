"""A fake Telegram Bot API server: a real HTTP server on loopback that python-telegram-bot talks to.

It records every sendMessage and every answerCallbackQuery, and can be told to fail:
`fail_next(n, status=500)` or a 429 with retry_after, to test the sender's retry behaviour through
the real client library; `fail_answers_next(n)` refuses answerCallbackQuery as Telegram does for a
query that is too old.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.http import FakeHandler, FakeServer


@dataclass
class Sent:
    token: str
    chat_id: str
    text: str
    reply_markup: Any
    at: float
    business_connection_id: str | None = None  # sent on behalf of a Telegram Business account


@dataclass
class FakeBotApi(FakeServer):
    bot_id: int = 123456
    sent: list[Sent] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    _failures: list[tuple[int, dict]] = field(default_factory=list)
    updates: list[dict] = field(default_factory=list)  # queued for getUpdates (long polling)
    _outage_until: float = 0.0
    _outage_statuses: tuple[int, ...] = (500,)
    _failed: int = 0
    get_updates_offsets: list[int] = field(default_factory=list)
    answered: list[dict] = field(default_factory=list)  # answerCallbackQuery parameters, in order
    _answer_failures: int = 0
    reject_token: bool = False  # getMe answers 401, as Telegram does for a revoked bot token
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeBotApi:
        fake = self
        ids = itertools.count(1)

        class Handler(FakeHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.read_body().decode()
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("application/json"):
                    params = json.loads(raw or "{}")
                else:
                    params = {k: v[0] for k, v in parse_qs(raw).items()}
                # /bot<token>/<method>
                _, _, rest = self.path.partition("/bot")
                token, _, method = rest.partition("/")
                with fake._lock:
                    fake.calls.append(method)
                    failure = fake._failures.pop(0) if fake._failures and method == "sendMessage" else None
                    if failure is None and method == "sendMessage" and time.time() < fake._outage_until:
                        # An outage: the statuses given to fail_for, in turn.
                        status = fake._outage_statuses[fake._failed % len(fake._outage_statuses)]
                        failure = (status, fake._error_body(status, 1))
                    if failure is not None:
                        fake._failed += 1
                if failure:
                    status, body = failure
                    return self._reply(status, body)
                if method == "getMe" and fake.reject_token:
                    return self._reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
                if method == "getMe":
                    return self._reply(200, {"ok": True, "result": {
                        "id": fake.bot_id, "is_bot": True, "first_name": "Switchboard", "username": "switchboard_bot",
                        "can_join_groups": False, "can_read_all_group_messages": False, "supports_inline_queries": False}})
                if method == "sendMessage":
                    markup = params.get("reply_markup")
                    if isinstance(markup, str):
                        markup = json.loads(markup)
                    text = params.get("text", "")
                    with fake._lock:
                        fake.sent.append(Sent(token, str(params.get("chat_id")), text, markup, time.time(),
                                              params.get("business_connection_id")))
                    return self._reply(200, {"ok": True, "result": {
                        "message_id": next(ids), "date": int(time.time()), "text": text,
                        "chat": {"id": int(params.get("chat_id", 0)), "type": "private"}}})
                if method == "getUpdates":
                    # Long polling: what is queued from the offset on; updates below it are forgotten,
                    # as Telegram does. Waits a little (not the whole timeout) when nothing is queued.
                    offset = int(params.get("offset") or 0)
                    deadline = time.time() + min(float(params.get("timeout") or 0), 0.5)
                    while True:
                        with fake._lock:
                            fake.updates = [u for u in fake.updates if u["update_id"] >= offset]
                            batch = fake.updates[: int(params.get("limit") or 100)]
                            fake.get_updates_offsets.append(offset)
                        if batch or time.time() >= deadline:
                            return self._reply(200, {"ok": True, "result": batch})
                        time.sleep(0.05)
                if method == "answerCallbackQuery":
                    with fake._lock:
                        refuse = fake._answer_failures > 0
                        if refuse:
                            fake._answer_failures -= 1
                        else:
                            fake.answered.append(params)
                    if refuse:
                        return self._reply(400, {"ok": False, "error_code": 400, "description":
                                                 "Bad Request: query is too old and response timeout expired"
                                                 " or query ID is invalid"})
                    return self._reply(200, {"ok": True, "result": True})
                if method in ("setWebhook", "deleteWebhook", "close", "logOut"):
                    return self._reply(200, {"ok": True, "result": True})
                return self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})

            def _reply(self, status: int, body: dict) -> None:
                self.send_json(status, body)

        self.serve(Handler)
        return self

    @property
    def base_url(self) -> str:
        """TELEGRAM_API_BASE: python-telegram-bot appends the token."""
        return f"http://127.0.0.1:{self.port}/bot"

    @staticmethod
    def _error_body(status: int, retry_after: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": False, "error_code": status, "description": "Internal Server Error"}
        if status == 403:
            body = {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}
        elif status == 400:
            body = {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}
        elif status == 429:
            body = {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": retry_after or 1}}
        return body

    def fail_next(self, n: int, status: int = 500, retry_after: int | None = None) -> None:
        with self._lock:
            self._failures.extend([(status, self._error_body(status, retry_after))] * n)

    def fail_for(self, seconds: float, statuses: tuple[int, ...] = (500,)) -> None:
        """Every sendMessage fails for `seconds` from now, with these statuses in turn."""
        with self._lock:
            self._outage_until = time.time() + seconds
            self._outage_statuses = statuses

    def fail_answers_next(self, n: int) -> None:
        """The next n answerCallbackQuery calls are refused (400), as for a query that is too old."""
        with self._lock:
            self._answer_failures += n

    def failed_sends(self) -> int:
        with self._lock:
            return self._failed

    def queue_update(self, update: dict) -> None:
        with self._lock:
            self.updates.append(update)

    def sent_to(self, chat_id: str | int) -> list[Sent]:
        with self._lock:
            return [s for s in self.sent if s.chat_id == str(chat_id)]

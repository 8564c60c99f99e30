"""Telegram long polling (getUpdates) for local use, where Telegram cannot reach a webhook.

Same parsing as the webhook (`parse_update`), same intake, same derived message ids, so an update
seen both ways, or twice, is one message downstream. The offset (the next update_id wanted) is
stored only after every message of an update was accepted; Telegram forgets updates below the
offset we send on the next call, so a crash between accepting and storing means the update is
fetched and accepted again — at least once, deduplicated by the router — and never lost.

A pressed button (callback_query) is answered with answerCallbackQuery once the update is accepted
and its offset stored, so the customer's client stops its spinner: the webhook does this in its
HTTP response, the poller has no response to do it in. The answer comes after the offset, so an
update fetched again after a crash is not answered twice; an answer that fails is logged and not
retried (the press itself is already accepted: nothing is lost or doubled, Telegram only stops the
spinner after its own timeout).

Telegram refuses getUpdates while a webhook is set (409 Conflict): the poller says so in the log
and keeps trying; delete the webhook (or unset TELEGRAM_POLLING) to choose one way in.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import warnings
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telegram import Bot
from telegram.error import Conflict, TelegramError
from telegram.request import HTTPXRequest

from services.gateway.channels import Inbound, Malformed
from services.gateway.channels.telegram import callback_query_id, parse_update

log = logging.getLogger(__name__)


class OffsetStore:
    """The next update_id to ask for, per bot, in a small SQLite file beside the spool."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("CREATE TABLE IF NOT EXISTS telegram_offset (bot TEXT PRIMARY KEY, next_update_id INTEGER)")

    def get(self, bot: str) -> int | None:
        with closing(sqlite3.connect(self.path)) as conn:
            row = conn.execute("SELECT next_update_id FROM telegram_offset WHERE bot = ?", (bot,)).fetchone()
        return row[0] if row else None

    def set(self, bot: str, next_update_id: int) -> None:
        with closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute("INSERT INTO telegram_offset (bot, next_update_id) VALUES (?, ?) ON CONFLICT(bot)"
                         " DO UPDATE SET next_update_id = MAX(next_update_id, excluded.next_update_id)",
                         (bot, next_update_id))


class TelegramPoller:
    def __init__(self, token: str, *, bot_id: str, accept: Callable[[Inbound], None],
                 state_path: str | Path, api_base: str | None = None, long_poll_seconds: int = 10,
                 limit: int = 100, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        base = (api_base or "https://api.telegram.org/bot").rstrip("/")
        # The read timeout must outlast the long poll, or every quiet poll would end in an error.
        request = HTTPXRequest(connect_timeout=5.0, read_timeout=long_poll_seconds + 10.0)
        self.bot = Bot(token, base_url=base, request=request)
        self.bot_id = bot_id
        self.accept = accept
        self.offsets = OffsetStore(state_path)
        self.long_poll_seconds = long_poll_seconds
        self.limit = limit
        self.clock = clock
        # PTB is asyncio-only and a Bot belongs to one event loop: the poller owns one and is
        # driven from a single thread.
        self._loop = asyncio.new_event_loop()

    def _fetch(self, offset: int | None, timeout: int) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"timeout": timeout, "limit": self.limit}
        if offset is not None:
            kwargs["offset"] = offset
        with warnings.catch_warnings():
            # PTB suggests get_updates(); we want Telegram's raw JSON, exactly what a webhook gets.
            warnings.simplefilter("ignore")
            coro = self.bot.do_api_request("getUpdates", api_kwargs=kwargs)
            result = self._loop.run_until_complete(coro)
        return [u for u in result if isinstance(u, dict)] if isinstance(result, list) else []

    def poll_once(self, timeout: int | None = None) -> int:
        """One getUpdates call; returns how many messages were accepted. Raises what `accept`
        raised: the offset stays before that update, so it comes again next time."""
        offset = self.offsets.get(self.bot_id)
        updates = self._fetch(offset, self.long_poll_seconds if timeout is None else timeout)
        # Arrival is when we got the batch, as for a webhook; Telegram's dates are kept as sent_at.
        received_at = self.clock()
        accepted = 0
        for update in sorted(updates, key=lambda u: u.get("update_id", 0) if isinstance(u.get("update_id"), int) else 0):
            update_id = update.get("update_id")
            try:
                messages = parse_update(update, bot_id=self.bot_id, received_at=received_at)
            except Malformed as exc:
                log.warning("telegram update %s cannot be used: %s", update_id, exc)
                messages = None
            for msg in messages or []:
                self.accept(msg)
                accepted += 1
            if isinstance(update_id, int) and not isinstance(update_id, bool):
                self.offsets.set(self.bot_id, update_id + 1)
            query_id = callback_query_id(update)
            if messages is not None and query_id is not None:
                self._answer_callback_query(query_id, update_id)
        return accepted

    def _answer_callback_query(self, query_id: str, update_id: Any) -> None:
        try:
            self._loop.run_until_complete(self.bot.answer_callback_query(query_id))
        except TelegramError as exc:
            # Too late (Telegram allows seconds) or already answered: the press is recorded anyway.
            log.warning("telegram answerCallbackQuery failed: %s", exc, extra={"update_id": update_id})

    def run(self, stop: threading.Event, *, error_pause: float = 5.0) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except Conflict as exc:
                log.error("Telegram refuses long polling while a webhook is set (%s): delete the webhook"
                          " or unset TELEGRAM_POLLING", exc)
                stop.wait(error_pause * 6)
            except TelegramError as exc:
                log.warning("telegram getUpdates failed: %s; retrying in %ss", exc, error_pause)
                stop.wait(error_pause)
            except Exception:
                log.exception("telegram long polling failed; retrying in %ss", error_pause)
                stop.wait(error_pause)
        self._loop.run_until_complete(self.bot.shutdown())
        self._loop.close()

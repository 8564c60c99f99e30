"""Telegram sender on python-telegram-bot, pointed at TELEGRAM_API_BASE.

PTB is asyncio-only and one Bot cannot be reused across asyncio.run() calls, so the sender owns
one long-lived event loop in a thread and the synchronous notifier submits coroutines to it. One
Bot and one HTTPXRequest (an httpx pool of `pool_size` kept-alive connections) serve every send:
the consumer threads' sends share its connections instead of opening one each.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import (
    BadRequest,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
    TimedOut,
)
from telegram.request import HTTPXRequest

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError


class TelegramSender:
    channel = "telegram"

    def __init__(self, token: str, *, api_base: str | None = None, timeout: float = 10.0, pool_size: int = 16):
        base = (api_base or "https://api.telegram.org/bot").rstrip("/")
        file_base = base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base + "/file/bot"
        request = HTTPXRequest(connection_pool_size=pool_size, connect_timeout=min(5.0, timeout),
                               read_timeout=timeout, write_timeout=timeout, pool_timeout=timeout)
        self.bot = Bot(token, base_url=base, base_file_url=file_base, request=request)
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="telegram-sender", daemon=True)
        self._thread.start()
        self._initialized = False
        self._init_lock = threading.Lock()

    def _run(self, coro) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self.timeout * 2 + 5)
        except TimeoutError as exc:
            future.cancel()
            raise TransientSendError("telegram call timed out") from exc

    def _ensure_initialized(self) -> None:
        if self._initialized:  # every send after the first: no lock to take
            return
        with self._init_lock:
            if not self._initialized:
                self._call(self.bot.initialize())  # getMe: proves the token once
                self._initialized = True

    def _call(self, coro) -> Any:
        try:
            return self._run(coro)
        except RetryAfter as exc:
            retry = exc.retry_after
            seconds = retry.total_seconds() if isinstance(retry, timedelta) else float(retry)
            raise TransientSendError(f"telegram flood control: retry after {seconds}s", retry_after=seconds) from exc
        except (Forbidden, InvalidToken) as exc:
            raise PermanentSendError(f"telegram refused: {exc}") from exc
        except BadRequest as exc:  # a subclass of NetworkError: must come before it
            raise PermanentSendError(f"telegram bad request: {exc}") from exc
        except (TimedOut, NetworkError) as exc:
            raise TransientSendError(f"telegram unreachable: {exc}") from exc
        except TelegramError as exc:
            raise TransientSendError(f"telegram error: {exc}") from exc

    def send(self, address: str, text: str, *, options: dict[str, Any] | None = None) -> SendResult:
        self._ensure_initialized()
        options = options or {}
        markup = None
        if options.get("buttons"):
            # Inline buttons: [[(label, callback_data), ...], ...] — survey answers come back as callbacks.
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for label, data in row]
                                           for row in options["buttons"]])
        # A Telegram Business chat is answered through its business connection (the router keeps
        # the connection id as the conversation's "from"): the customer sees the business account.
        business = options.get("from") if isinstance(options.get("from"), str) else None
        msg = self._call(self.bot.send_message(chat_id=address, text=text, reply_markup=markup,
                                               business_connection_id=business))
        return SendResult(provider_message_id=str(msg.message_id))

    def close(self) -> None:
        try:
            if self._initialized:
                self._run(self.bot.shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

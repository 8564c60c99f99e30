"""Telegram sender on python-telegram-bot, pointed at TELEGRAM_API_BASE.

PTB is asyncio-only; the notifier sends from plain threads. Each sending thread runs PTB's
coroutines on an event loop of its own, and PTB's HTTP goes through `_SyncHTTPRequest`, a
`telegram.request.BaseRequest` (PTB's extension point for the transport) over one synchronous
httpx transport: its pool of `pool_size` kept-alive connections is shared by every thread, and a
thread's call needs no other thread. (Before, one loop thread ran every thread's sends through
an async client: the hand-over of each call and its result between threads, and the async
client's own machinery, were a third of the notifier's CPU under load.) PTB still builds the
request, reads the answer and raises its errors, which `_call` maps as before.
"""

from __future__ import annotations

import asyncio
import threading
import types
from collections.abc import Generator
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpcore
import httpx
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
from telegram.request import BaseRequest, RequestData

from services.notifier.senders import PermanentSendError, SendResult, TransientSendError


class _SyncHTTPRequest(BaseRequest):
    """PTB's transport on a synchronous httpcore.ConnectionPool (thread-safe, pooled, kept alive):
    `do_request` blocks its caller's thread, whose own event loop runs nothing else meanwhile.
    Errors as PTB's HTTPXRequest raises them: a timeout is TimedOut, any other failure NetworkError.

    httpcore (httpx's own HTTP core), not an httpx transport over it: the Bot API sets no cookies,
    redirects nowhere and needs no auth, and a form of a few strings needs none of httpx's request
    and response models — building an httpx.Request (its headers validated and normalised, its body
    encoded through a stream), converting it to httpcore's and the answer back was about a fifth of
    a send's CPU. The pool is configured as httpx.HTTPTransport configures it (httpx's SSL context,
    HTTP/1.1, keep-alive for 5 s). A multipart upload, which the notifier does not make, is still
    encoded by httpx."""

    def __init__(self, *, pool_size: int, timeout: float, connect_timeout: float):
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._extensions = {"timeout": self._timeout.as_dict()}  # the request extension httpcore reads
        self._pool_size = pool_size
        self._pool: httpcore.ConnectionPool | None = None
        self._lock = threading.Lock()
        #: Each endpoint's URL and Host header made once (a handful: getMe, sendMessage, ...):
        #: parsing a URL took about as long as the rest of building the request.
        self._urls: dict[str, tuple[httpcore.URL, bytes]] = {}
        self._agent = self.USER_AGENT.encode("ascii")

    @property
    def read_timeout(self) -> float | None:
        return self._timeout.read

    def pool(self) -> httpcore.ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = httpcore.ConnectionPool(
                        ssl_context=httpx.create_ssl_context(), max_connections=self._pool_size,
                        max_keepalive_connections=self._pool_size, keepalive_expiry=5.0)
        return self._pool

    async def initialize(self) -> None:
        self.pool()

    async def shutdown(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _url(self, url: str) -> tuple[httpcore.URL, bytes]:
        known = self._urls.get(url)
        if known is None:
            parsed = httpx.URL(url)  # its checks and normalisation, once per endpoint
            known = self._urls[url] = (
                httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port,
                             target=parsed.raw_path), parsed.netloc)
        return known

    def _encoded(self, method: str, url: str, request_data: RequestData | None
                 ) -> tuple[list[tuple[bytes, bytes]], bytes]:
        """The request's headers (Host first) and body."""
        target, host = self._url(url)
        if request_data is not None and request_data.multipart_data:
            built = httpx.Request(method, url, headers={"User-Agent": self.USER_AGENT},
                                  files=request_data.multipart_data, data=request_data.json_parameters)
            return list(built.headers.raw), built.read()
        headers = [(b"Host", host), (b"User-Agent", self._agent)]
        if request_data is None or not request_data.json_parameters:
            return headers, b""
        body = urlencode(request_data.json_parameters, doseq=True).encode("ascii")  # as httpx encodes data=
        return headers + [(b"Content-Length", str(len(body)).encode("ascii")),
                          (b"Content-Type", b"application/x-www-form-urlencoded")], body

    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         read_timeout: Any = BaseRequest.DEFAULT_NONE, write_timeout: Any = BaseRequest.DEFAULT_NONE,
                         connect_timeout: Any = BaseRequest.DEFAULT_NONE,
                         pool_timeout: Any = BaseRequest.DEFAULT_NONE) -> tuple[int, bytes]:
        # PTB's per-call timeouts are left at their defaults by our calls: ours apply.
        try:
            headers, body = self._encoded(method, url, request_data)
            target, _ = self._url(url)
            response = self.pool().handle_request(httpcore.Request(
                method.encode("ascii"), target, headers=headers, content=body, extensions=self._extensions))
            try:
                content = response.read()
            finally:
                response.close()  # the connection back to the pool, whatever the read did
        except (httpcore.TimeoutException, httpx.TimeoutException) as exc:
            raise TimedOut(f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from exc
        except _FAILURES as exc:
            raise NetworkError(f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from exc
        return response.status, content


#: What httpx's transport maps to its own errors (httpx._transports.default), and httpx's errors
#: (a multipart body's encoding, a malformed URL).
_FAILURES = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError,
             httpcore.ConnectionNotAvailable, httpx.HTTPError, httpx.InvalidURL)


async def _finishing(coro, awaited: Any) -> Any:
    """The rest of a coroutine that stopped at `awaited`, as an awaitable a loop can run."""
    return await _resumed(coro, awaited)


@types.coroutine
def _resumed(coro, awaited: Any) -> Generator[Any, Any, Any]:
    # What `await` does with a coroutine, from its first suspension on: what it waits for goes to
    # the loop, and the loop's answer (or error) back into it.
    while True:
        try:
            answer = yield awaited
        except BaseException as exc:  # noqa: BLE001 - the loop's error (a cancellation too) goes into it
            try:
                awaited = coro.throw(exc)
            except StopIteration as done:
                return done.value
        else:
            try:
                awaited = coro.send(answer)
            except StopIteration as done:
                return done.value


class TelegramSender:
    channel = "telegram"

    def __init__(self, token: str, *, api_base: str | None = None, timeout: float = 10.0, pool_size: int = 16):
        base = (api_base or "https://api.telegram.org/bot").rstrip("/")
        file_base = base[: -len("/bot")] + "/file/bot" if base.endswith("/bot") else base + "/file/bot"
        request = _SyncHTTPRequest(pool_size=pool_size, timeout=timeout, connect_timeout=min(5.0, timeout))
        self.bot = Bot(token, base_url=base, base_file_url=file_base, request=request, get_updates_request=request)
        self.timeout = timeout
        self._local = threading.local()
        self._loops: list[asyncio.AbstractEventLoop] = []  # every thread's, closed by close()
        self._loops_lock = threading.Lock()
        self._initialized = False
        self._init_lock = threading.Lock()

    def _run(self, coro, *, on_loop: bool = False) -> Any:
        """PTB's coroutine to its end on this thread (the HTTP inside blocks this thread alone; the
        request's timeouts bound it).

        A send (`on_loop` False) is stepped without a loop: PTB's sendMessage path awaits nothing
        but our transport, which never waits on the loop, so it ends in one step and no loop round
        (a task, two passes of the loop, polls of its selector: ~15 % of a send's CPU) is paid.
        Should a PTB version wait after all, the coroutine is finished where it stopped, on this
        thread's own loop; but that first step runs outside any loop, so the path must not ask for
        the running loop before its first wait (every contract test's send goes through it).
        `on_loop`: the whole coroutine on the loop (initialize's and shutdown's gather need one)."""
        if not on_loop:
            try:
                awaited = coro.send(None)
            except StopIteration as done:
                return done.value
            except BaseException:
                coro.close()
                raise
        loop = getattr(self._local, "loop", None)
        if loop is None or loop.is_closed():
            loop = self._local.loop = asyncio.new_event_loop()
            with self._loops_lock:
                self._loops.append(loop)
        return loop.run_until_complete(coro if on_loop else _finishing(coro, awaited))

    def _ensure_initialized(self) -> None:
        if self._initialized:  # every send after the first: no lock to take
            return
        with self._init_lock:
            if not self._initialized:
                self._call(self.bot.initialize(), on_loop=True)  # getMe: proves the token once
                self._initialized = True

    def _call(self, coro, *, on_loop: bool = False) -> Any:
        try:
            return self._run(coro, on_loop=on_loop)
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
                self._run(self.bot.shutdown(), on_loop=True)
        finally:
            with self._loops_lock:
                loops, self._loops = self._loops, []
            for loop in loops:
                try:
                    loop.close()
                except RuntimeError:  # another thread's, running a send right now: it ends with the process
                    pass

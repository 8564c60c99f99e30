"""The agents' inbox (/inbox/) and the leads' dashboard (/dashboard/): server-rendered pages over the
same operations as the agent API (services/router/operations.py, kpi_store.py).

Security, in the order a request meets it:

* a session is a random cookie (HttpOnly, SameSite=Lax, Secure behind HTTPS: directly, from a
  trusted proxy's X-Forwarded-Proto, or always with SECURE_COOKIES); only its SHA-256 is
  stored (inbox_sessions), next to the agent id and the session's CSRF token, so every router
  replica knows every session and a database leak gives no usable cookie;
* login takes the agent's API token or a password set with `switchboard agents password` (argon2id;
  an older hash is replaced at the next login); failed logins are throttled per client address
  and per agent (login_throttle.py: 429 with Retry-After, never a long lock-out of the agent), and
  logged; a session opened with a token ends when the token is replaced, revoked or expires; the
  login form itself carries a double-submit CSRF token (cookie + field), so nobody can log a
  browser into someone else's account;
* every POST carries the session's CSRF token, compared in constant time: 403 without it;
* customer content goes through Jinja2's autoescape only (``.html`` templates), never ``|safe``;
  a Content-Security-Policy without inline scripts is a second wall.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Blueprint, Response, abort, g, redirect, render_template, request, url_for
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.router import automatic, kpi_store, listing, macros
from services.router import login_throttle as throttle
from services.router import operations as ops
from services.router.access import led_teams, may_see, visible_to
from services.router.api import ApiDeps
from services.router.display import customer_label
from services.router.models import (
    AgentPassword,
    AgentToken,
    CallbackTask,
    Conversation,
    Customer,
    Identity,
    InboxSession,
    LoginKnownAddress,
    LoginThrottle,
    Message,
)
from shared.config import Agent
from shared.contracts import new_id
from shared.db import transaction
from shared.web import error as web_error

log = logging.getLogger(__name__)

SESSION_COOKIE = "sb_inbox"
LOGIN_CSRF_COOKIE = "sb_login_csrf"
SESSION_TTL = timedelta(hours=12)
HERE = Path(__file__).parent
# media-src https: a voicemail's recording plays from the provider (Twilio serves it over HTTPS).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src https:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

# --- passwords -----------------------------------------------------------------------------------

# argon2id with argon2-cffi's defaults (RFC 9106's second recommended option: t=3, m=64 MiB, p=4);
# when the library raises them, check_needs_rehash says so and the next login stores a new hash.
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@dataclass(frozen=True)
class PasswordCheck:
    ok: bool
    rehash: bool = False  # right, but stored with old parameters: store hash_password(password) now


def check_password(password: str, stored: str) -> PasswordCheck:
    if stored.startswith("scrypt$"):
        # Hashes from before argon2id: scrypt N=2^14, below today's advice. Checked, then upgraded.
        try:
            _, n, r, p, salt, digest = stored.split("$")
            got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), dklen=32, n=int(n), r=int(r),
                                 p=int(p), maxmem=256 * 1024 * 1024)
        except ValueError:
            return PasswordCheck(False)
        return PasswordCheck(True, rehash=True) if hmac.compare_digest(got.hex(), digest) else PasswordCheck(False)
    try:
        _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):  # VerifyMismatchError is a VerificationError
        return PasswordCheck(False)
    return PasswordCheck(True, rehash=_HASHER.check_needs_rehash(stored))


def set_password(s: Session, agent_id: str, password: str, at: datetime) -> None:
    if len(password) < 10:
        raise ValueError("a password has at least 10 characters")
    row = s.get(AgentPassword, agent_id)
    if row is None:
        s.add(AgentPassword(agent_id=agent_id, password_hash=hash_password(password), set_at=at))
    else:
        row.password_hash, row.set_at = hash_password(password), at
    # A new password ends every open browser session of the agent.
    s.execute(delete(InboxSession).where(InboxSession.agent_id == agent_id))


def _address_key(address: str) -> str:
    return f"address:{address}"


def _keys(address: str, agent_id: str | None) -> list[str]:
    """The failed-login counters a try counts on: its address's, and the named agent's."""
    return [_address_key(address), *([f"agent:{agent_id}"] if agent_id else [])]


# --- formatting helpers for the templates ----------------------------------------------------------


def countdown(due: datetime, now: datetime) -> str:
    """"due in 2h 05m" / "overdue by 40m": what an agent reads at a glance."""
    seconds = int((due - now).total_seconds())
    total = abs(seconds)
    days, rest = divmod(total, 86400)
    hours, minutes = rest // 3600, (rest % 3600) // 60
    text = f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m" if hours else f"{minutes}m"
    return f"due in {text}" if seconds >= 0 else f"overdue by {text}"


@dataclass
class Page:
    """What every page's layout needs."""

    agent: Agent
    csrf: str
    is_lead: bool


def build_inbox(deps: ApiDeps) -> list[Blueprint]:
    config = deps.config
    tz = ZoneInfo(config.business_calendar.timezone)
    inbox = Blueprint("inbox", __name__, url_prefix="/inbox", template_folder=str(HERE / "templates"),
                      static_folder=str(HERE / "static"), static_url_path="/static")
    dashboard = Blueprint("dashboard", __name__, url_prefix="/dashboard", template_folder=str(HERE / "templates"))

    # --- sessions ------------------------------------------------------------------------------

    def _digest(cookie: str) -> str:
        return hashlib.sha256(cookie.encode()).hexdigest()

    def _current() -> tuple[Agent, InboxSession] | None:
        cookie = request.cookies.get(SESSION_COOKIE, "")
        if not cookie or len(cookie) > 200:
            return None
        with deps.sessions() as s:
            row = s.get(InboxSession, _digest(cookie))
            if row is not None:
                s.expunge(row)
        if row is None or row.expires_at <= deps.clock():
            return None
        agent = config.agents.get(row.agent_id)
        return (agent, row) if agent else None

    def login_required(view):
        @functools.wraps(view)
        def wrapper(**kwargs):
            found = _current()
            if found is None:
                if request.method != "GET":
                    abort(401)
                return redirect(url_for("inbox.login", next=request.full_path if request.args else request.path))
            g.agent, g.inbox_session = found
            if request.method == "POST":
                sent = request.form.get("csrf_token", "")
                if not hmac.compare_digest(sent.encode(), g.inbox_session.csrf_token.encode()):
                    return _page_error(403, "This form has expired or did not come from the inbox. "
                                            "Reload the page and try again.")
            return view(**kwargs)

        return wrapper

    def _page() -> Page:
        return Page(agent=g.agent, csrf=g.inbox_session.csrf_token, is_lead=bool(led_teams(g.agent, config)))

    def _page_error(status: int, message: str):
        page = _page() if getattr(g, "inbox_session", None) else None
        return render_template("inbox/error.html", page=page, status=status, message=message), status

    def _secure_headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Referrer-Policy"] = "same-origin"
        if resp.mimetype == "text/html":
            resp.headers["Cache-Control"] = "no-store"
        return resp

    inbox.after_request(_secure_headers)
    dashboard.after_request(_secure_headers)

    def _safe_next(target: str | None) -> str:
        # Only a path inside the inbox or the dashboard: never an open redirect.
        if target and target.startswith(("/inbox/", "/dashboard/")) and "//" not in target and "\\" not in target:
            return target
        return url_for("inbox.index")

    @inbox.errorhandler(401)
    def _unauthorized(_exc):
        return render_template("inbox/error.html", page=None, status=401,
                               message="Your session has ended. Log in again."), 401

    # --- login ---------------------------------------------------------------------------------

    @inbox.route("/login", methods=["GET", "POST"])
    def login():
        error = None
        status = 200
        if request.method == "POST":
            cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
            form_token = request.form.get("csrf_token", "")
            if not cookie_token or not hmac.compare_digest(cookie_token.encode(), form_token.encode()):
                return render_template("inbox/error.html", page=None, status=403,
                                       message="The login form has expired. Reload it and try again."), 403
            agent_id = request.form.get("agent_id", "").strip()[:64]
            password, token = request.form.get("password", ""), request.form.get("token", "").strip()
            # Behind a proxy this is the client only when TRUSTED_PROXY names the proxy (shared/web.py).
            address = (request.remote_addr or "unknown")[:64]
            # A token names no agent: only the address's counter applies to it (see login_throttle).
            named = agent_id if not token and agent_id in config.agents else None
            now = deps.clock()
            wait = _throttle_wait(address, named, now)
            if wait > timedelta(0):
                log.warning("inbox login refused: too many failures", extra={
                    "agent_id": named, "client": address, "retry_after": throttle.seconds(wait)})
                return _too_many(wait)
            found = _login(named, password, token, now)
            if found is not None:
                signed_in, token_row = found
                cookie = secrets.token_urlsafe(32)
                expires = now + SESSION_TTL
                if token_row is not None and token_row.expires_at is not None:
                    expires = min(expires, token_row.expires_at)  # a session outlives no token
                with transaction(deps.sessions) as s:
                    s.execute(delete(InboxSession).where(InboxSession.expires_at <= now))
                    s.add(InboxSession(id_hash=_digest(cookie), agent_id=signed_in, csrf_token=secrets.token_hex(32),
                                       created_at=now, expires_at=expires,
                                       token_id=token_row.id if token_row is not None else None))
                    _remember_address(s, signed_in, address, now)
                resp = redirect(_safe_next(request.form.get("next")))
                resp.set_cookie(SESSION_COOKIE, cookie, max_age=max(1, int((expires - now).total_seconds())),
                                httponly=True, samesite="Lax", secure=_secure(), path="/")
                resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/inbox/login")
                return resp
            failures = _count_failure(address, named, now)
            log.warning("inbox login failed", extra={"agent_id": named or ("(token)" if token else agent_id[:64]),
                                                     "client": address, "failures": failures})
            error, status = "Unknown agent, wrong password or unknown token.", 401
        return _login_page(error, status)

    def _login_page(error: str | None, status: int, headers: dict[str, str] | None = None) -> Response:
        token = secrets.token_hex(32)
        resp = Response(render_template("inbox/login.html", page=None, csrf=token, error=error,
                                        next=_safe_next(request.values.get("next"))), status, headers=headers)
        resp.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=_secure(),
                        path="/inbox/login")
        return resp

    def _secure() -> bool:
        # request.is_secure is https when the client reached us so, or a trusted proxy said so
        # (X-Forwarded-Proto through waitress's trusted_proxy); SECURE_COOKIES=1 forces it.
        return request.is_secure or deps.secure_cookies

    def _too_many(wait: timedelta):
        retry = throttle.seconds(wait)
        message = f"Too many failed logins. Try again in {retry} seconds."
        headers = {"Retry-After": str(retry)}
        accept = request.accept_mimetypes
        if accept["text/html"] > accept["application/json"]:  # a browser's login form
            return _login_page(message, 429, headers)
        body, status = web_error(429, "too_many_attempts", message, retry_after=retry)
        return body, status, headers

    def _throttle_wait(address: str, agent_id: str | None, now: datetime) -> timedelta:
        with deps.sessions() as s:
            records = {row.key: throttle.Record(row.failures, row.last_failure_at) for row in s.scalars(
                select(LoginThrottle).where(LoginThrottle.key.in_(_keys(address, agent_id))))}
            known = agent_id is not None and s.scalar(select(LoginKnownAddress.last_login_at).where(
                LoginKnownAddress.agent_id == agent_id, LoginKnownAddress.address == address,
                LoginKnownAddress.last_login_at > now - throttle.KNOWN_ADDRESS_FOR)) is not None
        return throttle.login_wait(address=records.get(_address_key(address)),
                                   agent=records.get(f"agent:{agent_id}") if agent_id else None,
                                   known_address=known, now=now)

    def _count_failure(address: str, agent_id: str | None, now: datetime) -> int:
        """Counts a checked, failed login on its counters; the address's count after it."""
        counted = 0
        for key in _keys(address, agent_id):
            policy = throttle.AGENT if key.startswith("agent:") else throttle.ADDRESS
            for attempt in range(2):  # two replicas may create the same row at once: the loser updates
                try:
                    with transaction(deps.sessions) as s:
                        s.execute(delete(LoginThrottle).where(
                            LoginThrottle.last_failure_at < now - throttle.ADDRESS.forget_after))
                        row = s.scalar(select(LoginThrottle).where(LoginThrottle.key == key).with_for_update())
                        before = throttle.Record(row.failures, row.last_failure_at) if row is not None else None
                        after = throttle.after_failure(before, policy, now)
                        if row is None:
                            s.add(LoginThrottle(key=key, failures=after.failures, last_failure_at=now))
                        else:
                            row.failures, row.last_failure_at = after.failures, now
                    break
                except IntegrityError:
                    if attempt:
                        raise
            if key == _address_key(address):
                counted = after.failures
        return counted

    def _remember_address(s: Session, agent_id: str, address: str, now: datetime) -> None:
        s.execute(delete(LoginKnownAddress).where(LoginKnownAddress.agent_id == agent_id,
                                                  LoginKnownAddress.last_login_at <= now - throttle.KNOWN_ADDRESS_FOR))
        row = s.get(LoginKnownAddress, (agent_id, address))
        if row is None:
            s.add(LoginKnownAddress(agent_id=agent_id, address=address, last_login_at=now))
        else:
            row.last_login_at = now

    def _login(agent_id: str | None, password: str, token: str,
               now: datetime) -> tuple[str, AgentToken | None] | None:
        """(agent id, the token row or None for a password) when the credentials are right."""
        if token:
            if len(token) > 200:
                return None
            with deps.sessions() as s:
                row = ops.authenticate_token(s, token, now)
                if row is not None:
                    s.expunge(row)
            return (row.agent_id, row) if row is not None and row.agent_id in config.agents else None
        if not agent_id or not password or len(password) > 1000:
            return None
        with deps.sessions() as s:
            stored = s.get(AgentPassword, agent_id)
            stored_hash = stored.password_hash if stored is not None else None
        if stored_hash is None:
            return None
        checked = check_password(password, stored_hash)
        if not checked.ok:
            return None
        if checked.rehash:
            # Stored with old parameters (scrypt N=2^14, or argon2 below the library's defaults).
            with transaction(deps.sessions) as s:
                kept = s.get(AgentPassword, agent_id)
                if kept is not None and kept.password_hash == stored_hash:
                    kept.password_hash = hash_password(password)
            log.info("inbox password of %s upgraded to current hash parameters", agent_id)
        return agent_id, None

    @inbox.post("/logout")
    @login_required
    def logout():
        with transaction(deps.sessions) as s:
            s.execute(delete(InboxSession).where(InboxSession.id_hash == g.inbox_session.id_hash))
        resp = redirect(url_for("inbox.login"))
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    # --- the list ------------------------------------------------------------------------------

    @inbox.get("/")
    @login_required
    def index():
        status = request.args.get("status", "open")
        if status not in ("open", "resolved", automatic.STATUS):
            status = "open"
        next_cursor = None
        with deps.sessions() as s:
            if status == "open":
                # Open work is bounded by the agents' capacity, not by history: the (owner|team,
                # status) prefix of the list indexes finds it; sorted by the promise, as agents work.
                convs = list(s.scalars(select(Conversation).where(visible_to(g.agent, config),
                                                                  Conversation.status == status)
                                       .order_by(Conversation.promise_due, Conversation.id).limit(200)))
            else:
                # The resolved history (and automatic mail) grows for ever: newest activity first, a
                # page at a time (services/router/listing.py: keyset, one index scan per branch).
                try:
                    convs, next_cursor = listing.page(s, g.agent, config, statuses=[status], limit=50,
                                                      cursor=request.args.get("cursor") or None)
                except listing.BadCursor:
                    convs, next_cursor = listing.page(s, g.agent, config, statuses=[status], limit=50)
            stored = dict(s.execute(select(Customer.id, Customer.name)
                                    .where(Customer.id.in_({c.customer_id for c in convs}))).all())
            names = _labels(s, stored, masked=g.agent.mask_contacts)
            now = deps.clock()
            rows: list[dict[str, Any]] = [{"conv": c, "customer_name": names.get(c.customer_id), "waiting": c.first_response_at is None,
                     "countdown": countdown(c.promise_due, now), "overdue": c.promise_due < now}
                    for c in convs]
            # Calls to return stand out in the list: a missed call waits on the agent, not the customer.
            to_call = {task.conversation_id for task in ops.open_callbacks(
                s, CallbackTask.conversation_id.in_([r["conv"].id for r in rows]))}
            for row in rows:
                row["call_back"] = row["conv"].id in to_call
                row["kind"] = (row["conv"].category_reason or {}).get("automatic")
                s.expunge(row["conv"])
            # The automatic filter's counter: the last 7 days by kind (bounces, spam, auto-replies...).
            since = now - timedelta(days=7)
            counter = automatic.counts(s, since, now + timedelta(seconds=1)) if status == automatic.STATUS else None
        return render_template("inbox/list.html", page=_page(), rows=rows, status=status, tz=tz, now=now,
                               next_cursor=next_cursor, counter=counter)

    # --- one conversation ----------------------------------------------------------------------

    def _load(s: Session, conversation_id: str, *, lock: bool = False) -> Conversation:
        if len(conversation_id) > 36:
            abort(404)
        stmt = select(Conversation).where(Conversation.id == conversation_id)
        conv = s.scalar(stmt.with_for_update() if lock else stmt)
        if conv is None:
            abort(404)
        if not may_see(g.agent, conv, config):
            abort(403)
        return conv

    @inbox.errorhandler(404)
    def _not_found(_exc):
        return _page_error(404, "No such conversation.")

    @inbox.errorhandler(403)
    def _forbidden(_exc):
        return _page_error(403, "This conversation is neither yours nor your team's.")

    @inbox.get("/c/<conversation_id>")
    @login_required
    def conversation(conversation_id: str):
        now = deps.clock()
        with deps.sessions() as s:
            conv = _load(s, conversation_id)
            customer = s.get_one(Customer, conv.customer_id)  # a foreign key: always there
            history = list(s.scalars(select(Message).join(Conversation, Message.conversation_id == Conversation.id)
                                     .where(Conversation.customer_id == customer.id)
                                     .order_by(Message.received_at, Message.id)))
            callbacks = ops.open_callbacks(s, CallbackTask.conversation_id == conv.id)
            label = _labels(s, {customer.id: customer.name}, masked=g.agent.mask_contacts)[customer.id]
            s.expunge_all()
        available = macros.macros_for(conv.language, conv.category, config.macros)
        draft = ""
        chosen = request.args.get("macro")
        order_number = request.args.get("order_number", "")[:40]
        macro_error = None
        if chosen:
            try:
                draft = macros.render(macros.find(chosen, conv.language, config.macros), customer_name=customer.name,
                                      order_number=order_number or None, owner_name=g.agent.name,
                                      business_name=config.business.name)
            except macros.MacroError as exc:
                macro_error = str(exc)
        team_agents = sorted((a for a in config.agents.values() if a.id != conv.owner_id), key=lambda a: a.name)
        return render_template("inbox/conversation.html", page=_page(), conv=conv, customer=customer,
                               history=history, macros=available, chosen=chosen, order_number=order_number,
                               draft=draft, macro_error=macro_error, tz=tz, now=now,
                               countdown=countdown(conv.promise_due, now), agents=team_agents,
                               teams=list(config.teams.values()), notice=request.args.get("done"), label=label,
                               callbacks=callbacks)

    def _back(conversation_id: str, done: str):
        return redirect(url_for("inbox.conversation", conversation_id=conversation_id, done=done))

    @inbox.post("/c/<conversation_id>/reply")
    @login_required
    def reply(conversation_id: str):
        # Browsers send a textarea's line breaks as CRLF; SMS and Telegram want plain newlines.
        text = request.form.get("text", "").replace("\r\n", "\n").strip()
        if not text or len(text) > 4000:
            return _page_error(422, "A reply needs between 1 and 4000 characters.")
        macro_id = request.form.get("macro") or None
        now, reply_id = deps.clock(), new_id()
        with transaction(deps.sessions) as s:
            conv = _load(s, conversation_id, lock=True)
            try:
                envelope = ops.reply(s, conv, reply_id=reply_id, agent_id=g.agent.id, text=text, at=now,
                                     calendar=config.business_calendar,
                                     correlation_id=new_id(), details={"macro": macro_id[:64]} if macro_id else {})
            except ops.Unanswerable as exc:
                return _page_error(409, str(exc).capitalize() + ".")
        _publish([envelope.message_id])
        return _back(conversation_id, "sent")

    @inbox.post("/c/<conversation_id>/reply-to/confirm")
    @login_required
    def confirm_reply_to(conversation_id: str):
        address = request.form.get("address", "")[:320]
        with transaction(deps.sessions) as s:
            conv = _load(s, conversation_id, lock=True)
            try:
                ops.confirm_reply_to(s, conv, address=address, agent_id=g.agent.id, at=deps.clock())
            except ops.NothingToConfirm as exc:
                return _page_error(409, str(exc).capitalize() + ".")
        return _back(conversation_id, "reply_to_confirmed")

    @inbox.post("/c/<conversation_id>/callbacks/<int:task_id>/done")
    @login_required
    def callback_done(conversation_id: str, task_id: int):
        with transaction(deps.sessions) as s:
            _load(s, conversation_id, lock=True)
            task = s.get(CallbackTask, task_id, with_for_update=True)
            if task is None or task.conversation_id != conversation_id:
                abort(404)
            envelope = ops.complete_callback(s, task, agent_id=g.agent.id, at=deps.clock(),
                                             calendar=config.business_calendar, correlation_id=new_id())
        _publish([envelope.message_id] if envelope else [])
        return _back(conversation_id, "called")

    @inbox.post("/c/<conversation_id>/resolve")
    @login_required
    def resolve(conversation_id: str):
        now = deps.clock()
        with transaction(deps.sessions) as s:
            conv = _load(s, conversation_id, lock=True)
            if conv.status != "open":
                return _page_error(409, "This conversation is already resolved.")
            envelope = ops.resolve(s, config, conv, at=now, correlation_id=new_id())
        _publish([envelope.message_id])
        return _back(conversation_id, "resolved")

    @inbox.post("/c/<conversation_id>/transfer")
    @login_required
    def transfer(conversation_id: str):
        target = request.form.get("target", "")
        note = request.form.get("note", "").strip()
        kind, _, target_id = target.partition(":")
        if not note or len(note) > 1000:
            return _page_error(422, "A transfer needs a note for the colleague (up to 1000 characters).")
        if not ((kind == "agent" and target_id in config.agents) or (kind == "team" and target_id in config.teams)):
            return _page_error(422, "Choose an agent or a team to transfer to.")
        now = deps.clock()
        with transaction(deps.sessions) as s:
            conv = _load(s, conversation_id, lock=True)
            if conv.status != "open":
                return _page_error(409, "Only an open conversation can be transferred.")
            ops.transfer(s, config, conv, by=g.agent.id, agent_id=target_id if kind == "agent" else None,
                         team_id=target_id if kind == "team" else None, note=note, at=now)
            still_visible = may_see(g.agent, conv, config)
        if not still_visible:
            return redirect(url_for("inbox.index", done="transferred"))
        return _back(conversation_id, "transferred")

    def _publish(ids: list[str]) -> None:
        ops.publish_pending(deps.sessions, deps.publisher, ids)
        # Assignment events stored by a transfer or a queue drain go out now too.
        ops.relay_pending(deps.sessions, deps.publisher, deps.clock(), older_than=timedelta(0))

    # --- the dashboard -------------------------------------------------------------------------

    @dashboard.get("/")
    @login_required
    def kpis():
        args = request.args
        try:
            scope = kpi_store.scope_for(g.agent, config, args.get("team") or None, args.get("agent") or None)
            start, end = kpi_store.period(config, deps.clock(), args.get("from") or None, args.get("to") or None)
        except kpi_store.ScopeError as exc:
            return _page_error(exc.status, str(exc))
        except ValueError as exc:
            return _page_error(422, str(exc))
        with deps.sessions() as s:
            result = kpi_store.report(s, config, scope, start, end, deps.clock())
            result["automatic_mail"] = automatic.counts(s, start, end, scope.team if scope.agent is None else None)
        return render_template("inbox/dashboard.html", page=_page(), r=result, charts=_charts(result),
                               start=start.astimezone(tz), end=end.astimezone(tz), scope=scope,
                               teams=sorted(led_teams(g.agent, config)),
                               agents=[a for a in config.agents.values()
                                       if a.team in led_teams(g.agent, config) or a.id == g.agent.id])

    return [inbox, dashboard]


def _labels(s: Session, names: dict[str, str | None], *, masked: bool) -> dict[str, str]:
    """Customer id → what the agent sees: the name, else the identity (services/router/display.py).
    One query, for the nameless ones only."""
    nameless = [cid for cid, name in names.items() if not (name and name.strip())]
    identities: dict[str, list[tuple[str, str]]] = {}
    if nameless:
        for cid, kind, value in s.execute(select(Identity.customer_id, Identity.kind, Identity.value)
                                          .where(Identity.customer_id.in_(nameless)).order_by(Identity.id)):
            identities.setdefault(cid, []).append((kind, value))
    return {cid: customer_label(name, identities.get(cid, ()), masked=masked) for cid, name in names.items()}


def _charts(result: dict) -> dict[str, Any]:
    """Numbers the SVG templates draw with: cell colours of the heatmap, bar heights of the trend."""
    heat = result["arrivals"]["by_hour_of_week"]
    staffed = result["arrivals"]["staffed_by_hour_of_week"]
    top = max((v for row in heat.values() for v in row), default=0) or 1
    cells = []
    for d, (day, row) in enumerate(heat.items()):
        for h, count in enumerate(row):
            cells.append({"day": day, "d": d, "h": h, "count": count, "staffed": staffed[day][h],
                          "opacity": round(0.08 + 0.92 * count / top, 2) if count else 0,
                          "alarm": count > 0 and staffed[day][h] == 0})
    return {"cells": cells, "bars": trend_bars(result["trend"]),
            "bar_width": max(4, min(40, 560 // max(1, len(result["trend"]))))}


def trend_bars(trend: list[dict]) -> list[dict]:
    """Stacked bars, bottom up: kept, breached, open. Open is what is neither kept nor breached (a
    promise not yet due, or a conversation resolved without a reply): it has its own colour, so four
    conversations due tomorrow are never drawn as breached."""
    peak = max((t["conversations"] for t in trend), default=0) or 1
    bars = []
    for t in trend:
        open_ = max(0, t["conversations"] - t["kept"] - t["breached"])
        segments, top = [], 110.0
        for kind, n in (("kept", t["kept"]), ("breached", t["breached"]), ("open", open_)):
            h = round(100 * n / peak, 1)
            if h:
                top = round(top - h, 1)
                segments.append({"kind": kind, "y": top, "h": h})
        bars.append({**t, "open": open_, "segments": segments})
    return bars

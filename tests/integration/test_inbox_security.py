"""Sign-in and sessions against the real PostgreSQL: login throttling per address and per agent
(429 + Retry-After, never a long lock-out of a real agent), password hashes upgraded at login,
tokens that end their sessions, expire and can be revoked, Secure cookies behind a TLS proxy."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
from datetime import timedelta

import httpx
import pytest
from flask import Flask
from sqlalchemy import select

from services.cli import main
from services.router import operations as ops
from services.router.api import ApiDeps
from services.router.inbox import SESSION_COOKIE, build_inbox, set_password
from services.router.models import AgentPassword, AgentToken, InboxSession
from shared.db import transaction
from shared.web import HttpServer, install_json_errors
from tests.integration.test_agent_api import WED, make_inbox_env

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
ATTACKER, DESK, LAPTOP = "203.0.113.66", "198.51.100.10", "192.0.2.44"


@pytest.fixture
def env(example_config, pg_url, rabbit_url):
    e, engine = make_inbox_env(example_config, pg_url, rabbit_url)
    with transaction(e.sessions) as s:
        set_password(s, "jonas", PASSWORD, WED)
    e.pg_url = pg_url
    yield e
    engine.dispose()


def client_from(env, address: str):
    client = env.app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def try_login(client, *, agent: str = "jonas", password: str = PASSWORD, token: str | None = None,
              accept: str = "*/*"):
    page = client.get("/inbox/login")
    form = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
    data = {"csrf_token": form, **({"token": token} if token else {"agent_id": agent, "password": password})}
    return client.post("/inbox/login", data=data, headers={"Accept": accept})


# --- throttling ----------------------------------------------------------------------------------


def test_wrong_passwords_get_429_with_retry_after_and_are_logged(env, caplog) -> None:
    attacker = client_from(env, ATTACKER)
    caplog.set_level(logging.WARNING, logger="services.router.inbox")
    statuses = [try_login(attacker, password=f"guess {i}").status_code for i in range(20)]
    # The review's probe: 20 wrong passwords in a row, then the right one. Now most are never checked.
    assert statuses[:6] == [401] * 6 and statuses[6:] == [429] * 14
    refused = try_login(attacker)  # the right password, from the throttled client
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    assert refused.json == {"error": "too_many_attempts", "retry_after": 1,
                            "message": "Too many failed logins. Try again in 1 seconds."}
    assert refused.get_json() is not None and attacker.get_cookie(SESSION_COOKIE) is None
    failed = [r for r in caplog.records if r.getMessage() == "inbox login failed"]
    assert len(failed) == 6 and failed[-1].agent_id == "jonas" and failed[-1].client == ATTACKER
    assert any(r.getMessage().startswith("inbox login refused") for r in caplog.records)

    env.clock.at = WED + timedelta(seconds=1)  # the wait is over: the right password works
    assert try_login(attacker).status_code == 302


def test_a_browser_gets_the_login_page_with_the_wait(env) -> None:
    attacker = client_from(env, ATTACKER)
    for i in range(6):
        try_login(attacker, password=f"guess {i}")
    r = try_login(attacker, accept="text/html,application/xhtml+xml,*/*;q=0.8")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1" and "Try again in 1 seconds" in r.text
    assert 'name="csrf_token"' in r.text  # the form is there to try again


def test_an_attacker_failing_by_name_does_not_lock_the_agent_out(env) -> None:
    assert try_login(client_from(env, DESK)).status_code == 302  # Jonas's usual desk
    for i in range(100):  # 20 minutes of guesses from many addresses, one every 12 s: the agent's counter never rests
        env.clock.at = WED + timedelta(seconds=12 * i)
        try_login(client_from(env, f"203.0.113.{i % 50}"), password=f"guess {i}")
    # At his desk, Jonas logs in at once.
    assert try_login(client_from(env, DESK)).status_code == 302
    # From a new address he waits, at most a minute...
    r = try_login(client_from(env, LAPTOP))
    assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
    # ...or logs in with his API token at once (256 random bits: no per-agent counter for those).
    assert try_login(client_from(env, LAPTOP), token=env.tokens["jonas"]).status_code == 302


def test_one_address_guessing_many_agents_is_throttled_for_all_of_them(env) -> None:
    with transaction(env.sessions) as s:
        set_password(s, "maria", PASSWORD, WED)
    attacker = client_from(env, ATTACKER)
    agents = ["anna", "maria", "taras", "jonas"]
    for i in range(11):  # never more than 3 on one agent: only the address's counter trips
        assert try_login(attacker, agent=agents[i % 4], password=f"guess {i}").status_code == 401
    r = try_login(attacker, agent="maria")  # right, but from the guessing address
    assert r.status_code == 429 and r.json["error"] == "too_many_attempts"
    assert try_login(attacker, token="sb_" + secrets.token_urlsafe(32)).status_code == 429
    assert try_login(client_from(env, DESK), agent="maria").status_code == 302  # nobody else waits


# --- password hashes -----------------------------------------------------------------------------


def test_an_old_scrypt_hash_is_upgraded_to_argon2id_at_the_next_login(env) -> None:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, dklen=32, n=2**14, r=8, p=1)
    old = f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"  # what main stored until now
    with transaction(env.sessions) as s:
        s.get(AgentPassword, "jonas").password_hash = old
    assert try_login(client_from(env, DESK), password="wrong password").status_code == 401
    with env.sessions() as s:
        assert s.get(AgentPassword, "jonas").password_hash == old  # a wrong password upgrades nothing
    assert try_login(client_from(env, DESK)).status_code == 302
    with env.sessions() as s:
        upgraded = s.get(AgentPassword, "jonas").password_hash
    assert upgraded.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert try_login(client_from(env, LAPTOP)).status_code == 302  # and it still works


def test_a_new_password_is_stored_as_argon2id(env) -> None:
    with env.sessions() as s:
        assert s.get(AgentPassword, "jonas").password_hash.startswith("$argon2id$")


# --- tokens and sessions --------------------------------------------------------------------------


def test_a_new_token_ends_the_sessions_opened_with_the_old_one(env) -> None:
    by_token = client_from(env, DESK)
    assert try_login(by_token, token=env.tokens["jonas"]).status_code == 302
    by_password = client_from(env, LAPTOP)
    assert try_login(by_password).status_code == 302
    assert by_token.get("/inbox/").status_code == by_password.get("/inbox/").status_code == 200
    with transaction(env.sessions) as s:
        ops.issue_token(s, "jonas", WED)
    assert by_token.get("/inbox/").status_code == 302  # back to the login page
    assert by_password.get("/inbox/").status_code == 200  # a password session is the password's


def test_revoke_ends_the_token_and_its_sessions_without_a_new_one(env, monkeypatch, capsys) -> None:
    browser = client_from(env, DESK)
    assert try_login(browser, token=env.tokens["jonas"]).status_code == 302
    monkeypatch.setenv("DATABASE_URL", env.pg_url)
    assert main(["agents", "revoke", "jonas"]) == 0
    assert "revoked 1 token(s) of jonas" in capsys.readouterr().out
    assert browser.get("/inbox/").status_code == 302
    assert env.client.get("/api/v1/conversations", headers=env.auth("jonas")).status_code == 401
    with env.sessions() as s:
        assert s.scalar(select(AgentToken).where(AgentToken.agent_id == "jonas",
                                                 AgentToken.revoked_at.is_(None))) is None
    assert try_login(client_from(env, LAPTOP), token=env.tokens["jonas"]).status_code == 401


def test_tokens_expire_and_so_do_the_sessions_opened_with_them(env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DATABASE_URL", env.pg_url)
    monkeypatch.setenv("AGENT_TOKEN_DAYS", "30")
    assert main(["agents", "token", "maria"]) == 0
    with env.sessions() as s:
        row = s.scalar(select(AgentToken).where(AgentToken.agent_id == "maria", AgentToken.revoked_at.is_(None)))
    assert timedelta(days=29, hours=23) < row.expires_at - row.created_at <= timedelta(days=30)

    with transaction(env.sessions) as s:
        token = ops.issue_token(s, "maria", WED, valid_for=timedelta(hours=1))
    browser = client_from(env, DESK)
    r = try_login(browser, token=token)
    assert r.status_code == 302 and "Max-Age=3600" in r.headers["Set-Cookie"]  # not the 12 h of a session
    with env.sessions() as s:
        assert s.scalar(select(InboxSession.expires_at)) == WED + timedelta(hours=1)
    auth = {"Authorization": f"Bearer {token}"}
    assert env.client.get("/api/v1/conversations", headers=auth).status_code == 200
    env.clock.at = WED + timedelta(hours=1)
    assert env.client.get("/api/v1/conversations", headers=auth).status_code == 401
    assert browser.get("/inbox/").status_code == 302


# --- Secure cookies behind a TLS proxy ------------------------------------------------------------


@pytest.mark.parametrize(("trusted_proxy", "secure_cookies", "secure"), [
    (None, False, False),  # X-Forwarded-Proto from anybody: dropped by waitress
    ("127.0.0.1", False, True),  # from the proxy we trust: https, so Secure
    (None, True, True),  # SECURE_COOKIES=1: Secure whatever the request says
])
def test_the_session_cookie_is_secure_behind_a_tls_proxy(env, example_config, trusted_proxy, secure_cookies,
                                                         secure) -> None:
    app = Flask("inbox-behind-proxy")
    install_json_errors(app)
    for bp in build_inbox(ApiDeps(config=example_config, sessions=env.sessions, publisher=None,  # type: ignore[arg-type]
                                  clock=env.clock, secure_cookies=secure_cookies)):
        app.register_blueprint(bp)
    server = HttpServer(app, "127.0.0.1", 0, trusted_proxy=trusted_proxy).start()
    try:
        # What a TLS-terminating proxy sends on: the client's address and the scheme it used.
        proxy_headers = {"X-Forwarded-Proto": "https", "X-Forwarded-For": LAPTOP}
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", headers=proxy_headers) as http:
            page = http.get("/inbox/login")
            form = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text).group(1)
            r = http.post("/inbox/login", data={"csrf_token": form, "token": env.tokens["jonas"]},
                          cookies={"sb_login_csrf": form})
        assert r.status_code == 302
        session_cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith(SESSION_COOKIE))
        assert ("; Secure" in session_cookie) is secure
        assert ("; Secure" in page.headers["set-cookie"]) is secure
        if trusted_proxy:  # the login was counted on the client's address, not the proxy's
            with env.sessions() as s:
                from services.router.models import LoginKnownAddress
                assert s.scalar(select(LoginKnownAddress.address).where(LoginKnownAddress.agent_id == "jonas")) == LAPTOP
    finally:
        server.stop(grace=1)

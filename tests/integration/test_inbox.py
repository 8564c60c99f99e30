"""The inbox and dashboard pages with Flask's test client, against the real PostgreSQL and RabbitMQ:
login (token and password), CSRF refusals, escaping of customer content, every form, the KPI API
and the macro reply through the API.

Conversations are made by the router's own handler (tests/integration/test_agent_api.py's Env).
"""

from __future__ import annotations

import html as html_lib
import re

import pytest
from sqlalchemy import select

from services.router.inbox import SESSION_COOKIE, set_password
from services.router.models import Conversation, InboxSession, Message, RouterOutbox
from shared.contracts import ConversationReply, ConversationResolved
from shared.contracts import Identity as Ident
from shared.db import transaction
from tests.integration.test_agent_api import WED, bus_messages, make_inbox_env

pytestmark = pytest.mark.integration

XSS = "<script>alert(1)</script> where is my <b>parcel</b>?"


@pytest.fixture
def env(example_config, pg_url, rabbit_url):
    e, engine = make_inbox_env(example_config, pg_url, rabbit_url)
    yield e
    engine.dispose()


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([0-9a-f]+)"', html).group(1)


def login_with_token(env, agent: str, client=None):
    client = client or env.client
    page = client.get("/inbox/login")
    r = client.post("/inbox/login", data={"csrf_token": csrf(page.text), "token": env.tokens[agent],
                                          "next": "/inbox/"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/inbox/"), r.text
    return client


def page_csrf(client, path: str) -> str:
    return csrf(client.get(path).text)


# --- login ---------------------------------------------------------------------------------------


def test_login_with_the_api_token_or_a_password_and_logout(env) -> None:
    assert env.client.get("/inbox/").status_code == 302  # to the login page
    login_with_token(env, "maria")
    cookie = env.client.get_cookie(SESSION_COOKIE)
    assert cookie.http_only and cookie.same_site == "Lax"
    with env.sessions() as s:  # only the cookie's hash is stored
        assert s.scalar(select(InboxSession.id_hash)) != cookie.value
    listing = env.client.get("/inbox/")
    assert listing.status_code == 200 and "Maria Georgieva" in listing.text
    assert "script-src 'self'" in listing.headers["Content-Security-Policy"]

    r = env.client.post("/inbox/logout", data={"csrf_token": page_csrf(env.client, "/inbox/")})
    assert r.status_code == 302 and env.client.get("/inbox/").status_code == 302
    assert env.count(InboxSession) == 0

    with transaction(env.sessions) as s:
        set_password(s, "jonas", "correct horse battery", WED)
    other = env.app.test_client()
    form = page_csrf(other, "/inbox/login")
    bad = other.post("/inbox/login", data={"csrf_token": form, "agent_id": "jonas", "password": "wrong password"})
    assert bad.status_code == 401 and "wrong password" in bad.text and other.get_cookie(SESSION_COOKIE) is None
    good = other.post("/inbox/login", data={"csrf_token": csrf(bad.text), "agent_id": "jonas",
                                            "password": "correct horse battery", "next": "https://evil.example/"})
    assert good.status_code == 302 and good.headers["Location"] == "/inbox/"  # no open redirect
    assert "Jonas Petrauskas" in other.get("/inbox/").text


def test_login_and_forms_without_the_csrf_token_are_refused_and_change_nothing(env) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg")  # maria's
    fresh = env.app.test_client()
    r = fresh.post("/inbox/login", data={"token": env.tokens["maria"]})  # no login CSRF cookie or field
    assert r.status_code == 403 and fresh.get_cookie(SESSION_COOKIE) is None and env.count(InboxSession) == 0

    login_with_token(env, "maria")
    before = (env.count(Message), env.count(RouterOutbox))
    for path, data in ((f"/inbox/c/{conv}/reply", {"text": "Hello"}), (f"/inbox/c/{conv}/resolve", {}),
                       (f"/inbox/c/{conv}/transfer", {"target": "agent:anna", "note": "x"})):
        assert env.client.post(path, data=data).status_code == 403
        assert env.client.post(path, data={**data, "csrf_token": "0" * 64}).status_code == 403
    assert (env.count(Message), env.count(RouterOutbox)) == before
    c = env.conv(conv)
    assert c.status == "open" and c.owner_id == "maria"
    assert env.app.test_client().post(f"/inbox/c/{conv}/resolve", data={}).status_code == 401  # no session


# --- content ------------------------------------------------------------------------------------


def test_customer_content_is_shown_as_text_never_as_markup(env) -> None:
    conv = env.inbound(XSS, lang="bg")
    login_with_token(env, "maria")
    html = env.client.get(f"/inbox/c/{conv}").text
    assert "<script>alert(1)" not in html and "<b>parcel" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; where is my &lt;b&gt;parcel&lt;/b&gt;?" in html


def test_a_list_with_countdowns_and_a_thread_with_channel_badges(env) -> None:
    first = env.inbound("Where is my parcel?", lang="bg")
    # The same customer writes by SMS too (the gateway links the identities): one thread.
    env.inbound("Any news?", lang="bg", channel="sms", kind="phone", user="+48600100200",
                linked=(Ident("telegram", "42"),))
    login_with_token(env, "maria")
    listing = env.client.get("/inbox/").text
    assert f"/inbox/c/{first}" in listing and 'class="countdown"' in listing and "due in" in listing
    thread = env.client.get(f"/inbox/c/{first}").text
    assert thread.count('class="badge ch-telegram"') >= 2 and 'class="badge ch-sms"' in thread
    assert thread.index("Where is my parcel?") < thread.index("Any news?")
    # Another agent's conversation is not shown to a plain agent.
    jonas = env.app.test_client()
    login_with_token(env, "jonas", jonas)
    assert jonas.get(f"/inbox/c/{first}").status_code == 403
    assert f"/inbox/c/{first}" not in jonas.get("/inbox/").text
    # The lead sees the team's.
    anna = env.app.test_client()
    login_with_token(env, "anna", anna)
    assert f"/inbox/c/{first}" in anna.get("/inbox/").text


# --- every form -----------------------------------------------------------------------------------


def test_reply_with_a_macro_resolve_and_transfer_from_the_page(env) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg")
    login_with_token(env, "maria")
    page = env.client.get(f"/inbox/c/{conv}?macro=delivery-late&order_number=NW-7").text
    assert "Здравейте, Piotr!" in page and "поръчка № NW-7" in page and "Maria Georgieva, Northwind Outfitters" in page
    draft = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.S).group(1)
    text = html_lib.unescape(draft)
    r = env.client.post(f"/inbox/c/{conv}/reply", data={"csrf_token": csrf(page), "text": text,
                                                         "macro": "delivery-late"})
    assert r.status_code == 302 and "done=sent" in r.headers["Location"]
    with env.sessions() as s:
        out = s.scalar(select(Message).where(Message.conversation_id == conv, Message.direction == "out"))
        assert out.text == text and out.sender_value == "maria" and out.details == {"macro": "delivery-late"}
        assert s.get(Conversation, conv).first_response_at == WED
    assert "Reply sent on telegram" in env.client.get(r.headers["Location"]).text

    # Transfer to anna with a note; maria no longer sees it, anna does.
    token = page_csrf(env.client, f"/inbox/c/{conv}")
    r = env.client.post(f"/inbox/c/{conv}/transfer", data={"csrf_token": token, "target": "agent:anna",
                                                            "note": "speaks Polish, knows the carrier"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/inbox/?done=transferred")
    assert env.conv(conv).owner_id == "anna" and "knows the carrier" in env.conv(conv).assignment_reason
    bad = env.client.post(f"/inbox/c/{conv}/transfer", data={"csrf_token": token, "target": "agent:ghost",
                                                              "note": "x"})
    assert bad.status_code in (403, 422)

    anna = env.app.test_client()
    login_with_token(env, "anna", anna)
    token = page_csrf(anna, f"/inbox/c/{conv}")
    assert anna.post(f"/inbox/c/{conv}/reply", data={"csrf_token": token, "text": ""}).status_code == 422
    r = anna.post(f"/inbox/c/{conv}/resolve", data={"csrf_token": token})
    assert r.status_code == 302 and env.conv(conv).status == "resolved"
    assert anna.post(f"/inbox/c/{conv}/resolve", data={"csrf_token": token}).status_code == 409

    events = [m.payload for m in bus_messages(env.broker_url)]
    replies = [e for e in events if isinstance(e, ConversationReply)]
    assert [e.text for e in replies] == [text] and replies[0].channel == "telegram"
    assert sum(isinstance(e, ConversationResolved) and e.human_replied for e in events) == 1


# --- the API: macro replies and KPIs ---------------------------------------------------------------


def test_reply_with_a_macro_through_the_api(env) -> None:
    conv = env.inbound("Gdzie jest moja paczka?", lang="pl")
    owner = env.conv(conv).owner_id
    r = env.client.post(f"/api/v1/conversations/{conv}/reply",
                        json={"macro": "delivery-late", "variables": {"order_number": "NW-55"}},
                        headers=env.auth(owner))
    assert r.status_code == 201, r.json
    assert r.json["text"].startswith("Dzień dobry,\n\nrozumiemy") and "zamówienia nr NW-55" in r.json["text"]
    sent = [m.payload for m in bus_messages(env.broker_url) if isinstance(m.payload, ConversationReply)]
    assert [e.text for e in sent] == [r.json["text"]]
    bad = env.client.post(f"/api/v1/conversations/{conv}/reply", json={"macro": "nope"}, headers=env.auth(owner))
    assert bad.status_code == 422 and "no macro 'nope'" in bad.json["message"]
    both = env.client.post(f"/api/v1/conversations/{conv}/reply", json={"macro": "returns-how", "text": "x"},
                           headers=env.auth(owner))
    assert both.status_code == 422
    listed = env.client.get("/api/v1/macros?language=pl&category=returns", headers=env.auth(owner)).json
    assert listed["macros"][0]["id"] == "returns-how" and len(listed["macros"]) == 6


@pytest.fixture
def overridden(example_config, pg_url, rabbit_url):
    """The example business with its own words for a late parcel, read from the config file."""
    from pathlib import Path

    import yaml

    from shared.config import load_config_text

    doc = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "switchboard.yaml").read_text())
    doc["macros"] = {"bg": {"delivery-late": {"answer": "Пратка {{ order_number }} е при куриера от днес."}}}
    config = load_config_text(yaml.safe_dump(doc, allow_unicode=True), "overrides.yaml")
    e, engine = make_inbox_env(config, pg_url, rabbit_url)
    yield e
    engine.dispose()


def test_the_configs_macro_words_reach_the_page_and_the_api(overridden) -> None:
    env = overridden
    conv = env.inbound("Where is my parcel?", lang="bg")
    login_with_token(env, "maria")
    page = html_lib.unescape(env.client.get(f"/inbox/c/{conv}?macro=delivery-late&order_number=NW-8").text)
    assert "Пратка NW-8 е при куриера от днес." in page and "Здравейте, Piotr!" in page
    r = env.client.post(f"/api/v1/conversations/{conv}/reply",
                        json={"macro": "delivery-late", "variables": {"order_number": "NW-9"}}, headers=env.auth("maria"))
    assert r.status_code == 201 and "Пратка NW-9 е при куриера от днес." in r.json["text"]


def test_kpis_for_a_lead_and_an_agents_own_only(env) -> None:
    answered = env.inbound("Where is my parcel?", lang="bg")  # maria
    env.client.post(f"/api/v1/conversations/{answered}/reply", json={"text": "On its way."},
                    headers=env.auth("maria"))
    q = "/api/v1/kpis?from=2026-11-23&to=2026-11-30"
    lead = env.client.get(q, headers=env.auth("anna"))
    assert lead.status_code == 200, lead.json
    body = lead.json
    assert body["scope"] == {"team": "support", "agent": None} and body["conversations"] == 1
    assert body["first_response"]["median_s"] == 0 and body["promises"]["kept"] == 1
    assert body["volume"]["by_language"] == {"bg": 1}
    assert body["arrivals"]["by_hour_of_week"]["wed"][10] == 1 and body["arrivals"]["staffed_by_hour_of_week"]["wed"][10] == 3
    assert body["surveys"]["csat_pct"] is None

    own = env.client.get(q, headers=env.auth("jonas")).json
    assert own["scope"] == {"team": None, "agent": "jonas"} and own["conversations"] == 0
    assert env.client.get(q + "&agent=maria", headers=env.auth("jonas")).status_code == 403
    assert env.client.get(q + "&team=support", headers=env.auth("jonas")).status_code == 403
    assert env.client.get(q + "&team=nope", headers=env.auth("anna")).status_code == 422
    assert env.client.get("/api/v1/kpis?from=2026-12-01&to=2026-11-01", headers=env.auth("anna")).status_code == 422
    assert env.client.get("/api/v1/kpis?from=yesterday-ish", headers=env.auth("anna")).status_code == 422
    assert env.client.get("/api/v1/kpis").status_code == 401

    anna = env.app.test_client()
    login_with_token(env, "anna", anna)
    page = anna.get("/dashboard/?from=2026-11-23&to=2026-11-30")
    assert page.status_code == 200 and '<svg id="heatmap"' in page.text and '<svg id="trend"' in page.text
    assert 'id="kpi-kept">100.0 %' in page.text
    jonas = env.app.test_client()
    login_with_token(env, "jonas", jonas)
    assert jonas.get("/dashboard/?team=support").status_code == 403


# --- the CLI ----------------------------------------------------------------------------------------


def test_cli_sets_a_password_and_reports_kpis_as_table_csv_and_json(env, pg_url, monkeypatch, capsys) -> None:
    import io
    import json

    from services import cli

    answered = env.inbound("Where is my parcel?", lang="bg")
    env.client.post(f"/api/v1/conversations/{answered}/reply", json={"text": "On its way."},
                    headers=env.auth("maria"))
    monkeypatch.setenv("DATABASE_URL", pg_url)
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert cli.main(["agents", "password", "maria"]) == 2
    assert "at least 10 characters" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough secret\n"))
    assert cli.main(["agents", "password", "maria"]) == 0
    capsys.readouterr()
    browser = env.app.test_client()
    form = page_csrf(browser, "/inbox/login")
    assert browser.post("/inbox/login", data={"csrf_token": form, "agent_id": "maria",
                                              "password": "a long enough secret"}).status_code == 302

    args = ["report", "--from", "2026-11-23", "--to", "2026-11-30", "--team", "support"]
    assert cli.main([*args, "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["conversations"] == 1 and body["promises"]["kept_pct"] == 100.0 and body["surveys"]["nps"] is None
    assert cli.main([*args, "--format", "csv"]) == 0
    csv_lines = capsys.readouterr().out.splitlines()
    assert csv_lines[0] == "figure,value" and "conversations,1" in csv_lines and "volume.language.bg,1" in csv_lines
    assert "nps," in csv_lines
    assert cli.main(args) == 0
    table = capsys.readouterr().out
    assert "promises_kept_pct" in table and "100.0" in table and "team support" in table
    assert cli.main(["report", "--team", "nope"]) == 2
    assert "unknown team" in capsys.readouterr().err


def test_the_resolved_list_pages_by_cursor_and_shrugs_off_a_foreign_one(env) -> None:
    conv = env.inbound("Where is my parcel?", lang="bg")  # maria's
    assert env.client.post(f"/api/v1/conversations/{conv}/resolve", headers=env.auth("maria")).status_code == 200
    login_with_token(env, "maria")
    page = env.client.get("/inbox/?status=resolved")
    assert page.status_code == 200 and env.conv(conv).reference in page.text
    assert 'id="older"' not in page.text  # one page only
    odd = env.client.get("/inbox/?status=resolved&cursor=" + "x" * 5000)
    assert odd.status_code == 200 and env.conv(conv).reference in odd.text  # the first page again

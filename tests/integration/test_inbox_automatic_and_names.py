"""The inbox and dashboard pages (Flask's test client, the real PostgreSQL): automatic mail under its
own filter with its counter; a customer without a name listed by their number or address, masked
for an agent whose config says so; the trend chart's legend for kept, breached and open."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from services.gateway.channels.email import parse_mime
from services.router.handlers import RouterDeps, handle_inbound
from shared.contracts import Envelope, InboundMessage, derive_id
from shared.contracts import Identity as Ident
from tests.integration.test_agent_api import WED, classify, make_inbox_env
from tests.integration.test_inbox import login_with_token

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "email" / "automatic"


def with_masking(config, agent_id: str):
    agents = {**config.agents, agent_id: dataclasses.replace(config.agents[agent_id], mask_contacts=True)}
    return dataclasses.replace(config, agents=agents)


@pytest.fixture
def env(example_config, pg_url, rabbit_url):
    config = with_masking(example_config, "anna")  # the lead sees every conversation, masked
    e, engine = make_inbox_env(config, pg_url, rabbit_url)
    yield e
    engine.dispose()


def route(env, msg: InboundMessage, lang: str = "en") -> None:
    deps = RouterDeps(config=env.app.config["SB"], sessions=env.sessions, classify=classify,
                      detect_language=lambda text, hints: lang)
    handle_inbound(Envelope.wrap(msg, message_id=derive_id(msg.channel, msg.external_id), correlation_id="c",
                                 occurred_at=WED), deps)


def test_a_nameless_customer_is_listed_by_number_and_masked_for_a_masked_agent(env) -> None:
    route(env, InboundMessage(channel="sms", external_id="SM1", sender=Ident("phone", "+48600100200"),
                              reply_to="+48600100200", received_at=WED, text="Kur mano siuntinys?"), lang="lt")
    anna = login_with_token(env, "anna", env.app.test_client())  # mask_contacts: true
    listing = anna.get("/inbox/").text
    assert "+48*******00" in listing and "+48600100200" not in listing and "Unknown customer" not in listing
    conv_id = listing.split("/inbox/c/")[1].split('"')[0]
    assert "<h1>+48*******00 <code>" in anna.get(f"/inbox/c/{conv_id}").text
    owner = env.conv(conv_id).owner_id
    assert owner != "anna"
    theirs = login_with_token(env, owner, env.app.test_client())
    assert "+48600100200" in theirs.get("/inbox/").text
    assert "<h1>+48600100200 <code>" in theirs.get(f"/inbox/c/{conv_id}").text


def test_masked_agent_sees_nameless_automatic_mail_masked(env) -> None:
    msg = parse_mime((FIXTURES / "vacation_auto_submitted_away_until.eml").read_bytes(), received_at=WED,
                     our_domains={"support.northwind.example"})
    assert msg.sender_name is None
    route(env, msg)
    anna = login_with_token(env, "anna", env.app.test_client())
    page = anna.get("/inbox/?status=automatic").text
    assert "k***@example.net" in page and "kijitora@example.net" not in page
    jonas = login_with_token(env, "jonas", env.app.test_client())
    assert "kijitora@example.net" in jonas.get("/inbox/?status=automatic").text


def test_automatic_mail_has_its_own_filter_counter_and_dashboard_card(env) -> None:
    for name in ("bounce_yahoo_failure_notice", "spam_spamassassin_status_yes_vger",
                 "vacation_exchange_automatic_reply"):
        route(env, parse_mime((FIXTURES / f"{name}.eml").read_bytes(), received_at=WED,
                              our_domains={"support.northwind.example"}))
    jonas = login_with_token(env, "jonas", env.app.test_client())
    assert "/inbox/c/" not in jonas.get("/inbox/").text  # never among the open conversations
    page = jonas.get("/inbox/?status=automatic").text
    assert "<h1>Automatic mail <small>(3)</small></h1>" in page
    assert "Last 7 days: 3 —\nbounce 1, spam 1, vacation 1." in page
    assert page.count('class="badge automatic"') == 3
    anna = login_with_token(env, "anna", env.app.test_client())
    board = anna.get("/dashboard/?from=2026-11-24&to=2026-11-26").text
    assert '<b id="kpi-conversations">0</b>' in board
    assert 'id="kpi-automatic"' in board and ">3</a></b><span>automatic mail, outside the KPIs (bounce 1, spam 1, " \
                                             "vacation 1)" in board
    assert 'id="trend-legend"' in board and "promise not yet due" in board

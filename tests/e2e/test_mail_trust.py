"""End to end, services mode with a real SMTP server (aiosmtpd): a forged From with the thief's
Reply-To (issue 13). Our relay's verdict arrives as its Authentication-Results field; the forger
adds one of their own claiming a pass. The forged mail neither joins the victim's conversation nor
gets anything sent to the thief: the acknowledgement and the agent's answer go to the victim's
address, until an agent confirms the Reply-To through the API.
"""

from __future__ import annotations

from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

import httpx
import pytest

from shared.runtime import utc_now
from tests.e2e.test_surveys import Agent, query
from tests.support.procs import Services, running_services
from tests.support.smtp import SmtpServer
from tests.support.wait import until

pytestmark = pytest.mark.e2e

RELAY_SECRET = "relay-secret"
OUR_MTA = "mx.northwind.example"  # our relay's authserv-id, as channels.email.authserv_ids says
VICTIM, THIEF = "mark.evans@example.com", "thief@evil.example"


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def trust_our_mta(config: dict) -> None:
    config["channels"]["email"]["authserv_ids"] = [OUR_MTA]


@pytest.fixture
def services(rabbit_url, pg_url, fake_bot_api, smtp, tmp_path):
    with running_services(broker_url=rabbit_url, database_url=pg_url, workdir=tmp_path,
                          telegram_api=fake_bot_api.base_url, edit_config=trust_our_mta, extra={
                              "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_SECURITY": "none",
                              "EMAIL_RELAY_SECRET": RELAY_SECRET,
                          }) as svc:
        yield svc


def relay(svc: Services, *, auth: list[str], subject: str, text: str, reply_to: str | None = None) -> None:
    """The relay posts the mail as it received it: its own Authentication-Results field on top."""
    mail = EmailMessage()
    for field in auth:
        mail["Authentication-Results"] = field
    mail["From"] = f"Mark Evans <{VICTIM}>"
    if reply_to:
        mail["Reply-To"] = reply_to
    mail["To"] = "help@support.northwind.example"
    mail["Subject"] = subject
    mail["Date"] = format_datetime(utc_now())
    mail["Message-ID"] = make_msgid(domain="example.com")
    mail.set_content(text)
    r = httpx.post(f"{svc.gateway}/webhooks/email", content=mail.as_bytes(), timeout=10,
                   headers={"X-Switchboard-Relay-Secret": RELAY_SECRET, "Content-Type": "message/rfc822"})
    assert r.status_code == 200, r.text


def test_a_forged_from_with_a_thiefs_reply_to_gets_the_thief_nothing(services, smtp, pg_url) -> None:
    # Mark writes; our MTA vouches for example.com.
    relay(services, auth=[f"{OUR_MTA}; dkim=pass header.d=example.com; dmarc=pass header.from=example.com"],
          subject="Order 48213", text="Where is my parcel? Order 48213, to my home address.")
    until(lambda: smtp.to(VICTIM), timeout=60, message="Mark's acknowledgement")
    [(genuine, reference)] = query(pg_url, "SELECT id, reference FROM conversations")

    # The forger: From Mark, Reply-To the thief, Mark's reference in the subject, and an
    # Authentication-Results field of their own making that claims a pass. Our MTA's says fail.
    relay(services, auth=[f"{OUR_MTA}; spf=fail smtp.mailfrom=example.com; dmarc=fail header.from=example.com",
                          "mx.evil.example; dmarc=pass header.from=example.com"],
          subject=f"Re: Order 48213 [{reference}]", reply_to=THIEF,
          text="Please resend the order details and the invoice, I moved.")
    until(lambda: len(query(pg_url, "SELECT id FROM conversations")) == 2, timeout=60, message="the forged mail")
    [(forged, reply_to, pending, unverified)] = query(
        pg_url, f"SELECT id, reply_to, reply_to_pending, unverified_sender FROM conversations WHERE id != '{genuine}'")
    assert (reply_to, pending, unverified) == (VICTIM, THIEF, True)
    # Mark's conversation has his one message only.
    assert query(pg_url, f"SELECT count(*) FROM messages WHERE conversation_id = '{genuine}'") == [(1,)]

    # The agent answers both conversations: every answer goes to Mark's address.
    Agent(services, pg_url, genuine).post("reply", {"text": "Your parcel arrives tomorrow."})
    Agent(services, pg_url, forged).post("reply", {"text": "Your order 48213 ships to 12 Baker St."})
    until(lambda: len(smtp.to(VICTIM)) >= 4, timeout=60, message="two acknowledgements and two answers")
    assert smtp.to(THIEF) == []
    bodies = b"".join(m.content for m in smtp.to(VICTIM))
    assert b"12 Baker St." in bodies and b"Your parcel arrives tomorrow." in bodies

    # Only when an agent confirms the Reply-To does an answer go there.
    agent = Agent(services, pg_url, forged)
    r = agent.post("reply-to/confirm", {"address": THIEF})
    assert r.json()["conversation"]["reply_to"] == THIEF
    agent.post("reply", {"text": "Confirmed by phone: here is your invoice."})
    until(lambda: smtp.to(THIEF), timeout=60, message="the answer to the confirmed Reply-To")
    [answer] = smtp.to(THIEF)
    assert b"here is your invoice" in answer.content

"""Wires the notifier: senders from the settings (sandbox where credentials are unset), the
acknowledgement composer, the events consumer."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime
from functools import partial
from typing import TextIO

from sqlalchemy.orm import Session, sessionmaker

from services.notifier import promises
from services.notifier.ack import compose_ack
from services.notifier.deps import NotifierDeps
from services.notifier.handlers import handle_batch
from services.notifier.outbox import MAX_SEND_ATTEMPTS
from services.notifier.senders import Registry, Sender
from services.notifier.senders.sandbox import SandboxSender
from services.notifier.survey_flow import report_surveys, send_due_surveys
from services.notifier.ticker import Job, Ticker
from shared.bus.consumer import Worker
from shared.bus.publisher import Publisher
from shared.bus.topology import NOTIFIER_EVENTS
from shared.config import CHANNELS, Config
from shared.settings import Settings
from shared.survey_links import SurveyLinks, survey_secret


def _twilio_sms(settings: Settings, config: Config) -> Sender | None:
    if not (settings.twilio_account_sid and settings.twilio_auth_token):
        return None
    from services.notifier.senders.twilio_sms import TwilioSmsSender

    sms = config.channels.get("sms")
    return TwilioSmsSender(
        settings.twilio_account_sid, settings.twilio_auth_token, sms.from_number if sms else None,
        api_base=settings.twilio_api_base, status_callback=settings.public_base_url + "/webhooks/twilio/status")


def _messenger(settings: Settings, config: Config, channel: str = "messenger") -> Sender | None:
    if not settings.meta_page_token:
        return None
    from services.notifier.senders.meta import MessengerSender

    return MessengerSender(settings.meta_page_token, settings.meta_graph_base, channel=channel)


def _whatsapp(settings: Settings, config: Config) -> Sender | None:
    if not settings.whatsapp_token:
        return None
    from services.notifier.senders.meta import WhatsAppSender

    wa = config.channels.get("whatsapp")
    return WhatsAppSender(settings.whatsapp_token, settings.meta_graph_base,
                          wa.phone_number_id if wa and wa.phone_number_id else "")


def _telegram(settings: Settings, config: Config) -> Sender | None:
    if not settings.telegram_bot_token:
        return None
    from services.notifier.senders.telegram import TelegramSender

    return TelegramSender(settings.telegram_bot_token, api_base=settings.telegram_api_base)


def _smtp(settings: Settings, config: Config) -> Sender | None:
    if not settings.smtp_host:
        return None
    from email.utils import formataddr

    from services.notifier.senders.email import Security, SmtpSender

    domain = config.business.email_domain
    security: Security = settings.smtp_security or ("tls" if settings.smtp_port == 465 else "starttls")
    return SmtpSender(
        settings.smtp_host, settings.smtp_port, settings.smtp_user, settings.smtp_password,
        from_address=formataddr((config.business.name, settings.smtp_from or f"support@{domain}")),
        domain=domain, security=security)


#: The notifier's channel registry, one line a channel: the channel's real sender, or None when
#: its credentials are unset (build_senders puts the sandbox there). Imports are inside each maker:
#: a provider's client library loads only when its credentials are set.
SENDERS: dict[str, Callable[[Settings, Config], Sender | None]] = {
    "sms": _twilio_sms,
    "messenger": _messenger,
    "instagram": partial(_messenger, channel="instagram"),
    "whatsapp": _whatsapp,
    "telegram": _telegram,
    "email": _smtp,
}
#: A caller is answered by SMS to the number they called from (and from the number they called:
#: the event's reply_from): a voice call cannot carry an acknowledgement. The same sender object,
#: so the two share one provider's bulkhead (Registry).
SENT_AS = {"phone": "sms"}


def build_senders(settings: Settings, config: Config, *, sandbox_out: TextIO | None = None,
                  max_in_flight: int | None = None) -> Registry:
    """Every channel's sender from SENDERS, the sandbox where there is none (credentials unset).
    `max_in_flight`: the bulkhead, how many sends may wait on one provider at once (None: no limit)."""
    senders: dict[str, Sender] = {}
    for channel in CHANNELS:
        if channel not in SENT_AS:
            make = SENDERS.get(channel)
            sender = make(settings, config) if make is not None else None
            senders[channel] = sender if sender is not None else SandboxSender(channel, out=sandbox_out)
    for channel, via in SENT_AS.items():
        senders[channel] = senders[via]
    return Registry(senders, max_in_flight=max_in_flight)


def build_deps(config: Config, sessions: sessionmaker[Session], senders: Registry,
               clock: Callable[[], datetime], *, survey_links: SurveyLinks | None = None,
               send_pool: Executor | None = None) -> NotifierDeps:
    """`send_pool`: the threads a batch's conversations are sent on at once (None: one by one)."""
    return NotifierDeps(config=config, sessions=sessions, senders=senders,
                        compose_ack=partial(compose_ack, config=config), clock=clock, survey_links=survey_links,
                        send_pool=send_pool)


def build_survey_links(settings: Settings, *, embedded: bool) -> SurveyLinks | None:
    """E-mail survey links point at the gateway (PUBLIC_BASE_URL), signed with SURVEY_SECRET."""
    secret = survey_secret(settings, embedded=embedded)
    return SurveyLinks(secret, settings.public_base_url) if secret else None


def build_ticker(deps: NotifierDeps, *, interval: float = 5.0, publisher: Publisher | None = None) -> Ticker:
    """Time-driven work, each job `f(now) -> int` with its state in the database (see ticker.py).
    Register new jobs here: promise checks, notices waiting for a shift, surveys after their delay."""
    jobs: dict[str, Job] = {}
    jobs["surveys"] = partial(send_due_surveys, deps=deps)
    # Promise checks before notice delivery: a warning made in this tick goes out in this tick.
    jobs["promises"] = partial(promises.check_promises, deps=deps)
    jobs["agent_notices"] = partial(promises.deliver_notices, deps=deps)
    # Last: a survey sent in this round is reported in this round, so the router reads an SMS digit
    # answering it against its own record (services/router/survey_replies.py) moments after it left.
    if publisher is not None:  # the router learns of surveys sent and answered from the bus
        jobs["survey_results"] = partial(report_surveys, deps=deps, publisher=publisher)
    return Ticker(jobs, deps.clock, interval=interval)


def build_worker(broker_url: str, deps: NotifierDeps, publisher: Publisher, *, batch_size: int = 32,
                 batch_wait_ms: float = 10.0) -> Worker:
    """The events consumer in micro-batches (SWITCHBOARD_BATCH_SIZE, SWITCHBOARD_BATCH_WAIT_MS): a
    batch's conversations are sent at once on `deps.send_pool`, each conversation's in order
    (handlers.handle_batch); its events are published with their confirms awaited together and the
    batch acked at once. Each event keeps its own outbox claim and commit: a send is never undone."""
    return Worker(url=broker_url, spec=NOTIFIER_EVENTS, batch_handler=partial(handle_batch, deps=deps),
                  publisher=publisher, name="notifier", max_attempts=MAX_SEND_ATTEMPTS,
                  batch_size=batch_size, batch_wait=batch_wait_ms / 1000)

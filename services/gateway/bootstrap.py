"""Wires the gateway: adapters from settings, the confirming publisher, the spool, the web app."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from flask import Blueprint, Flask
from sqlalchemy import Engine

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels import Inbound, InboundAdapter
from services.gateway.channels.email import EmailRelayAdapter
from services.gateway.channels.meta import MetaAdapter
from services.gateway.channels.telegram import TelegramAdapter
from services.gateway.channels.twilio import TwilioSmsAdapter, TwilioStatusAdapter
from services.gateway.channels.twilio_voice import STAGES as VOICE_STAGES
from services.gateway.channels.twilio_voice import TwilioVoiceAdapter
from services.gateway.imap_poller import ImapPoller
from services.gateway.intake import Intake
from services.gateway.owners import lazy_engine, owner_lookup
from services.gateway.spool import Spool
from services.gateway.survey_pages import survey_blueprint
from services.gateway.telegram_poller import TelegramPoller
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.config import Config
from shared.contracts import Envelope, derive_id
from shared.runtime import start_thread
from shared.service import broker_check
from shared.settings import DEV_TELEGRAM_SECRET, Settings
from shared.survey_links import survey_secret
from shared.web import health_blueprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wiring:
    """What the adapters are made from: the settings (development secrets filled in when embedded),
    the config, and the voice adapters' owner look-up."""

    settings: Settings
    config: Config
    owner_lookup: Callable[[str], str | None] | None

    def region(self, channel: str) -> str:
        # Local numbers written without a country code are read as the business's country.
        return self.config.channels[channel].region if channel in self.config.channels else "PL"


@dataclass(frozen=True)
class Registered:
    """One line of the gateway's channel registry: the adapter's name (metrics, logs, its route's
    endpoint), its class (what it declares: `webhook`, `simulation`) and how it is made."""

    name: str
    kind: type
    make: Callable[[Wiring], InboundAdapter]


def _voice(stage: str) -> Registered:
    return Registered("twilio_voice" if stage == "call" else f"twilio_voice_{stage}", TwilioVoiceAdapter,
                      lambda w: TwilioVoiceAdapter(w.settings.twilio_auth_token, stage=stage, config=w.config,
                                                   public_base_url=w.settings.public_base_url,
                                                   owner_lookup=w.owner_lookup, default_region=w.region("phone")))


#: The gateway's channel registry: one line per adapter. Each adapter declares its own route
#: (`webhook`), its OpenAPI part and its simulation, so this list is what the gateway serves and
#: documents and what `switchboard simulate` can send.
ADAPTERS: tuple[Registered, ...] = (
    Registered("telegram", TelegramAdapter, lambda w: TelegramAdapter(
        secret=w.settings.telegram_webhook_secret, bot_id=w.settings.telegram_bot_id)),
    Registered("twilio_sms", TwilioSmsAdapter, lambda w: TwilioSmsAdapter(
        w.settings.twilio_auth_token, default_region=w.region("sms"))),
    Registered("twilio_status", TwilioStatusAdapter, lambda w: TwilioStatusAdapter(w.settings.twilio_auth_token)),
    Registered("meta", MetaAdapter, lambda w: MetaAdapter(w.settings.meta_app_secret, w.settings.meta_verify_token)),
    # The five Twilio Voice endpoints. A call in hours rings the owner of the caller's open
    # conversation, read from the gateway's own table (`owners`); without it, or when the read
    # fails, the team's phone rings.
    *(_voice(stage) for stage in VOICE_STAGES),
    Registered("email", EmailRelayAdapter, lambda w: EmailRelayAdapter(
        w.settings.email_relay_secret, our_domains=[w.config.business.email_domain],
        authserv_ids=_authserv_ids(w.config))),
)


def build_adapters(settings: Settings, config: Config, *, embedded: bool,
                   owners: Callable[[], Engine] | None = None) -> dict[str, InboundAdapter]:
    """The registered adapters by name, made from the settings (`owners`: see owners_engine)."""
    if embedded:
        # `make run` needs no credentials: unset webhook secrets are the well-known development
        # secret, which `switchboard simulate` signs with. Services mode never does this.
        settings = replace(settings, twilio_auth_token=settings.twilio_auth_token or DEV_TELEGRAM_SECRET,
                           meta_app_secret=settings.meta_app_secret or DEV_TELEGRAM_SECRET,
                           meta_verify_token=settings.meta_verify_token or DEV_TELEGRAM_SECRET,
                           email_relay_secret=settings.email_relay_secret or DEV_TELEGRAM_SECRET,
                           telegram_webhook_secret=settings.telegram_webhook_secret or DEV_TELEGRAM_SECRET)
    wiring = Wiring(settings, config, owner_lookup(owners) if owners is not None else None)
    return {line.name: line.make(wiring) for line in ADAPTERS}


def _authserv_ids(config: Config) -> tuple[str, ...]:
    email = config.channels.get("email")
    return email.authserv_ids if email else ()


def owners_engine(settings: Settings, *, embedded: bool) -> Callable[[], Engine] | None:
    """The database holding the gateway's read model of whom a call rings (services/gateway/owners.py):
    in the embedded mode this process's own, in services mode the deployment's PostgreSQL (the
    default SQLite file would be an empty one of the gateway's own: then calls ring the team).
    Made at first use, so a gateway whose database is down still starts."""
    shared_db = embedded or not settings.database_url.startswith("sqlite")
    return lazy_engine(settings.database_url) if shared_db else None


def polled_message_intake(intake: Intake, config: Config) -> Callable[[Inbound], None]:
    """What a poller (IMAP, Telegram getUpdates) does with a message: exactly what a webhook does —
    the same derived message id, so a message seen twice, or both ways, is one message downstream."""

    def accept(msg: Inbound) -> None:
        if config.channel_mode(msg.channel) == "off":
            log.info("dropped a message on the switched-off %s channel", msg.channel)
            return
        intake.accept(Envelope.wrap(msg, message_id=derive_id(msg.channel, msg.external_id),
                                    correlation_id=str(uuid.uuid4()), occurred_at=msg.received_at))

    return accept


def build_telegram_poller(settings: Settings, config: Config, intake: Intake, *,
                          clock: Callable[[], datetime]) -> TelegramPoller | None:
    """Long polling when TELEGRAM_POLLING is set (local use: no public URL for a webhook)."""
    if not (settings.telegram_polling and settings.telegram_bot_token):
        return None
    return TelegramPoller(settings.telegram_bot_token, bot_id=settings.telegram_bot_id,
                          accept=polled_message_intake(intake, config), api_base=settings.telegram_api_base,
                          state_path=Path(settings.spool_dir) / "telegram-offset.sqlite", clock=clock)


def start_pollers(settings: Settings, config: Config, intake: Intake, stop: threading.Event, *,
                  clock: Callable[[], datetime]) -> list[threading.Thread]:
    """The pull-based ways in (IMAP, Telegram long polling), each in its own thread until `stop`."""
    threads = []
    imap = build_imap_poller(settings, config, intake, clock=clock)
    if imap is not None:
        threads.append(start_thread(lambda: imap.run(stop, settings.imap_poll_seconds), "imap-poller"))
    telegram = build_telegram_poller(settings, config, intake, clock=clock)
    if telegram is not None:
        threads.append(start_thread(lambda: telegram.run(stop), "telegram-poller"))
    return threads


def build_imap_poller(settings: Settings, config: Config, intake: Intake, *,
                      clock: Callable[[], datetime]) -> ImapPoller | None:
    """The IMAP poller when IMAP_HOST is set: each new mail goes through the same intake as a webhook,
    with the same derived message id, so a mail polled twice is one message downstream."""
    if not settings.imap_host:
        return None
    security = settings.imap_security or ("tls" if settings.imap_port in (None, 993) else "starttls")
    port = settings.imap_port or {"tls": 993, "starttls": 143, "none": 143}[security]

    return ImapPoller(settings.imap_host, port, settings.imap_user or "", settings.imap_password or "",
                      folder=settings.imap_folder, state_path=Path(settings.spool_dir) / "imap-state.sqlite",
                      accept=polled_message_intake(intake, config), our_domains=[config.business.email_domain],
                      authserv_ids=_authserv_ids(config),
                      clock=clock,
                      ssl=security == "tls", starttls=security == "starttls",
                      allow_insecure=settings.imap_allow_insecure)


def declare_topology(url: str) -> None:
    with connect(url) as conn:
        conn.ensure_connection(max_retries=max(3, len(conn.alt)))
        declare(conn)


def build(settings: Settings, config: Config, *, clock: Callable[[], datetime], embedded: bool = False,
          extra_checks: dict[str, Callable[[], None]] | None = None, spool_name: str = "gateway.sqlite",
          extra_blueprints: list[Blueprint] | None = None,
          owners: Callable[[], Engine] | None = None) -> tuple[Flask, Intake]:
    """`owners`: the database of the voice adapter's owner look-up (see owners_engine)."""
    # Webhooks answered on several threads share confirm waits (shared/bus/publisher.py).
    publisher = Publisher(settings.broker_url, declare_topology=True, shared_confirms=True)
    spool = Spool(Path(settings.spool_dir) / spool_name)
    intake = Intake(publisher, spool)
    deps = GatewayDeps(
        config=config, intake=intake, adapters=build_adapters(settings, config, embedded=embedded, owners=owners),
        public_base_url=settings.public_base_url, max_body_bytes=settings.max_body_bytes, clock=clock,
    )
    checks = {"broker": broker_check(settings.broker_url), "spool": spool.check, **(extra_checks or {})}
    # Extra blueprints: the embedded mode serves the router's agent API from this same app.
    surveys = survey_blueprint(secret=survey_secret(settings, embedded=embedded), intake=intake, config=config,
                               clock=clock)
    app = create_app(deps, [health_blueprint(checks, broker_url=settings.broker_url,
                                                   metrics=settings.metrics_port is None), surveys,
                            *(extra_blueprints or [])])
    return app, intake


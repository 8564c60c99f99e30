"""Wires the gateway: adapters from settings, the confirming publisher, the spool, the web app."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from flask import Flask

from services.gateway.app import GatewayDeps, create_app
from services.gateway.channels import InboundAdapter
from services.gateway.channels.meta import MetaAdapter
from services.gateway.channels.telegram import TelegramAdapter
from services.gateway.channels.twilio import TwilioSmsAdapter, TwilioStatusAdapter
from services.gateway.intake import Intake
from services.gateway.spool import Spool
from shared.bus.publisher import Publisher, connect
from shared.bus.topology import declare
from shared.config import Config
from shared.service import broker_check
from shared.settings import DEV_TELEGRAM_SECRET, Settings
from shared.web import health_blueprint


def build_adapters(settings: Settings, config: Config, *, embedded: bool) -> dict[str, InboundAdapter]:
    # Local numbers written without a country code are read as the business's country.
    region = config.channels["sms"].region if "sms" in config.channels else "PL"
    secret = settings.telegram_webhook_secret or (DEV_TELEGRAM_SECRET if embedded else None)
    return {
        "telegram": TelegramAdapter(secret=secret, bot_id=settings.telegram_bot_id),
        "twilio_sms": TwilioSmsAdapter(settings.twilio_auth_token, default_region=region),
        "twilio_status": TwilioStatusAdapter(settings.twilio_auth_token),
        "meta": MetaAdapter(settings.meta_app_secret, settings.meta_verify_token),
    }


def declare_topology(url: str) -> None:
    with connect(url) as conn:
        conn.ensure_connection(max_retries=3)
        declare(conn)


def build(settings: Settings, config: Config, *, clock: Callable[[], datetime], embedded: bool = False,
          extra_checks: dict[str, Callable[[], None]] | None = None, spool_name: str = "gateway.sqlite"
          ) -> tuple[Flask, Intake]:
    publisher = Publisher(settings.broker_url)
    spool = Spool(Path(settings.spool_dir) / spool_name)
    intake = Intake(publisher, spool)
    deps = GatewayDeps(
        config=config, intake=intake, adapters=build_adapters(settings, config, embedded=embedded),
        public_base_url=settings.public_base_url, max_body_bytes=settings.max_body_bytes, clock=clock,
    )
    checks = {"broker": broker_check(settings.broker_url), "spool": spool.check, **(extra_checks or {})}
    app = create_app(deps, [health_blueprint(checks)])
    return app, intake


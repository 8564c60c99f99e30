"""Settings from the environment: secrets, endpoints and the config file's path.

The YAML config (shared.config) says how the business works; this module says where things are and
holds the secrets, which never live in the YAML. Every name here is documented in the README and
is part of the contract with devops (SPEC §7), so rename nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.errors import ConfigError
from shared.redact import remember_settings

#: Used by the embedded mode when TELEGRAM_WEBHOOK_SECRET is unset, so that `make run` and
#: `switchboard simulate` work with no set-up. Services mode never falls back to it.
DEV_TELEGRAM_SECRET = "switchboard-dev-secret"

_SECRET_TOKEN = validate.Regexp(
    r"^[A-Za-z0-9_-]{1,256}$", error="must be 1-256 characters of A-Z, a-z, 0-9, _ and -"
)


@dataclass(frozen=True)
class Settings:
    config_path: str
    broker_url: str
    database_url: str
    public_base_url: str
    port: int | None
    max_body_bytes: int
    spool_dir: str
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = None
    twilio_api_base: str | None = None
    telegram_bot_token: str | None = None
    telegram_webhook_secret: str | None = None
    telegram_api_base: str | None = None
    meta_app_secret: str | None = None
    meta_verify_token: str | None = None
    meta_page_token: str | None = None
    whatsapp_token: str | None = None
    meta_graph_base: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_user: str | None = None
    imap_password: str | None = None
    email_relay_secret: str | None = None
    smtp_from: str | None = None
    # Unset: by the port (465 → tls, else starttls). SMTP_SECURITY is checked against these on load.
    smtp_security: Literal["starttls", "tls", "none"] | None = None
    imap_security: str | None = None  # tls | starttls | none; unset: by the port (993 → tls, else starttls)
    imap_folder: str = "INBOX"
    imap_poll_seconds: float = 30.0
    imap_allow_insecure: bool = False  # IMAP_SECURITY=none sends the password in clear: only when this says so
    telegram_polling: bool = False  # long polling instead of the webhook, for local use
    survey_secret: str | None = None  # signs e-mail survey links (shared/survey_links.py)
    # The reverse proxy in front of our HTTP servers, whose X-Forwarded-For/-Proto we believe
    # (waitress's trusted_proxy: an address, or "*" for whatever connects); None: nobody's.
    trusted_proxy: str | None = None
    trusted_proxy_count: int = 1  # proxies in the chain, counted from ours, whose X-Forwarded-* we believe
    secure_cookies: bool = False  # the inbox's cookies carry Secure whatever the request's scheme
    metrics_port: int | None = None  # /metrics on a port of its own (and not on the service's)
    agent_token_days: int | None = None  # `switchboard agents token` tokens expire after this many days
    # A batching consumer (the router's) handles up to this many messages as one unit of work, and
    # gathers a batch for at most this long (it closes sooner when no more are at hand).
    batch_size: int = 32
    batch_wait_ms: float = 10.0

    @property
    def telegram_bot_id(self) -> str:
        """The numeric id before the colon of a bot token; update_ids are unique per bot."""
        if self.telegram_bot_token and ":" in self.telegram_bot_token:
            return self.telegram_bot_token.split(":", 1)[0]
        return "sandbox"


def _opt_str(**kw) -> fields.String:
    return fields.String(load_default=None, allow_none=True, **kw)


class SettingsSchema(Schema):
    """Environment variable name → setting. Empty variables count as unset."""

    class Meta:
        unknown = EXCLUDE

    SWITCHBOARD_CONFIG = fields.String(load_default="deploy/switchboard.yaml", data_key="SWITCHBOARD_CONFIG")
    BROKER_URL = fields.String(load_default="memory://")
    DATABASE_URL = fields.String(load_default="sqlite:///var/switchboard.db")
    PUBLIC_BASE_URL = fields.Url(load_default="http://127.0.0.1:8080", require_tld=False)
    PORT = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 65535))
    SWITCHBOARD_MAX_BODY_BYTES = fields.Integer(load_default=3 * 1024 * 1024, validate=validate.Range(min=1024))
    SWITCHBOARD_SPOOL_DIR = fields.String(load_default="var/spool")
    TWILIO_ACCOUNT_SID = _opt_str()
    TWILIO_AUTH_TOKEN = _opt_str()
    TWILIO_API_BASE = _opt_str()
    TELEGRAM_BOT_TOKEN = _opt_str(validate=validate.Regexp(r"^\d+:[A-Za-z0-9_-]+$", error="is not a bot token"))
    TELEGRAM_WEBHOOK_SECRET = _opt_str(validate=_SECRET_TOKEN)
    TELEGRAM_API_BASE = _opt_str()
    META_APP_SECRET = _opt_str()
    META_VERIFY_TOKEN = _opt_str()
    META_PAGE_TOKEN = _opt_str()
    WHATSAPP_TOKEN = _opt_str()
    META_GRAPH_BASE = _opt_str()
    SMTP_HOST = _opt_str()
    SMTP_PORT = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 65535))
    SMTP_USER = _opt_str()
    SMTP_PASSWORD = _opt_str()
    IMAP_HOST = _opt_str()
    IMAP_PORT = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 65535))
    IMAP_USER = _opt_str()
    IMAP_PASSWORD = _opt_str()
    EMAIL_RELAY_SECRET = _opt_str()
    SMTP_FROM = _opt_str(validate=validate.Email(error="is not an e-mail address"))
    SMTP_SECURITY = _opt_str(validate=validate.OneOf(("starttls", "tls", "none")))
    IMAP_SECURITY = _opt_str(validate=validate.OneOf(("starttls", "tls", "none")))
    IMAP_FOLDER = fields.String(load_default="INBOX")
    IMAP_POLL_SECONDS = fields.Float(load_default=30.0, validate=validate.Range(min=0.1))
    IMAP_ALLOW_INSECURE = fields.Boolean(load_default=False)
    TELEGRAM_POLLING = fields.Boolean(load_default=False)
    TRUSTED_PROXY = _opt_str()
    TRUSTED_PROXY_COUNT = fields.Integer(load_default=1, validate=validate.Range(1, 10))
    SECURE_COOKIES = fields.Boolean(load_default=False)
    METRICS_PORT = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(0, 65535))
    AGENT_TOKEN_DAYS = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(1, 3650))
    SURVEY_SECRET = _opt_str(validate=validate.Length(min=16, error="must be at least 16 characters"))
    SWITCHBOARD_BATCH_SIZE = fields.Integer(load_default=32, validate=validate.Range(1, 1000))
    SWITCHBOARD_BATCH_WAIT_MS = fields.Float(load_default=10.0, validate=validate.Range(0, 1000))

    @validates_schema
    def _imap_in_clear(self, d: dict, **_: object) -> None:
        # As the SMTP sender refuses credentials without TLS: a login in clear gives the support
        # mailbox to anyone on the path.
        if d.get("IMAP_SECURITY") == "none" and not d.get("IMAP_ALLOW_INSECURE"):
            raise ValidationError("none sends the IMAP password in clear; use tls or starttls, or set "
                                  "IMAP_ALLOW_INSECURE=1 (a test server on this machine)", "IMAP_SECURITY")

    @post_load
    def _build(self, d: dict, **_: object) -> Settings:
        return Settings(
            config_path=d["SWITCHBOARD_CONFIG"],
            broker_url=d["BROKER_URL"],
            database_url=d["DATABASE_URL"],
            public_base_url=d["PUBLIC_BASE_URL"].rstrip("/"),
            port=d["PORT"],
            max_body_bytes=d["SWITCHBOARD_MAX_BODY_BYTES"],
            spool_dir=d["SWITCHBOARD_SPOOL_DIR"],
            twilio_account_sid=d["TWILIO_ACCOUNT_SID"],
            twilio_auth_token=d["TWILIO_AUTH_TOKEN"],
            twilio_api_base=d["TWILIO_API_BASE"],
            telegram_bot_token=d["TELEGRAM_BOT_TOKEN"],
            telegram_webhook_secret=d["TELEGRAM_WEBHOOK_SECRET"],
            telegram_api_base=d["TELEGRAM_API_BASE"],
            meta_app_secret=d["META_APP_SECRET"],
            meta_verify_token=d["META_VERIFY_TOKEN"],
            meta_page_token=d["META_PAGE_TOKEN"],
            whatsapp_token=d["WHATSAPP_TOKEN"],
            meta_graph_base=d["META_GRAPH_BASE"],
            smtp_host=d["SMTP_HOST"],
            smtp_port=d["SMTP_PORT"],
            smtp_user=d["SMTP_USER"],
            smtp_password=d["SMTP_PASSWORD"],
            imap_host=d["IMAP_HOST"],
            imap_port=d["IMAP_PORT"],
            imap_user=d["IMAP_USER"],
            imap_password=d["IMAP_PASSWORD"],
            email_relay_secret=d["EMAIL_RELAY_SECRET"],
            smtp_from=d["SMTP_FROM"],
            smtp_security=d["SMTP_SECURITY"],
            imap_security=d["IMAP_SECURITY"],
            imap_folder=d["IMAP_FOLDER"],
            imap_poll_seconds=d["IMAP_POLL_SECONDS"],
            imap_allow_insecure=d["IMAP_ALLOW_INSECURE"],
            telegram_polling=d["TELEGRAM_POLLING"],
            survey_secret=d["SURVEY_SECRET"],
            trusted_proxy=d["TRUSTED_PROXY"],
            trusted_proxy_count=d["TRUSTED_PROXY_COUNT"],
            secure_cookies=d["SECURE_COOKIES"],
            metrics_port=d["METRICS_PORT"],
            agent_token_days=d["AGENT_TOKEN_DAYS"],
            batch_size=d["SWITCHBOARD_BATCH_SIZE"],
            batch_wait_ms=d["SWITCHBOARD_BATCH_WAIT_MS"],
        )


def load_settings(environ: Mapping[str, str] | None = None, /, **overrides: str) -> Settings:
    """Read the settings from `environ` (os.environ by default); `overrides` win over it."""
    env = dict(os.environ if environ is None else environ)
    env.update(overrides)
    known = {f.data_key or name for name, f in SettingsSchema().fields.items()}
    data = {k: v for k, v in env.items() if k in known and v != ""}
    try:
        settings = SettingsSchema().load(data)
    except ValidationError as exc:
        from shared.config import format_errors

        raise ConfigError("environment", format_errors(exc.messages)) from exc
    # Every process reads its secrets here: from now on they are masked in stored errors and logs.
    remember_settings(settings)
    return settings

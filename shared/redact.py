"""Secrets out of every error we store or log: one function (`mask_secrets`) and one logging filter.

Provider libraries put credentials into their error texts (python-telegram-bot's InvalidToken says
"The token `123:ABC…` was rejected", a failed HTTP call names a URL with the bot token in its path,
a database driver repeats `postgresql://user:password@host`). Those texts end up in
`outbox.last_error`, in dead-letter headers and in logs, which more people read than hold the
secrets. Two nets:

* the values of the configured secrets (`remember(settings)` at start-up: every variable of
  shared.settings that holds a credential), replaced wherever they appear;
* shapes that are secrets whatever their value: a Telegram bot token, the password in a URL's
  user-info, `access_token=`/`password=`-style query parameters, an `Authorization` value.

Every pattern is bounded (no unbounded quantifier next to an overlapping one), so masking a long
text is linear.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

MASK = "***"

# A bot token (also right after "/bot" in an API URL): the bot's numeric id, a colon, 30+ characters of base64url (Telegram's are 35).
_BOT_TOKEN = re.compile(r"(?<!\d)(\d{3,20}):[A-Za-z0-9_-]{30,100}(?![A-Za-z0-9_-])")
# scheme://user:password@host — the password goes, the user and the host stay (they help debugging).
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/@]{0,256}:)[^\s/@]{1,256}@")
# ?access_token=…&  password=…  api_key: … (Meta's Graph API takes the token as a query parameter).
_NAMED = re.compile(
    r"(?i)\b(access_token|auth_token|api_key|apikey|client_secret|password|passwd|secret|token)"
    r"(\s{0,3}[=:]\s{0,3})([^\s&\"',;]{1,512})")
# Authorization: Bearer …, Basic … (a header echoed into an error).
_AUTH_HEADER = re.compile(r"(?i)\b(bearer|basic)\s{1,3}[A-Za-z0-9._~+/=-]{8,1024}")

_known: set[str] = set()
_lock = threading.Lock()

# Names of shared.settings.Settings fields that hold credentials.
SECRET_SETTINGS = ("twilio_auth_token", "telegram_bot_token", "telegram_webhook_secret", "meta_app_secret",
                   "meta_verify_token", "meta_page_token", "whatsapp_token", "smtp_password", "imap_password",
                   "email_relay_secret", "survey_secret")


def remember(values: Iterable[str | None]) -> None:
    """Add configured secret values to those masked everywhere (a value under 6 characters would mask
    ordinary words, and is no secret worth the name anyway)."""
    with _lock:
        _known.update(v for v in values if v and len(v) >= 6)


def remember_settings(settings: object) -> None:
    remember(getattr(settings, name, None) for name in SECRET_SETTINGS)
    # The passwords inside the broker's and the database's URLs are covered by _URL_PASSWORD.


def mask_secrets(text: str, known: Iterable[str] | None = None) -> str:
    """`text` with every secret replaced by ***: the remembered values (or `known`) and secret shapes."""
    if not text:
        return text
    values = sorted(_known if known is None else set(known), key=len, reverse=True)  # longest first
    for value in values:
        if value in text:
            text = text.replace(value, MASK)
    text = _BOT_TOKEN.sub(lambda m: f"{m.group(1)}:{MASK}", text)
    text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    text = _NAMED.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
    return _AUTH_HEADER.sub(lambda m: f"{m.group(1)} {MASK}", text)


class SecretsFilter(logging.Filter):
    """Masks secrets in a record's message, arguments, extra fields and traceback before any handler
    formats it: installed on the log handler by shared.log.setup_logging."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string is logged as it is, never dropped
            message = str(record.msg)
        record.msg, record.args = mask_secrets(message), None
        for key, value in list(record.__dict__.items()):
            if key not in ("msg", "args") and not key.startswith("_") and isinstance(value, str) \
                    and key not in _STANDARD:
                setattr(record, key, mask_secrets(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
            record.exc_info = None  # formatters use exc_text, now masked
        return True


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}

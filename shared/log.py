"""Structured JSON logs that carry the correlation id, with customers' contact data masked.

The correlation id lives in a context variable: the gateway sets it per webhook, consumers set it
per message from the envelope, so every line on the path webhook → ack can be found by one id.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

from shared.redact import SecretsFilter

correlation_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("correlation_id", default=None)

# Bounded runs (a local part is at most 64 characters, a domain 253, a written phone number about 30):
# with an unbounded run every start inside a long run of such characters would rescan it (quadratic).
_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}@([A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63})\b")
# A phone number (the second half). A message, conversation or correlation id is what an operator
# traces a message by: its digit groups ("-8912-4513-") look like a phone number, so a UUID (the
# first half) is matched first and kept whole.
_UUID_OR_PHONE = re.compile(r"(?<![\w-])[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}(?![\w-])"
                            r"|(?<![\w/])(\+?\d[\d \-().]{6,30}\d)(?![\w/])")


def mask(text: str) -> str:
    """Hide all but the edges of phone numbers and e-mail addresses (logs are not a contact list)."""
    text = _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)

    def phone(m: re.Match[str]) -> str:
        if m.group(1) is None:  # a UUID
            return m.group(0)
        digits = re.sub(r"\D", "", m.group(1))
        if len(digits) < 7 or _is_ipv4(m.group(1)):
            # A client's IPv4 address (the login throttle logs it) is what an operator needs whole.
            return m.group(1)
        return ("+" if m.group(1).startswith("+") else "") + digits[:2] + "*" * (len(digits) - 4) + digits[-2:]

    return _UUID_OR_PHONE.sub(phone, text)


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": mask(record.getMessage()),
        }
        cid = getattr(record, "correlation_id", None) or correlation_id.get()
        if cid:
            entry["correlation_id"] = cid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = mask(value) if isinstance(value, str) else value
        exc = self.formatException(record.exc_info) if record.exc_info else record.exc_text
        if exc:
            entry["exc"] = mask(exc)
        return json.dumps(entry, ensure_ascii=False, default=str)


def setup_logging(service: str, level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(SecretsFilter())  # credentials out of every line, whoever logged it
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries are chatty at INFO (every HTTP call, every AMQP frame); their warnings still show.
    for noisy in ("httpx", "httpcore", "telegram", "amqp", "kombu", "waitress", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextlib.contextmanager
def correlated(cid: str | None) -> Iterator[None]:
    token = correlation_id.set(cid)
    try:
        yield
    finally:
        correlation_id.reset(token)

"""How a survey answer finds its way back: button data and signed e-mail links.

Shared by the notifier (which puts them in the survey) and the gateway (which reads them back).
- Chat buttons and quick replies carry "sv:<token>:<score>" (Telegram allows 1-64 bytes of
  callback_data); the token is the survey's own random handle, so the data needs no signature:
  guessing a token is as hard as guessing a password.
- E-mail links carry a token signed with SURVEY_SECRET (itsdangerous URLSafeTimedSerializer), so
  its page needs no login, and a tampered or expired link records nothing.
- A link without a score but with the survey's kind opens the page of its scale: the
  way back from a WhatsApp NPS template, whose one URL button cannot carry eleven answers.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from shared.settings import DEV_TELEGRAM_SECRET, Settings

#: How long an e-mail survey link works: long enough for a customer back from holiday.
LINK_MAX_AGE = timedelta(days=30)
_SALT = "switchboard.survey-link"
_DATA = re.compile(r"^sv:([A-Za-z0-9_-]{8,40}):(\d{1,2})$")
#: The answers of each survey kind, for the notifier (what it offers) and the gateway (what a
#: score page lists).
SCALES: dict[str, range] = {"csat": range(1, 6), "nps": range(0, 11)}


def in_scale(kind: str, score: int) -> bool:
    """Whether a score answers a survey of this kind (the notifier records it, the router reads an SMS digit)."""
    return score in SCALES.get(kind, ())


def callback_data(token: str, score: int) -> str:
    return f"sv:{token}:{score}"


def parse_callback_data(data: Any) -> tuple[str, int] | None:
    """(token, score) from a button's data, or None when it is not a survey answer."""
    if not isinstance(data, str):
        return None
    match = _DATA.match(data)
    return (match.group(1), int(match.group(2))) if match else None


class LinkInvalid(Exception):
    """The link was altered, or signed with another secret: record nothing."""


class LinkExpired(Exception):
    """A genuine link, but older than LINK_MAX_AGE: record nothing."""

    def __init__(self, message: str, language: str | None = None):
        super().__init__(message)
        self.language = language


@dataclass(frozen=True)
class LinkAction:
    token: str
    language: str
    score: int | None = None
    unsubscribe: bool = False
    kind: str | None = None  # links signed before kinds were carried have none
    signed_at: datetime | None = None


@dataclass(frozen=True)
class SurveyLinks:
    """What the notifier needs to put links in an e-mail survey."""

    secret: str
    base_url: str  # PUBLIC_BASE_URL: the gateway serves /survey/<signed>

    def url(self, token: str, language: str, *, score: int | None = None, unsubscribe: bool = False,
            kind: str | None = None, now: datetime | None = None) -> str:
        signed = sign_link(self.secret, token=token, language=language, score=score, unsubscribe=unsubscribe,
                           kind=kind, now=now)
        return f"{self.base_url.rstrip('/')}/survey/{signed}"


class _ClockedSigner(TimestampSigner):
    # itsdangerous reads time.time(); time is a parameter here, so expiry is testable without sleeping.
    def __init__(self, *args: Any, clock: Callable[[], datetime] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock().timestamp()) if self._clock else super().get_timestamp()


def _serializer(secret: str, now: datetime | None) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_SALT, signer=_ClockedSigner,
                                  signer_kwargs={"clock": (lambda: now) if now else None})


def sign_link(secret: str, *, token: str, language: str, score: int | None = None, unsubscribe: bool = False,
              kind: str | None = None, now: datetime | None = None) -> str:
    """`kind` ("csat", "nps") is optional, so links signed without it stay valid; with no score it
    makes the link the survey's score page."""
    payload: dict[str, Any] = {"t": token, "l": language}
    if kind is not None:
        if kind not in SCALES:
            raise ValueError(f"survey kind must be one of {sorted(SCALES)}, not {kind!r}")
        payload["k"] = kind
    if unsubscribe:
        payload["u"] = 1
    elif score is not None:
        payload["s"] = score
    return _serializer(secret, now).dumps(payload)


def read_link(secret: str, signed: str, *, now: datetime, max_age: timedelta = LINK_MAX_AGE) -> LinkAction:
    serializer = _serializer(secret, now)
    try:
        payload, signed_at = serializer.loads(signed, max_age=int(max_age.total_seconds()), return_timestamp=True)
    except SignatureExpired as exc:
        language = None
        try:  # the payload of an expired link is still signed: its language is trustworthy
            language = serializer.load_payload(exc.payload).get("l") if exc.payload else None
        except Exception:  # noqa: BLE001 - only a nicer page depends on it
            language = None
        raise LinkExpired("the survey link has expired", language if isinstance(language, str) else None) from exc
    except BadSignature as exc:
        raise LinkInvalid("the survey link is not valid") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("t"), str):
        raise LinkInvalid("the survey link carries no survey")
    score = payload.get("s")
    if score is not None and (not isinstance(score, int) or isinstance(score, bool) or not 0 <= score <= 10):
        raise LinkInvalid("the survey link carries no valid rating")
    kind = payload.get("k")
    if kind is not None and (not isinstance(kind, str) or kind not in SCALES or (score is not None and score not in SCALES[kind])):
        raise LinkInvalid("the survey link carries no valid survey kind or rating")
    given = payload.get("l")
    language = given if isinstance(given, str) else "en"
    return LinkAction(token=payload["t"], language=language, score=score, unsubscribe=payload.get("u") == 1,
                      kind=kind, signed_at=signed_at)


def survey_secret(settings: Settings, *, embedded: bool) -> str | None:
    """SURVEY_SECRET; in the embedded mode only, one derived from the other secrets, so `make run`
    works with no set-up. Services mode without it sends no e-mail links and accepts none."""
    if settings.survey_secret:
        return settings.survey_secret
    if not embedded:
        return None
    material = "\x1f".join(s or "" for s in (
        settings.telegram_webhook_secret or DEV_TELEGRAM_SECRET, settings.twilio_auth_token,
        settings.meta_app_secret, settings.email_relay_secret))
    return hashlib.sha256(("switchboard-survey\x1f" + material).encode()).hexdigest()

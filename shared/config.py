"""The YAML config: how the business works (hours, teams, agents, categories, channels, survey).

Validated by marshmallow at start; every problem is reported as `key.path: what is wrong`
(`agents[2].hours.mon: "9-17" is not HH:MM-HH:MM`) and the program exits with code 2. The schemas of
the file sit together at the end of this module, a calendar's among them (shared.calendar is the
calendar itself, without its YAML form). Secrets are never here: they come from the environment
(shared.settings).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from shared.calendar import (
    MIDNIGHT,
    Calendar,
    Closure,
    Interval,
    holiday_country,
    holiday_subdivision,
    parse_hours,
    parse_time,
    parse_zone,
)
from shared.contracts import CHANNELS
from shared.errors import ConfigError
from shared.vocabulary import CATEGORIES, LANGUAGES, WEEKDAYS

# The vocabularies live in shared.vocabulary; these names are the same objects, kept for importers.
DEFAULT_CATEGORIES = CATEGORIES
SUPPORTED_LANGUAGES = LANGUAGES
CHANNEL_MODES = ("active", "redirect", "off")

# --- the objects the services use -------------------------------------------------------------


@dataclass(frozen=True)
class Business:
    name: str
    timezone: str
    languages: tuple[str, ...]
    default_language: str
    urgent_contact: str | None
    email_domain: str
    calendar: str


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    lead: str | None
    calendar: str
    phone: str | None


@dataclass(frozen=True)
class AgentNotify:
    channel: str  # telegram | email
    address: str


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    team: str
    role: str
    languages: tuple[str, ...]
    skills: tuple[str, ...]
    capacity: int
    status: str
    notify: AgentNotify | None
    phone: str | None
    shift: Calendar
    #: The inbox shows this agent customers' numbers and addresses masked (a temp, a trainee).
    mask_contacts: bool = False


@dataclass(frozen=True)
class SelfHelpLink:
    title: str
    url: str


@dataclass(frozen=True)
class Category:
    id: str
    target: timedelta
    targets_by_channel: dict[str, timedelta]
    self_help: tuple[SelfHelpLink, ...]
    keywords: dict[str, tuple[str, ...]]

    def target_for(self, channel: str) -> timedelta:
        return self.targets_by_channel.get(channel, self.target)


@dataclass(frozen=True)
class Channel:
    mode: str
    redirect_to: tuple[str, ...] = ()
    from_number: str | None = None  # the business's sending number (SMS, phone), E.164
    region: str = "PL"  # how numbers without a country code are read
    phone_number_id: str | None = None  # WhatsApp Cloud API: the business number's id to send from
    # WhatsApp: the approved template (one body parameter: the text) that carries an agent's reply
    # once the customer's 24-hour window has closed; without one such a reply fails, recorded.
    reply_template: str | None = None
    reply_template_language: str = "en"
    reply_template_languages: tuple[str, ...] = ()  # the other languages it is approved in
    # WhatsApp: the approved template that carries a CSAT survey once the 24-hour window has closed
    # (no body variables; five quick-reply buttons, 1 to 5, whose payloads are given at send time).
    # Without one such a survey is skipped, with the reason recorded.
    survey_template: WhatsAppTemplate | None = None
    # WhatsApp: the approved template that carries an NPS survey once the window has closed (no body
    # variables; one URL button PUBLIC_BASE_URL/survey/{{1}}, whose suffix is a signed link to the
    # gateway's page of the eleven scores: eleven quick replies would not fit a template).
    nps_template: WhatsAppTemplate | None = None
    # E-mail: the authserv-ids of our own mail servers (the relay's MTA, the IMAP mailbox's MTA).
    # Only their Authentication-Results fields vouch for a sender (services/gateway/channels/mail_auth.py).
    authserv_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class WhatsAppTemplate:
    name: str
    language: str = "en"  # the template's fallback language
    languages: tuple[str, ...] = ()  # the other languages it is approved in

    def language_for(self, customer_language: str | None) -> str:
        return template_language(customer_language, self.language, self.languages)


def template_language(customer_language: str | None, fallback: str, others: tuple[str, ...] = ()) -> str:
    """The language to send an approved WhatsApp template in: the customer's own when the template
    is approved in it ("pl"; "en" picks "en_US"), else the fallback. One template name carries all
    its translations in Meta, so a Polish customer must not get the English text when a Polish one
    was approved."""
    if not customer_language:
        return fallback
    approved = (fallback, *others)
    if customer_language in approved:
        return customer_language
    base = customer_language.split("_")[0]
    return next((code for code in approved if code.split("_")[0] == base), fallback)


@dataclass(frozen=True)
class Survey:
    delay: timedelta
    cooldown: timedelta
    nps_sample: float


@dataclass(frozen=True)
class Limits:
    ack_daily_cap: int
    reopen_window: timedelta
    # Flood control (services/router/flood.py): messages in a row from one sender that each notify
    # the owner, then one more per `notice_refill`.
    notice_burst: int = 5
    notice_refill: timedelta = timedelta(minutes=2)


@dataclass(frozen=True)
class Config:
    business: Business
    calendars: dict[str, Calendar]
    teams: dict[str, Team]
    agents: dict[str, Agent]
    categories: dict[str, Category]
    channels: dict[str, Channel]
    templates: dict[str, str]
    survey: Survey
    limits: Limits
    source: str = field(default="", compare=False)
    # language → macro id → entry (services/router/macros.py): overrides and additions to the starter
    # set; an entry of null removes a starter macro in that language.
    macros: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def business_calendar(self) -> Calendar:
        return self.calendars[self.business.calendar]

    def channel_mode(self, channel: str) -> str:
        ch = self.channels.get(channel)
        return ch.mode if ch else "off"


# --- the YAML forms: a calendar's and the config file's, side by side -------------------------
#
# Every schema of the file is here, each once: a calendar's (calendars.<name>, and an agent's own
# `hours` through the one WeeklyHoursSchema), then the config's sections, which use it. The rules
# they check (times of day, zones, holiday countries) are shared.calendar's parsers.


class _Strict(Schema):
    class Meta:
        unknown = RAISE


_ID = validate.Regexp(r"^[a-z0-9_-]+$", error="must be lower-case a-z, 0-9, _ or -")
_LANGUAGE = validate.OneOf(SUPPORTED_LANGUAGES)
_TEMPLATE_NAME = validate.Regexp(r"^[a-z0-9_]{1,512}$", error="is not a WhatsApp template name")
_TEMPLATE_LANGUAGE = validate.Regexp(r"^[a-z]{2,3}(_[A-Z]{2})?$", error="is not a template language code like en or pt_BR")


# Each unit takes the spaces after it, so no two optional space runs meet (that would be quadratic).
_DURATION = re.compile(r"^\s*(?:(\d+)\s*d\s*)?(?:(\d+)\s*h\s*)?(?:(\d+)\s*m\s*)?(?:(\d+)\s*s\s*)?$")


class Duration(fields.Field):
    """`4h`, `30m`, `1h30m`, `7d`: the way people write targets and delays."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> timedelta:
        if isinstance(value, int) and not isinstance(value, bool):
            return timedelta(seconds=value)
        m = _DURATION.match(str(value)) if isinstance(value, str) else None
        if not m or not any(m.groups()):
            raise ValidationError(f'"{value}" is not a duration like 4h, 30m, 1h30m or 7d')
        d, h, mi, s = (int(g or 0) for g in m.groups())
        return timedelta(days=d, hours=h, minutes=mi, seconds=s)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str:
        return f"{int(value.total_seconds())}s"


# a calendar


class _Hours(fields.Field):
    """A day's intervals: a list of "HH:MM-HH:MM" strings or one comma-separated string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Interval]:
        try:
            return parse_hours(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class _TimeOfDay(fields.Field):
    def __init__(self, *, allow_24: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_24 = allow_24

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> time:
        try:
            return parse_time(value, allow_24=self.allow_24)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class _Day(fields.Field):
    """A date as PyYAML gives it (a date object) or as an ISO string."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> date:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value.strip())
            except ValueError:
                pass
        raise ValidationError(f'"{value}" is not a date (YYYY-MM-DD)')


class _Timezone(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        try:
            parse_zone(value)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc
        return value


class WeeklyHoursSchema(_Strict):
    """Weekday keys mon..sun; a missing day is closed. The one hours table of the YAML: a calendar's
    `hours` and an agent's own `hours` in the config both load through it."""

    error_messages = {"unknown": f"is not a weekday key (use {', '.join(WEEKDAYS)})"}

    mon = _Hours(load_default=list)
    tue = _Hours(load_default=list)
    wed = _Hours(load_default=list)
    thu = _Hours(load_default=list)
    fri = _Hours(load_default=list)
    sat = _Hours(load_default=list)
    sun = _Hours(load_default=list)


class HolidaysSchema(_Strict):
    country = fields.String(required=True)
    subdivision = fields.String(load_default=None, allow_none=True)

    @validates_schema
    def _known(self, data: dict[str, Any], **_: Any) -> None:
        try:
            country = holiday_country(data.get("country"))
        except ValueError as exc:
            raise ValidationError(str(exc), "country") from exc
        if data.get("subdivision") is not None:
            try:
                holiday_subdivision(country, data["subdivision"])
            except ValueError as exc:
                raise ValidationError(str(exc), "subdivision") from exc


class ClosureSchema(_Strict):
    date = _Day(required=True)
    start = _TimeOfDay(data_key="from", load_default=None)
    end = _TimeOfDay(data_key="until", allow_24=True, load_default=None)

    @validates_schema
    def _ends_after_start(self, data: dict[str, Any], **_: Any) -> None:
        start, end = data.get("start"), data.get("end")
        if start is not None and end is not None and end != MIDNIGHT and end <= start:
            raise ValidationError(f'"{end:%H:%M}" is not after "from" ({start:%H:%M})', "until")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Closure:
        return Closure(data["date"], data["start"], data["end"])


class OpeningSchema(_Strict):
    date = _Day(required=True)
    hours = _Hours(required=True)


class CalendarSchema(_Strict):
    """Loads a calendar's YAML/dict form into a `Calendar`:

        timezone: Europe/Warsaw
        hours: {mon: ["09:00-17:00"], tue: "09:00-12:00, 13:00-17:00", fri: ["22:00-02:00"]}
        holidays: {country: PL, subdivision: null}   # optional
        closures: [{date: 2026-12-24, from: "14:00"}, {date: 2026-12-31}]   # optional
        openings: [{date: 2026-12-20, hours: ["10:00-14:00"]}]              # optional
    """

    timezone = _Timezone(required=True)
    hours = fields.Nested(WeeklyHoursSchema, required=True)
    holidays = fields.Nested(HolidaysSchema, load_default=None, allow_none=True)
    closures = fields.List(fields.Nested(ClosureSchema), load_default=list)
    openings = fields.List(fields.Nested(OpeningSchema), load_default=list)

    @validates_schema
    def _one_special_opening_per_date(self, data: dict[str, Any], **_: Any) -> None:
        seen: dict[date, int] = {}
        errors: dict[int, dict[str, list[str]]] = {}
        for i, opening in enumerate(data.get("openings") or []):
            if opening["date"] in seen:
                errors[i] = {"date": [f'"{opening["date"]}" already has special hours at openings[{seen[opening["date"]]}]']}
            seen.setdefault(opening["date"], i)
        if errors:
            raise ValidationError({"openings": errors})

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Calendar:
        holidays = data["holidays"] or {}
        try:
            return Calendar(
                data["timezone"], data["hours"],
                country=holidays.get("country"), subdivision=holidays.get("subdivision"),
                closures=data["closures"], openings={o["date"]: o["hours"] for o in data["openings"]},
            )
        except (TypeError, ValueError) as exc:  # the fields above should have caught it already
            raise ValidationError(str(exc)) from exc


# the config file


class BusinessSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1))
    timezone = fields.String(load_default="UTC")
    languages = fields.List(fields.String(validate=_LANGUAGE), load_default=["en"],
                            validate=validate.Length(min=1))
    default_language = fields.String(load_default="en")
    urgent_contact = fields.String(load_default=None, allow_none=True)
    email_domain = fields.String(load_default="switchboard.local")
    calendar = fields.String(load_default="business")

    @validates_schema
    def _default_in_languages(self, data: dict, **_: Any) -> None:
        if data.get("default_language") not in data.get("languages", []):
            raise ValidationError(
                f'"{data.get("default_language")}" is not one of the business languages', "default_language"
            )

    @post_load
    def _make(self, d: dict, **_: Any) -> Business:
        d["languages"] = tuple(d["languages"])
        return Business(**d)


class TeamSchema(_Strict):
    id = fields.String(required=True, validate=_ID)
    name = fields.String(load_default=None)
    lead = fields.String(load_default=None, allow_none=True)
    calendar = fields.String(load_default="business")
    phone = fields.String(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> Team:
        d["name"] = d["name"] or d["id"]
        return Team(**d)


class NotifySchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(("telegram", "email")))
    address = fields.String(required=True, validate=validate.Length(min=1))

    @post_load
    def _make(self, d: dict, **_: Any) -> AgentNotify:
        return AgentNotify(**d)


class AgentSchema(_Strict):
    id = fields.String(required=True, validate=_ID)
    name = fields.String(required=True)
    team = fields.String(required=True)
    role = fields.String(load_default="agent", validate=validate.OneOf(("agent", "lead")))
    languages = fields.List(fields.String(validate=_LANGUAGE), load_default=["en"])
    skills = fields.List(fields.String(), load_default=None, allow_none=True)
    capacity = fields.Integer(load_default=10, validate=validate.Range(min=1))
    status = fields.String(load_default="active", validate=validate.OneOf(("active", "off", "leave")))
    notify = fields.Nested(NotifySchema, load_default=None, allow_none=True)
    phone = fields.String(load_default=None, allow_none=True)
    timezone = fields.String(load_default=None, allow_none=True)
    hours = fields.Nested(WeeklyHoursSchema, required=True)
    mask_contacts = fields.Boolean(load_default=False)


class SelfHelpSchema(_Strict):
    title = fields.String(required=True)
    url = fields.Url(required=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> SelfHelpLink:
        return SelfHelpLink(**d)


class CategorySchema(_Strict):
    id = fields.String(required=True, validate=_ID)
    target = Duration(load_default=timedelta(hours=4))
    targets_by_channel = fields.Dict(keys=fields.String(validate=validate.OneOf(CHANNELS)), values=Duration(),
                                     load_default=dict)
    self_help = fields.List(fields.Nested(SelfHelpSchema), load_default=list)
    keywords = fields.Dict(keys=fields.String(validate=_LANGUAGE),
                           values=fields.List(fields.String()), load_default=dict)

    @post_load
    def _make(self, d: dict, **_: Any) -> Category:
        return Category(
            id=d["id"], target=d["target"], targets_by_channel=d["targets_by_channel"],
            self_help=tuple(d["self_help"]), keywords={k: tuple(v) for k, v in d["keywords"].items()},
        )


class WhatsAppTemplateSchema(_Strict):
    name = fields.String(required=True, validate=_TEMPLATE_NAME)
    language = fields.String(load_default="en", validate=_TEMPLATE_LANGUAGE)
    languages = fields.List(fields.String(validate=_TEMPLATE_LANGUAGE), load_default=list)

    @post_load
    def _make(self, d: dict, **_: Any) -> WhatsAppTemplate:
        return WhatsAppTemplate(name=d["name"], language=d["language"], languages=tuple(d["languages"]))


class ChannelSchema(_Strict):
    mode = fields.String(load_default="active", validate=validate.OneOf(CHANNEL_MODES))
    redirect_to = fields.List(fields.String(), load_default=list)
    from_number = fields.String(load_default=None, allow_none=True,
                                validate=validate.Regexp(r"^\+[1-9]\d{6,14}$", error="is not an E.164 number like +48221002030"))
    phone_number_id = fields.String(load_default=None, allow_none=True,
                                    validate=validate.Regexp(r"^\d{5,20}$", error="is not a WhatsApp phone number id"))
    region = fields.String(load_default="PL", validate=validate.Regexp(r"^[A-Z]{2}$", error="is not a two-letter country code"))
    reply_template = fields.String(load_default=None, allow_none=True, validate=_TEMPLATE_NAME)
    reply_template_language = fields.String(load_default="en", validate=_TEMPLATE_LANGUAGE)
    reply_template_languages = fields.List(fields.String(validate=_TEMPLATE_LANGUAGE), load_default=list)
    survey_template = fields.Nested(WhatsAppTemplateSchema, load_default=None, allow_none=True)
    nps_template = fields.Nested(WhatsAppTemplateSchema, load_default=None, allow_none=True)
    authserv_ids = fields.List(fields.String(validate=validate.Regexp(
        r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$", error="is not an authserv-id (a host name like mx.example.com)")),
        load_default=list)

    @validates_schema
    def _redirect_needs_target(self, data: dict, **_: Any) -> None:
        if data.get("mode") == "redirect" and not data.get("redirect_to"):
            raise ValidationError("a channel in redirect mode needs redirect_to", "redirect_to")

    @post_load
    def _make(self, d: dict, **_: Any) -> Channel:
        return Channel(mode=d["mode"], redirect_to=tuple(d["redirect_to"]), from_number=d["from_number"],
                       region=d["region"], phone_number_id=d["phone_number_id"],
                       reply_template=d["reply_template"], reply_template_language=d["reply_template_language"],
                       reply_template_languages=tuple(d["reply_template_languages"]),
                       survey_template=d["survey_template"], nps_template=d["nps_template"],
                       authserv_ids=tuple(d["authserv_ids"]))


class SurveySchema(_Strict):
    delay = Duration(load_default=timedelta(hours=1))
    cooldown = Duration(load_default=timedelta(days=30))
    nps_sample = fields.Float(load_default=0.2, validate=validate.Range(0.0, 1.0))

    @post_load
    def _make(self, d: dict, **_: Any) -> Survey:
        return Survey(**d)


class LimitsSchema(_Strict):
    ack_daily_cap = fields.Integer(load_default=3, validate=validate.Range(min=1))
    reopen_window = Duration(load_default=timedelta(days=7))
    notice_burst = fields.Integer(load_default=5, validate=validate.Range(min=1))
    notice_refill = Duration(load_default=timedelta(minutes=2))

    @post_load
    def _make(self, d: dict, **_: Any) -> Limits:
        return Limits(**d)


class ConfigSchema(_Strict):
    business = fields.Nested(BusinessSchema, required=True)
    calendars = fields.Dict(keys=fields.String(), values=fields.Nested(CalendarSchema), required=True)
    teams = fields.List(fields.Nested(TeamSchema), required=True, validate=validate.Length(min=1))
    agents = fields.List(fields.Nested(AgentSchema), required=True, validate=validate.Length(min=1))
    categories = fields.List(fields.Nested(CategorySchema), load_default=None, allow_none=True)
    channels = fields.Dict(keys=fields.String(validate=validate.OneOf(CHANNELS)), values=fields.Nested(ChannelSchema),
                           load_default=dict)
    templates = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    # Shape checked here; blocks, categories and rendering by the router's `check_config_macros`
    # (services/router/macros.py), which whoever loads the config hands to the loader.
    macros = fields.Dict(keys=fields.String(), values=fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True)),
                         load_default=dict)
    survey = fields.Nested(SurveySchema, load_default=lambda: SurveySchema().load({}))
    limits = fields.Nested(LimitsSchema, load_default=lambda: LimitsSchema().load({}))

    @validates_schema
    def _references(self, data: dict, **_: Any) -> None:
        """Names that point elsewhere in the file must exist; report each where it is written."""
        errors: dict[str, Any] = {}

        def add(path: tuple, message: str) -> None:
            node = errors
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node.setdefault(path[-1], []).append(message)

        calendars = data.get("calendars", {})
        business = data.get("business")
        if business and business.calendar not in calendars:
            add(("business", "calendar"), f'"{business.calendar}" is not a calendar defined under calendars')
        teams = data.get("teams", [])
        team_ids = [t.id for t in teams]
        agents = data.get("agents", [])
        agent_ids = [a["id"] for a in agents]
        categories = data.get("categories") or []
        category_ids = [c.id for c in categories] or list(DEFAULT_CATEGORIES)
        for i, t in enumerate(teams):
            if team_ids.count(t.id) > 1:
                add(("teams", i, "id"), f'"{t.id}" is used by more than one team')
            if t.calendar not in calendars:
                add(("teams", i, "calendar"), f'"{t.calendar}" is not a calendar defined under calendars')
            if t.lead is not None and t.lead not in agent_ids:
                add(("teams", i, "lead"), f'"{t.lead}" is not an agent id')
        for i, a in enumerate(agents):
            if agent_ids.count(a["id"]) > 1:
                add(("agents", i, "id"), f'"{a["id"]}" is used by more than one agent')
            if a["team"] not in team_ids:
                add(("agents", i, "team"), f'"{a["team"]}" is not a team id')
            for skill in a.get("skills") or []:
                if skill not in category_ids:
                    add(("agents", i, "skills"), f'"{skill}" is not a category')
            if a.get("timezone"):
                try:
                    parse_zone(a["timezone"])
                except ValueError as exc:
                    add(("agents", i, "timezone"), str(exc))
        for name, channel in (data.get("channels") or {}).items():
            for key in ("survey_template", "nps_template"):
                if name != "whatsapp" and getattr(channel, key) is not None:
                    add(("channels", name, key), "only the whatsapp channel sends templates")
        if "other" not in category_ids:
            add(("categories",), 'the category "other" is required: it is where low-confidence messages go')
        if errors:
            raise ValidationError(errors)

    @post_load
    def _make(self, d: dict, **_: Any) -> Config:
        business: Business = d["business"]
        calendars: dict[str, Calendar] = d["calendars"]
        categories = d["categories"] or [CategorySchema().load({"id": c}) for c in DEFAULT_CATEGORIES]
        teams = {t.id: t for t in d["teams"]}
        agents = {}
        for a in d["agents"]:
            team_calendar = calendars[teams[a["team"]].calendar]
            # An agent's shift keeps the team calendar's holidays, closures and special openings, with the
            # agent's own weekly hours.
            shift = team_calendar.with_weekly_hours(a["hours"], timezone=a["timezone"] or team_calendar.timezone)
            agents[a["id"]] = Agent(
                id=a["id"], name=a["name"], team=a["team"], role=a["role"], languages=tuple(a["languages"]),
                skills=tuple(a["skills"] if a["skills"] is not None else [c.id for c in categories]),
                capacity=a["capacity"], status=a["status"], notify=a["notify"], phone=a["phone"], shift=shift,
                mask_contacts=a["mask_contacts"],
            )
        return Config(
            business=business, calendars=calendars, teams=teams, agents=agents,
            categories={c.id: c for c in categories}, channels=d["channels"], templates=d["templates"],
            survey=d["survey"], limits=d["limits"], macros=d["macros"],
        )


def format_errors(messages: Any, prefix: str = "") -> list[str]:
    """Flatten marshmallow's nested error dict into `a.b[2].c: message` lines."""
    out: list[str] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key in ("_schema", "value", "key"):
                # "_schema" is a whole-object error; "value"/"key" are marshmallow's Dict-field layers.
                out += format_errors(value, prefix)
                continue
            if isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            out += format_errors(value, path)
    elif isinstance(messages, list):
        for item in messages:
            if isinstance(item, (dict, list)):
                out += format_errors(item, prefix)
            else:
                text = "is not a known key" if item == "Unknown field." else item
                out.append(f"{prefix}: {text}" if prefix else str(text))
    else:
        out.append(f"{prefix}: {messages}" if prefix else str(messages))
    return out


#: A check a service adds to the loading of the config: the config → its problems, each starting
#: with the key path ("templates.ru/ack.txt.j2: ..."). Empty when all is well. The services own what
#: they check (the notifier its templates, the router its macros) and hand it in here: shared/
#: imports nothing from services/.
ConfigCheck = Callable[[Config], list[str]]


def load_config_text(text: str, source: str = "config", checks: Sequence[ConfigCheck] = ()) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config file {source}", [f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {source}", ["the top level must be a mapping of sections"])
    try:
        config: Config = ConfigSchema().load(raw)
    except ValidationError as exc:
        raise ConfigError(f"config file {source}", format_errors(exc.messages)) from exc
    for check in checks:
        # One check at a time, as before: the first section with problems is the one reported.
        problems = check(config)
        if problems:
            raise ConfigError(f"config file {source}", problems)
    return Config(**{**config.__dict__, "source": source})


def load_config(path: str | Path, checks: Sequence[ConfigCheck] = ()) -> Config:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {p}", [f"cannot be read: {exc.strerror or exc}"]) from exc
    return load_config_text(text, str(p), checks)

"""Message contracts: the only shapes that cross the bus.

Every message is an envelope (type, version, message id, correlation id, occurred-at) around a
payload. Each shape is one frozen dataclass, and the dataclass is also its schema: the consumer's
checks (types, which fields a body must have, limits, no unknown fields) are read from the field
annotations by pydantic, so a new field is one annotated line. The limits are the `Annotated`
types below (Channel, ProviderKey, ...). The producing end checks with the same schema, by decoding
what it encoded. A provider's own payload never crosses the bus: adapters normalise it into an
InboundMessage first.

The message id is the idempotency key: it is derived from the provider's id where there is one
(`derive_id`), so a provider's redelivery yields the same id and changes nothing downstream.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
import uuid
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, ConfigDict, PlainValidator, TypeAdapter, ValidationError, with_config

_NAMESPACE = uuid.UUID("6b1f3c9e-6f5e-4d2a-9a8e-5b9c0e8e7a11")

CHANNELS = ("email", "sms", "phone", "telegram", "messenger", "instagram", "whatsapp")
#: A call from a withheld number: its identity is the call itself (value: the CallSid), so each
#: such call is a customer of its own; its reply_to is empty, as nothing can reach the caller.
WITHHELD_CALL = "call_sid"
#: "wa_user": WhatsApp's business-scoped user id (BSUID, "US.1349…"), for a customer who hides
#: their number behind a username; answered through it.
IDENTITY_KINDS = ("email", "phone", "telegram", "psid", "igsid", "wa_id", "wa_user", WITHHELD_CALL)


_NAMESPACE_BYTES = _NAMESPACE.bytes


def derive_id(*parts: str) -> str:
    """A stable id from a provider's key: the same event always gets the same message id.

    str(uuid.uuid5(_NAMESPACE, name)) to the character (stored ids are idempotency keys), made
    without the UUID object, whose construction cost three times the hash: the SHA-1 of namespace
    and name, its first 16 bytes with the version (5) and the RFC 4122 variant bits set."""
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def new_id() -> str:
    return str(uuid.uuid4())


class ContractError(ValueError):
    """A message on the bus does not match its contract: it is poison, not a transient failure."""


# --- field types: a type and its limits, checked when a body is decoded ------------------------
#
# The limits are plain Python checks rather than pydantic's own string constraints: those refuse a
# string holding a lone surrogate outright, where a length counts it as one character (as the
# previous marshmallow schemas did), and a customer's comment must not be dead-lettered for it.


def _length(low: int = 0, high: int | None = None) -> AfterValidator:
    def check(value: str) -> str:
        if len(value) < low or (high is not None and len(value) > high):
            raise ValueError(f"Length must be between {low} and {high}." if high is not None
                             else f"Shorter than minimum length {low}.")
        return value
    return AfterValidator(check)


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    allowed = frozenset(choices)
    problem = f"Must be one of: {', '.join(choices)}."

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(problem)
        return value
    return AfterValidator(check)


def _in_range(low: int, high: int | None = None) -> AfterValidator:
    def check(value: int) -> int:
        if value < low or (high is not None and value > high):
            raise ValueError(f"Must be between {low} and {high}." if high is not None
                             else f"Must be greater than or equal to {low}.")
        return value
    return AfterValidator(check)


def _matching(pattern: re.Pattern[str], problem: str) -> AfterValidator:
    def check(value: str) -> str:
        if pattern.match(value) is None:
            raise ValueError(problem)
        return value
    return AfterValidator(check)


def _aware_datetime(value: Any) -> datetime:
    """ISO 8601, as `encode` writes it (datetime.isoformat); without an offset it is UTC. Only a
    string: a number is not read as a Unix time."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("Not a valid datetime.") from None
    else:
        raise ValueError("Not a valid datetime.")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class _IfAbsent:
    """Annotated metadata: what a body that lacks the field gets (a field followed by required
    ones cannot have a dataclass default). A field that may be None gets None without it. Read on
    a payload's own fields only: a nested dataclass (Identity, Attachment) needs real defaults."""

    value: Any


Moment = Annotated[datetime, PlainValidator(_aware_datetime)]
Channel = Annotated[str, _one_of(CHANNELS)]
IdentityKind = Annotated[str, _one_of(IDENTITY_KINDS)]
ProviderKey = Annotated[str, _length(1, 255)]  # a provider's id of a message or event
Address = Annotated[str, _length(0, 320)]  # an e-mail address, a phone number, a chat id
Reason = Annotated[str, _length(0, 2000)]  # free text that reaches an agent or a store
Opening = Annotated[int, _in_range(1)]
Score = Annotated[int, _in_range(0, 10)]
SurveyToken = Annotated[str, _matching(re.compile(r"^[A-Za-z0-9_-]{8,40}$"), "is not a survey token")]

#: On every contract dataclass: a body with a field the dataclass does not have is refused.
_closed = with_config(ConfigDict(extra="forbid"))


# --- InboundMessage v1: what a gateway adapter makes of a customer's message -------------------


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(value: Any) -> Any:
    """Strings without NUL and lone surrogates, all the way down: PostgreSQL stores neither (in
    text or JSONB), and a customer's message must not be dead-lettered for a stray control byte."""
    if isinstance(value, str):
        return _UNSTORABLE.sub("", value)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


#: One encoder made once: json.dumps with options makes a new one on every call.
_DUMP_AS_IS = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def _storable_body(body: Any) -> Any:
    """`storable` for a body on its way in, without its walk when there is nothing to drop. One
    dump in C (keys and values alike) shows it: ensure_ascii=False dumps a NUL as the escape
    \\u0000 and leaves a lone surrogate as it is, which then cannot be encoded as UTF-8. Finding
    neither, the body is returned as it is; finding either, or a body json cannot dump, it is walked
    as before. (A customer's literal backslash-u0000 dumps as \\\\u0000: it costs only the walk.)"""
    try:
        dumped = _DUMP_AS_IS(body)
        if "\\u0000" not in dumped:
            dumped.encode()  # UnicodeEncodeError on a lone surrogate
            return body
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    return storable(body)


def _clean_fields(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str) and _UNSTORABLE.search(value):
            object.__setattr__(obj, name, storable(value))


@_closed
@dataclass(frozen=True)
class Identity:
    kind: IdentityKind
    value: Annotated[str, _length(1, 320)]

    def __post_init__(self) -> None:
        _clean_fields(self, ("value",))


@_closed
@dataclass(frozen=True)
class Attachment:
    content_type: str
    url: str | None = None
    name: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        _clean_fields(self, ("content_type", "url", "name"))


@_closed
@dataclass(frozen=True)
class InboundMessage:
    TYPE: ClassVar[str] = "inbound.message"
    VERSION: ClassVar[int] = 1
    #: Applied to a body before it is checked: what crosses the bus can be stored (see `storable`).
    BEFORE_LOAD: ClassVar[Callable[[Any], Any] | None] = _storable_body

    channel: Channel
    external_id: ProviderKey  # the provider's dedupe key, unique per channel
    sender: Identity
    reply_to: str  # the address on this channel that answers reach (chat id, phone, e-mail address)
    #: Arrival: when the gateway first accepted the message, stamped once at the webhook or poll and
    #: carried unchanged through the spool and every broker retry. Promises start from it.
    received_at: Moment
    text: str = ""
    sender_name: str | None = None
    subject: str | None = None
    language_hint: str | None = None
    attachments: tuple[Attachment, ...] = ()
    linked_identities: tuple[Identity, ...] = ()  # verified extra identities (a shared phone contact)
    automatic: bool = False  # auto-replies, bounces, list mail: never acknowledged
    thread_refs: tuple[str, ...] = ()  # e-mail Message-IDs this message replies to
    meta: dict[str, Any] = field(default_factory=dict)
    #: The provider's own time for the message (Telegram's date, WhatsApp's timestamp, a mail's
    #: Date header), for display and ordering only: a device's clock, or a redelivery days later,
    #: must never move a promise.
    sent_at: Moment | None = None

    def __post_init__(self) -> None:
        # Whatever an adapter read, what crosses the bus can be stored (see `storable`); BEFORE_LOAD
        # does the same on the way in, so a message round-trips unchanged.
        _clean_fields(self, ("text", "sender_name", "subject", "reply_to", "external_id", "language_hint"))
        if any(_UNSTORABLE.search(ref) for ref in self.thread_refs if isinstance(ref, str)):
            object.__setattr__(self, "thread_refs", tuple(storable(list(self.thread_refs))))
        if self.meta:
            object.__setattr__(self, "meta", storable(self.meta))


# --- ConversationOpened v1: the router's decision, everything the notifier needs to acknowledge --


@_closed
@dataclass(frozen=True)
class ConversationOpened:
    TYPE: ClassVar[str] = "conversation.opened"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    opening: Opening  # 1 for a new conversation, +1 on every reopening: one acknowledgement each
    reference: str  # short code the customer can quote
    customer_id: str
    customer_name: str | None
    channel: Channel
    reply_to: str
    language: str
    category: str
    owner_id: str | None
    owner_name: str | None
    assignment_reason: str
    received_at: Moment
    promise_due: Moment
    inbound_message_id: str
    acknowledge: bool  # False for automatic mail and redirect-mode channels
    excerpt: str = ""
    reply_from: str | None = None  # the business address the customer wrote to (an SMS number), to answer from
    subject: str | None = None  # e-mail: the customer's subject, answered as "Re: ..."
    in_reply_to: str | None = None  # e-mail: the customer's Message-ID, so the answer threads
    team_id: str | None = None  # the owner's team, or the team whose queue holds it (its lead is told)


# --- Redirected v1: a message on a channel in "redirect" mode; no conversation, one redirect note --


@_closed
@dataclass(frozen=True)
class Redirected:
    TYPE: ClassVar[str] = "conversation.redirected"  # conversation.#: the notifier's queue gets it
    VERSION: ClassVar[int] = 1

    channel: Channel
    reply_to: str
    language: str
    received_at: Moment
    inbound_message_id: str
    reply_from: str | None = None


# --- DeliveryStatus v1: a provider's report on an outbound message (Twilio status callback, ...) --


@_closed
@dataclass(frozen=True)
class DeliveryStatus:
    TYPE: ClassVar[str] = "delivery.status"
    VERSION: ClassVar[int] = 1

    channel: Channel
    provider_message_id: ProviderKey
    status: Annotated[str, _length(1, 32)]  # the provider's word, lower-case: queued, sent, delivered, read, failed, undelivered...
    occurred_at: Moment
    error_code: str | None = None
    error_message: str | None = None


# --- ConversationReply v1: an agent's answer, to leave on the customer's channel ---------------


@_closed
@dataclass(frozen=True)
class ConversationReply:
    TYPE: ClassVar[str] = "conversation.reply"
    VERSION: ClassVar[int] = 1

    reply_id: Annotated[str, _length(1, 64)]  # the stored outbound message's id: the notifier's idempotency key is reply:<id>
    conversation_id: str
    channel: Channel
    reply_to: str
    reply_from: str | None
    text: Annotated[str, _length(1)]
    agent_id: str
    language: str
    last_customer_message_at: Moment | None = None  # WhatsApp: free-form only within 24 h of it


# --- ConversationResolved v1: a conversation closed by an agent (the survey starts from it) ------


@_closed
@dataclass(frozen=True)
class ConversationResolved:
    TYPE: ClassVar[str] = "conversation.resolved"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    customer_id: str
    channel: Channel
    reply_to: str
    language: str
    owner_id: str | None
    resolved_at: Moment
    human_replied: bool  # a survey only follows a human answer (SPEC §5)
    # Optional so that events stored before surveys existed still load: one survey per opening,
    # sent from the business address the customer wrote to, by name.
    opening: Opening | None = None
    reply_from: str | None = None
    customer_name: str | None = None
    # WhatsApp: the survey is free-form only within 24 h of it, else an approved template.
    last_customer_message_at: Moment | None = None


# --- ConversationCalledBack v1: an agent returned a customer's call (a voicemail, a missed call) ---


@_closed
@dataclass(frozen=True)
class ConversationCalledBack:
    TYPE: ClassVar[str] = "conversation.called_back"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    agent_id: str
    phone: str
    called_at: Moment


# --- SurveyResult v1: the notifier tells the router what became of a survey (for the KPIs) --------


@_closed
@dataclass(frozen=True)
class SurveyResult:
    """A survey's state as the notifier holds it, sent when it is sent and again when it is
    answered. The whole state each time, so the router's record (conversation_surveys) is an
    idempotent upsert whatever the order and however often it arrives. `feedback.` and not
    `survey.`: survey.# is the notifier's own queue."""

    TYPE: ClassVar[str] = "feedback.survey_result"
    VERSION: ClassVar[int] = 1

    conversation_id: Annotated[str, _length(1, 36)]
    opening: Opening
    kind: Annotated[str, _one_of(("csat", "nps"))]
    sent_at: Moment
    score: Score | None = None
    answered_at: Moment | None = None
    # Where it went and its token, so the router tells an SMS digit or a comment answering it from
    # its own record (services/router/survey_replies.py). Absent from results sent before them.
    channel: Channel | None = None
    address: Annotated[str, _length(1, 320)] | None = None
    token: SurveyToken | None = None
    commented: bool = False  # the notifier holds a comment already


# --- SurveyAnswer v1: a customer's rating (or comment) for a survey, from whatever channel --------


@_closed
@dataclass(frozen=True)
class SurveyAnswer:
    TYPE: ClassVar[str] = "survey.answer"  # survey.#: the notifier's queue gets it
    VERSION: ClassVar[int] = 1

    channel: Channel
    external_id: ProviderKey  # the provider's id of the press/reply/click: the message id derives from it
    token: SurveyToken  # the survey's own token (services/notifier/models.py Survey.token), never a guessable id
    received_at: Moment
    score: Score | None = None  # None: only a comment
    comment: Reason | None = None


# --- SurveyOptOut v1: STOP / unsubscribe — no more surveys for this customer, on any channel -------


@_closed
@dataclass(frozen=True)
class SurveyOptOut:
    TYPE: ClassVar[str] = "survey.opt_out"
    VERSION: ClassVar[int] = 1

    channel: Channel
    external_id: ProviderKey
    address: Address | None  # who said it on that channel (an e-mail link knows only its survey)
    received_at: Moment
    customer_id: str | None = None  # the router knows it; the notifier finds it from `token` otherwise
    token: SurveyToken | None = None


# --- ConversationMessage v1: a customer's message joined an open conversation (its owner is told) --


@_closed
@dataclass(frozen=True)
class ConversationMessage:
    TYPE: ClassVar[str] = "conversation.message"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    owner_id: str | None
    channel: Channel
    excerpt: Annotated[str, _IfAbsent("")]
    received_at: Moment
    inbound_message_id: str  # the notice's idempotency key: one notice per customer message
    reference: str
    customer_name: str | None = None
    promise_due: Moment | None = None  # set while the first human reply is still owed


# --- ConversationAssigned v1: a new owner (or the team queue) after the opening's first decision --


@_closed
@dataclass(frozen=True)
class ConversationAssigned:
    """A transfer, a hand-over (agent off duty or on leave) or a drain of the team queue: the
    notifier moves the promise to the new owner and tells them, within their shift."""

    TYPE: ClassVar[str] = "conversation.assigned"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    opening: Opening
    owner_id: str | None  # None: back in the team's queue
    team_id: str | None
    previous_owner_id: str | None
    reason: str
    assigned_at: Moment
    channel: Channel
    category: str
    reference: str
    customer_name: str | None = None
    promise_due: Moment | None = None  # set while the first human reply is still owed


# --- MailReport v1: a bounce or complaint about a mail we sent (router → notifier) ------------------


@_closed
@dataclass(frozen=True)
class MailReport:
    """The gateway recognised a bounce or a feedback-loop complaint quoting one of our Message-IDs;
    the router stored it as automatic mail and tells the notifier, which owns the outbox: the
    message is marked failed, and on a permanent failure or a complaint the address is suppressed.
    Nothing in it is trusted beyond that: the notifier acts only on an outbox row with that id."""

    TYPE: ClassVar[str] = "delivery.mail_report"
    VERSION: ClassVar[int] = 1

    original_message_id: ProviderKey  # without angle brackets, as the outbox stores provider_message_id
    kind: Annotated[str, _one_of(("bounce", "complaint"))]
    permanent: bool
    reason: Reason
    occurred_at: Moment
    recipient: Address | None = None  # the address the report names (the outbox row's address is used)


# --- AddressSuppressed v1: the notifier stopped writing to an address (notifier → router) ----------


@_closed
@dataclass(frozen=True)
class AddressSuppressed:
    """Shown to agents: the router keeps it as a note in the conversation the failed message
    belonged to, so whoever answers that customer sees why nothing reaches them any more."""

    TYPE: ClassVar[str] = "suppression.address"  # suppression.#: the router's queue gets it
    VERSION: ClassVar[int] = 1

    channel: Channel
    address: Annotated[str, _length(1, 320)]
    reason: Reason
    suppressed_at: Moment
    conversation_id: str | None = None


# --- PhoneOwnership v1: whom a customer's phone reaches now (router → gateway's call routing) --------


@_closed
@dataclass(frozen=True)
class PhoneOwnership:
    """The owner of the open conversation of a customer who has a phone identity, sent whenever it
    changes: the conversation opened or reopened, got a new owner (or went to the team's queue), or
    was resolved. The gateway keeps phone → owner from it (services/gateway/owners.py) to decide
    whom a ringing call dials, without reading the router's tables.

    `sequence` orders the events of one phone whatever order the bus delivers them in: the router's
    last assignment id of the conversation (increasing over a customer's conversations and
    reopenings); a resolution carries the same sequence as the assignment it closes and wins over
    it. The routing key is `ownership.phone`: no queue but the gateway's binds `ownership.#`, so the
    notifier and the router never see it."""

    TYPE: ClassVar[str] = "ownership.phone"
    VERSION: ClassVar[int] = 1

    conversation_id: Annotated[str, _length(1, 36)]
    phones: Annotated[tuple[Annotated[str, _length(1, 32)], ...], _length(1, 50)]  # the customer's E.164 phone identities, at least one
    owner_id: Annotated[str, _length(0, 64)] | None  # None: in the team's queue, or resolved
    open: bool
    sequence: Annotated[int, _in_range(0)]
    changed_at: Moment


# --- the envelope ---------------------------------------------------------------------------


#: Every payload on the bus, by (type, version): a new message is one more class here.
PAYLOAD_TYPES: dict[tuple[str, int], type] = {(cls.TYPE, cls.VERSION): cls for cls in (
    InboundMessage, ConversationOpened, DeliveryStatus, Redirected, ConversationReply, ConversationResolved,
    ConversationMessage, SurveyAnswer, SurveyOptOut, ConversationAssigned, ConversationCalledBack, SurveyResult,
    MailReport, AddressSuppressed, PhoneOwnership,
)}


@_closed
@dataclass(frozen=True)
class Envelope:
    type: str
    version: int
    message_id: Annotated[str, _length(1, 64)]
    correlation_id: Annotated[str, _length(1, 128)]
    occurred_at: Moment
    payload: Any  # checked against its own type's schema (PAYLOAD_TYPES) once type and version are known

    @classmethod
    def wrap(cls, payload: Any, *, message_id: str, correlation_id: str, occurred_at: datetime) -> Envelope:
        return cls(type=payload.TYPE, version=payload.VERSION, message_id=message_id,
                   correlation_id=correlation_id, occurred_at=occurred_at, payload=payload)


# --- the schemas, made from the dataclasses ------------------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class _Schema:
    adapter: TypeAdapter  # pydantic's validator for the dataclass: types, limits, unknown fields
    if_absent: dict[str, Any]  # fields a body may lack although the dataclass has no default for them
    before_load: Callable[[Any], Any] | None


_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    """Made once per class, on first use: making it costs far more than the checks it serves, and
    a TypeAdapter keeps no per-call state, so the consumer threads share it (two threads making
    the same one at once is harmless)."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = _make_schema(cls)
    return schema


def _make_schema(cls: type) -> _Schema:
    hints = typing.get_type_hints(cls, include_extras=True)
    if_absent = {}
    for f in dataclass_fields(cls):
        if f.default is not MISSING or f.default_factory is not MISSING:
            continue
        hint = hints[f.name]
        marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, _IfAbsent)]
        if marks:
            if_absent[f.name] = marks[0].value
        elif type(None) in typing.get_args(hint):
            if_absent[f.name] = None
    return _Schema(TypeAdapter(cls), if_absent, getattr(cls, "BEFORE_LOAD", None))


_WORDING = {"unexpected_keyword_argument": "Unknown field."}


def _problems(exc: ValidationError, where: str = "") -> str:
    """'payload.sender.kind: Must be one of: ...; ...': each problem's place and what is wrong,
    never the value (it may be long, or a customer's words)."""
    return "; ".join(
        ".".join(str(part) for part in ((where,) if where else ()) + tuple(error["loc"])) + ": "
        + _WORDING.get(error["type"], error["msg"].removeprefix("Value error, "))
        for error in exc.errors(include_url=False, include_context=False, include_input=False))


def load(cls: type[T], data: Any, *, where: str = "") -> T:
    """A payload dict → its dataclass, checked against the schema made from it; ContractError if
    it does not match."""
    if not isinstance(data, dict):
        raise ContractError(f"the message does not match its contract: {where or cls.__name__}: Not a valid mapping.")
    schema = _schema(cls)
    if schema.before_load is not None:
        data = schema.before_load(data)
    if schema.if_absent and not schema.if_absent.keys() <= data.keys():
        data = {**schema.if_absent, **data}
    try:
        return schema.adapter.validate_python(data)
    except ValidationError as exc:
        raise ContractError(f"the message does not match its contract: {_problems(exc, where)}") from exc


#: Where an Envelope keeps its wire form (the dict `encode` made, or the one `decode` read). An
#: event is encoded for its outbox row and again when it is published, and a stored event is
#: decoded from its row to be published: with the wire form kept, each envelope is dumped and
#: checked once. Envelopes and their payloads are frozen, so the kept form cannot go stale; the
#: attribute is not a dataclass field, so equality, repr and `replace` ignore it.
_WIRE = "_wire"


def encode(envelope: Envelope) -> dict[str, Any]:
    """Envelope → JSON-ready dict, validated against the same schema the consumer uses.

    The dict is the envelope's own (made once, see _WIRE): callers must not change it."""
    wire = envelope.__dict__.get(_WIRE)
    if wire is not None:
        return wire
    if (envelope.type, envelope.version) not in PAYLOAD_TYPES:
        raise ContractError(f"unknown message type {envelope.type!r} version {envelope.version}")
    head = {"type": envelope.type, "version": envelope.version, "message_id": envelope.message_id,
            "correlation_id": envelope.correlation_id, "occurred_at": _wire(envelope.occurred_at),
            "payload": _wire(envelope.payload)}
    # Round-trip now so that a producer can never put on the bus what a consumer would reject.
    decode(head)
    object.__setattr__(envelope, _WIRE, head)
    return head


def decode(body: Any) -> Envelope:
    """JSON dict → Envelope with a typed payload; anything else raises ContractError."""
    if not isinstance(body, dict):
        raise ContractError("the message body is not a JSON object")
    try:
        envelope = load(Envelope, body)
        payload_type = PAYLOAD_TYPES.get((envelope.type, envelope.version))
        if payload_type is None:
            raise ContractError(f"unknown message type {envelope.type!r} version {envelope.version}")
        payload: Any = load(payload_type, envelope.payload, where="payload")
    except RecursionError:
        # A hostile body nested deeper than the checks can walk is poison like any other.
        raise ContractError("the message does not match its contract: nested too deep") from None
    object.__setattr__(envelope, "payload", payload)
    # The body passed the consumer's own checks: publishing this envelope again (a stored event
    # relayed from its outbox row) sends the body as it was instead of dumping it anew.
    object.__setattr__(envelope, _WIRE, body)
    return envelope


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:  # not __dataclass_fields__: it holds the ClassVars too
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclass_fields(cls))
    return names


def _wire(obj: Any) -> Any:
    """Dataclasses → dicts, tuples → lists, datetimes → ISO 8601, all the way down: the JSON-ready
    form. A walk over the fields, not dataclasses.asdict: asdict deep-copies every other value."""
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "__dataclass_fields__"):
        return {name: _wire(getattr(obj, name)) for name in _field_names(type(obj))}
    if isinstance(obj, list | tuple):
        return [_wire(v) for v in obj]
    if isinstance(obj, dict):
        return {k: _wire(v) for k, v in obj.items()}
    return obj

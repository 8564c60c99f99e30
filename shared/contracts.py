"""Message contracts: the only shapes that cross the bus.

Every message is an envelope (type, version, message id, correlation id, occurred-at) around a
payload validated by one marshmallow schema, the same at the producing and the consuming end. A
provider's own payload never crosses the bus: adapters normalise it into an InboundMessage first.

The message id is the idempotency key: it is derived from the provider's id where there is one
(`derive_id`), so a provider's redelivery yields the same id and changes nothing downstream.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, pre_load, validate

_NAMESPACE = uuid.UUID("6b1f3c9e-6f5e-4d2a-9a8e-5b9c0e8e7a11")

CHANNELS = ("email", "sms", "phone", "telegram", "messenger", "instagram", "whatsapp")
#: A call from a withheld number: its identity is the call itself (value: the CallSid), so each
#: such call is a customer of its own; its reply_to is empty, as nothing can reach the caller.
WITHHELD_CALL = "call_sid"
#: "wa_user": WhatsApp's business-scoped user id (BSUID, "US.1349…"), for a customer who hides
#: their number behind a username; answered through it.
IDENTITY_KINDS = ("email", "phone", "telegram", "psid", "igsid", "wa_id", "wa_user", WITHHELD_CALL)


def derive_id(*parts: str) -> str:
    """A stable id from a provider's key: the same event always gets the same message id."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(parts)))


def new_id() -> str:
    return str(uuid.uuid4())


class ContractError(ValueError):
    """A message on the bus does not match its contract: it is poison, not a transient failure."""


class AwareDateTime(fields.AwareDateTime):
    def __init__(self, **kwargs: Any):
        super().__init__(format="iso", default_timezone=UTC, **kwargs)


class _Strict(Schema):
    class Meta:
        unknown = RAISE


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


def _clean_fields(obj: Any, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, str) and _UNSTORABLE.search(value):
            object.__setattr__(obj, name, storable(value))


@dataclass(frozen=True)
class Identity:
    kind: str
    value: str

    def __post_init__(self) -> None:
        _clean_fields(self, ("value",))


@dataclass(frozen=True)
class Attachment:
    content_type: str
    url: str | None = None
    name: str | None = None
    size: int | None = None

    def __post_init__(self) -> None:
        _clean_fields(self, ("content_type", "url", "name"))


@dataclass(frozen=True)
class InboundMessage:
    TYPE: ClassVar[str] = "inbound.message"
    VERSION: ClassVar[int] = 1

    channel: str
    external_id: str  # the provider's dedupe key, unique per channel
    sender: Identity
    reply_to: str  # the address on this channel that answers reach (chat id, phone, e-mail address)
    #: Arrival: when the gateway first accepted the message, stamped once at the webhook or poll and
    #: carried unchanged through the spool and every broker retry. Promises start from it.
    received_at: datetime
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
    sent_at: datetime | None = None

    def __post_init__(self) -> None:
        # Whatever an adapter read, what crosses the bus can be stored (see `storable`); the
        # schema's pre_load does the same on the way in, so a message round-trips unchanged.
        _clean_fields(self, ("text", "sender_name", "subject", "reply_to", "external_id", "language_hint"))
        if any(_UNSTORABLE.search(ref) for ref in self.thread_refs if isinstance(ref, str)):
            object.__setattr__(self, "thread_refs", tuple(storable(list(self.thread_refs))))
        if self.meta:
            object.__setattr__(self, "meta", storable(self.meta))


class IdentitySchema(_Strict):
    kind = fields.String(required=True, validate=validate.OneOf(IDENTITY_KINDS))
    value = fields.String(required=True, validate=validate.Length(min=1, max=320))

    @post_load
    def _make(self, d: dict, **_: Any) -> Identity:
        return Identity(**d)


class AttachmentSchema(_Strict):
    content_type = fields.String(required=True)
    url = fields.String(load_default=None, allow_none=True)
    name = fields.String(load_default=None, allow_none=True)
    size = fields.Integer(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> Attachment:
        return Attachment(**d)


class InboundMessageSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    sender = fields.Nested(IdentitySchema, required=True)
    reply_to = fields.String(required=True)
    received_at = AwareDateTime(required=True)
    text = fields.String(load_default="")
    sender_name = fields.String(load_default=None, allow_none=True)
    subject = fields.String(load_default=None, allow_none=True)
    language_hint = fields.String(load_default=None, allow_none=True)
    attachments = fields.List(fields.Nested(AttachmentSchema), load_default=list)
    linked_identities = fields.List(fields.Nested(IdentitySchema), load_default=list)
    automatic = fields.Boolean(load_default=False)
    thread_refs = fields.List(fields.String(), load_default=list)
    meta = fields.Dict(load_default=dict)
    sent_at = AwareDateTime(load_default=None, allow_none=True)

    @pre_load
    def _storable(self, data: Any, **_: Any) -> Any:
        return storable(data)

    @post_load
    def _make(self, d: dict, **_: Any) -> InboundMessage:
        for key in ("attachments", "linked_identities", "thread_refs"):
            d[key] = tuple(d[key])
        return InboundMessage(**d)


# --- ConversationOpened v1: the router's decision, everything the notifier needs to acknowledge --


@dataclass(frozen=True)
class ConversationOpened:
    TYPE: ClassVar[str] = "conversation.opened"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    opening: int  # 1 for a new conversation, +1 on every reopening: one acknowledgement each
    reference: str  # short code the customer can quote
    customer_id: str
    customer_name: str | None
    channel: str
    reply_to: str
    language: str
    category: str
    owner_id: str | None
    owner_name: str | None
    assignment_reason: str
    received_at: datetime
    promise_due: datetime
    inbound_message_id: str
    acknowledge: bool  # False for automatic mail and redirect-mode channels
    excerpt: str = ""
    reply_from: str | None = None  # the business address the customer wrote to (an SMS number), to answer from
    subject: str | None = None  # e-mail: the customer's subject, answered as "Re: ..."
    in_reply_to: str | None = None  # e-mail: the customer's Message-ID, so the answer threads
    team_id: str | None = None  # the owner's team, or the team whose queue holds it (its lead is told)


class ConversationOpenedSchema(_Strict):
    conversation_id = fields.String(required=True)
    opening = fields.Integer(required=True, validate=validate.Range(min=1))
    reference = fields.String(required=True)
    customer_id = fields.String(required=True)
    customer_name = fields.String(load_default=None, allow_none=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    reply_to = fields.String(required=True)
    language = fields.String(required=True)
    category = fields.String(required=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    owner_name = fields.String(load_default=None, allow_none=True)
    assignment_reason = fields.String(required=True)
    received_at = AwareDateTime(required=True)
    promise_due = AwareDateTime(required=True)
    inbound_message_id = fields.String(required=True)
    acknowledge = fields.Boolean(required=True)
    excerpt = fields.String(load_default="")
    reply_from = fields.String(load_default=None, allow_none=True)
    subject = fields.String(load_default=None, allow_none=True)
    in_reply_to = fields.String(load_default=None, allow_none=True)
    team_id = fields.String(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationOpened:
        return ConversationOpened(**d)


# --- Redirected v1: a message on a channel in "redirect" mode; no conversation, one redirect note --


@dataclass(frozen=True)
class Redirected:
    TYPE: ClassVar[str] = "conversation.redirected"  # conversation.#: the notifier's queue gets it
    VERSION: ClassVar[int] = 1

    channel: str
    reply_to: str
    language: str
    received_at: datetime
    inbound_message_id: str
    reply_from: str | None = None


class RedirectedSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    reply_to = fields.String(required=True)
    language = fields.String(required=True)
    received_at = AwareDateTime(required=True)
    inbound_message_id = fields.String(required=True)
    reply_from = fields.String(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> Redirected:
        return Redirected(**d)


# --- DeliveryStatus v1: a provider's report on an outbound message (Twilio status callback, ...) --


@dataclass(frozen=True)
class DeliveryStatus:
    TYPE: ClassVar[str] = "delivery.status"
    VERSION: ClassVar[int] = 1

    channel: str
    provider_message_id: str
    status: str  # the provider's word, lower-case: queued, sent, delivered, read, failed, undelivered...
    occurred_at: datetime
    error_code: str | None = None
    error_message: str | None = None


class DeliveryStatusSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    provider_message_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    status = fields.String(required=True, validate=validate.Length(min=1, max=32))
    occurred_at = AwareDateTime(required=True)
    error_code = fields.String(load_default=None, allow_none=True)
    error_message = fields.String(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> DeliveryStatus:
        return DeliveryStatus(**d)


# --- ConversationReply v1: an agent's answer, to leave on the customer's channel ---------------


@dataclass(frozen=True)
class ConversationReply:
    TYPE: ClassVar[str] = "conversation.reply"
    VERSION: ClassVar[int] = 1

    reply_id: str  # the stored outbound message's id: the notifier's idempotency key is reply:<id>
    conversation_id: str
    channel: str
    reply_to: str
    reply_from: str | None
    text: str
    agent_id: str
    language: str
    last_customer_message_at: datetime | None = None  # WhatsApp: free-form only within 24 h of it


class ConversationReplySchema(_Strict):
    reply_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    conversation_id = fields.String(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    reply_to = fields.String(required=True)
    reply_from = fields.String(load_default=None, allow_none=True)
    text = fields.String(required=True, validate=validate.Length(min=1))
    agent_id = fields.String(required=True)
    language = fields.String(required=True)
    last_customer_message_at = AwareDateTime(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationReply:
        return ConversationReply(**d)


# --- ConversationResolved v1: a conversation closed by an agent (the survey starts from it) ------


@dataclass(frozen=True)
class ConversationResolved:
    TYPE: ClassVar[str] = "conversation.resolved"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    customer_id: str
    channel: str
    reply_to: str
    language: str
    owner_id: str | None
    resolved_at: datetime
    human_replied: bool  # a survey only follows a human answer (SPEC §5)
    # Optional so that events stored before surveys existed still load: one survey per opening,
    # sent from the business address the customer wrote to, by name.
    opening: int | None = None
    reply_from: str | None = None
    customer_name: str | None = None
    # WhatsApp: the survey is free-form only within 24 h of it, else an approved template.
    last_customer_message_at: datetime | None = None


class ConversationResolvedSchema(_Strict):
    conversation_id = fields.String(required=True)
    customer_id = fields.String(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    reply_to = fields.String(required=True)
    language = fields.String(required=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    resolved_at = AwareDateTime(required=True)
    human_replied = fields.Boolean(required=True)
    opening = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=1))
    reply_from = fields.String(load_default=None, allow_none=True)
    customer_name = fields.String(load_default=None, allow_none=True)
    last_customer_message_at = AwareDateTime(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationResolved:
        return ConversationResolved(**d)


# --- ConversationCalledBack v1: an agent returned a customer's call (a voicemail, a missed call) ---


@dataclass(frozen=True)
class ConversationCalledBack:
    TYPE: ClassVar[str] = "conversation.called_back"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    agent_id: str
    phone: str
    called_at: datetime


class ConversationCalledBackSchema(_Strict):
    conversation_id = fields.String(required=True)
    agent_id = fields.String(required=True)
    phone = fields.String(required=True)
    called_at = AwareDateTime(required=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationCalledBack:
        return ConversationCalledBack(**d)


# --- SurveyResult v1: the notifier tells the router what became of a survey (for the KPIs) --------


@dataclass(frozen=True)
class SurveyResult:
    """A survey's state as the notifier holds it, sent when it is sent and again when it is
    answered. The whole state each time, so the router's record (conversation_surveys) is an
    idempotent upsert whatever the order and however often it arrives. `feedback.` and not
    `survey.`: survey.# is the notifier's own queue."""

    TYPE: ClassVar[str] = "feedback.survey_result"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    opening: int
    kind: str  # csat | nps
    sent_at: datetime
    score: int | None = None
    answered_at: datetime | None = None
    # Where it went and its token, so the router tells an SMS digit or a comment answering it from
    # its own record (services/router/survey_replies.py). Absent from results sent before them.
    channel: str | None = None
    address: str | None = None
    token: str | None = None
    commented: bool = False  # the notifier holds a comment already


SURVEY_TOKEN = validate.Regexp(r"^[A-Za-z0-9_-]{8,40}$", error="is not a survey token")


class SurveyResultSchema(_Strict):
    conversation_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    opening = fields.Integer(required=True, validate=validate.Range(min=1))
    kind = fields.String(required=True, validate=validate.OneOf(("csat", "nps")))
    sent_at = AwareDateTime(required=True)
    score = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(0, 10))
    answered_at = AwareDateTime(load_default=None, allow_none=True)
    channel = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(CHANNELS))
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(min=1, max=320))
    token = fields.String(load_default=None, allow_none=True, validate=SURVEY_TOKEN)
    commented = fields.Boolean(load_default=False)

    @post_load
    def _make(self, d: dict, **_: Any) -> SurveyResult:
        return SurveyResult(**d)


# --- SurveyAnswer v1: a customer's rating (or comment) for a survey, from whatever channel --------


@dataclass(frozen=True)
class SurveyAnswer:
    TYPE: ClassVar[str] = "survey.answer"  # survey.#: the notifier's queue gets it
    VERSION: ClassVar[int] = 1

    channel: str
    external_id: str  # the provider's id of the press/reply/click: the message id derives from it
    token: str  # the survey's own token (services/notifier/models.py Survey.token), never a guessable id
    received_at: datetime
    score: int | None = None  # None: only a comment
    comment: str | None = None


class SurveyAnswerSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    token = fields.String(required=True, validate=SURVEY_TOKEN)
    received_at = AwareDateTime(required=True)
    score = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(0, 10))
    comment = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2000))

    @post_load
    def _make(self, d: dict, **_: Any) -> SurveyAnswer:
        return SurveyAnswer(**d)


# --- SurveyOptOut v1: STOP / unsubscribe — no more surveys for this customer, on any channel -------


@dataclass(frozen=True)
class SurveyOptOut:
    TYPE: ClassVar[str] = "survey.opt_out"
    VERSION: ClassVar[int] = 1

    channel: str
    external_id: str
    address: str | None  # who said it on that channel (an e-mail link knows only its survey)
    received_at: datetime
    customer_id: str | None = None  # the router knows it; the notifier finds it from `token` otherwise
    token: str | None = None


class SurveyOptOutSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    address = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=320))
    received_at = AwareDateTime(required=True)
    customer_id = fields.String(load_default=None, allow_none=True)
    token = fields.String(load_default=None, allow_none=True, validate=SURVEY_TOKEN)

    @post_load
    def _make(self, d: dict, **_: Any) -> SurveyOptOut:
        return SurveyOptOut(**d)


# --- ConversationMessage v1: a customer's message joined an open conversation (its owner is told) --


@dataclass(frozen=True)
class ConversationMessage:
    TYPE: ClassVar[str] = "conversation.message"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    owner_id: str | None
    channel: str
    excerpt: str
    received_at: datetime
    inbound_message_id: str  # the notice's idempotency key: one notice per customer message
    reference: str
    customer_name: str | None = None
    promise_due: datetime | None = None  # set while the first human reply is still owed


class ConversationMessageSchema(_Strict):
    conversation_id = fields.String(required=True)
    owner_id = fields.String(load_default=None, allow_none=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    excerpt = fields.String(load_default="")
    received_at = AwareDateTime(required=True)
    inbound_message_id = fields.String(required=True)
    reference = fields.String(required=True)
    customer_name = fields.String(load_default=None, allow_none=True)
    promise_due = AwareDateTime(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationMessage:
        return ConversationMessage(**d)


# --- ConversationAssigned v1: a new owner (or the team queue) after the opening's first decision --


@dataclass(frozen=True)
class ConversationAssigned:
    """A transfer, a hand-over (agent off duty or on leave) or a drain of the team queue: the
    notifier moves the promise to the new owner and tells them, within their shift."""

    TYPE: ClassVar[str] = "conversation.assigned"
    VERSION: ClassVar[int] = 1

    conversation_id: str
    opening: int
    owner_id: str | None  # None: back in the team's queue
    team_id: str | None
    previous_owner_id: str | None
    reason: str
    assigned_at: datetime
    channel: str
    category: str
    reference: str
    customer_name: str | None = None
    promise_due: datetime | None = None  # set while the first human reply is still owed


class ConversationAssignedSchema(_Strict):
    conversation_id = fields.String(required=True)
    opening = fields.Integer(required=True, validate=validate.Range(min=1))
    owner_id = fields.String(load_default=None, allow_none=True)
    team_id = fields.String(load_default=None, allow_none=True)
    previous_owner_id = fields.String(load_default=None, allow_none=True)
    reason = fields.String(required=True)
    assigned_at = AwareDateTime(required=True)
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    category = fields.String(required=True)
    reference = fields.String(required=True)
    customer_name = fields.String(load_default=None, allow_none=True)
    promise_due = AwareDateTime(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> ConversationAssigned:
        return ConversationAssigned(**d)


# --- MailReport v1: a bounce or complaint about a mail we sent (router → notifier) ------------------


@dataclass(frozen=True)
class MailReport:
    """The gateway recognised a bounce or a feedback-loop complaint quoting one of our Message-IDs;
    the router stored it as automatic mail and tells the notifier, which owns the outbox: the
    message is marked failed, and on a permanent failure or a complaint the address is suppressed.
    Nothing in it is trusted beyond that: the notifier acts only on an outbox row with that id."""

    TYPE: ClassVar[str] = "delivery.mail_report"
    VERSION: ClassVar[int] = 1

    original_message_id: str  # without angle brackets, as the outbox stores provider_message_id
    kind: str  # bounce | complaint
    permanent: bool
    reason: str
    occurred_at: datetime
    recipient: str | None = None  # the address the report names (the outbox row's address is used)


class MailReportSchema(_Strict):
    original_message_id = fields.String(required=True, validate=validate.Length(min=1, max=255))
    kind = fields.String(required=True, validate=validate.OneOf(("bounce", "complaint")))
    permanent = fields.Boolean(required=True)
    reason = fields.String(required=True, validate=validate.Length(max=2000))
    occurred_at = AwareDateTime(required=True)
    recipient = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=320))

    @post_load
    def _make(self, d: dict, **_: Any) -> MailReport:
        return MailReport(**d)


# --- AddressSuppressed v1: the notifier stopped writing to an address (notifier → router) ----------


@dataclass(frozen=True)
class AddressSuppressed:
    """Shown to agents: the router keeps it as a note in the conversation the failed message
    belonged to, so whoever answers that customer sees why nothing reaches them any more."""

    TYPE: ClassVar[str] = "suppression.address"  # suppression.#: the router's queue gets it
    VERSION: ClassVar[int] = 1

    channel: str
    address: str
    reason: str
    suppressed_at: datetime
    conversation_id: str | None = None


class AddressSuppressedSchema(_Strict):
    channel = fields.String(required=True, validate=validate.OneOf(CHANNELS))
    address = fields.String(required=True, validate=validate.Length(min=1, max=320))
    reason = fields.String(required=True, validate=validate.Length(max=2000))
    suppressed_at = AwareDateTime(required=True)
    conversation_id = fields.String(load_default=None, allow_none=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> AddressSuppressed:
        return AddressSuppressed(**d)


# --- PhoneOwnership v1: whom a customer's phone reaches now (router → gateway's call routing) --------


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

    conversation_id: str
    phones: tuple[str, ...]  # the customer's E.164 phone identities, at least one
    owner_id: str | None  # None: in the team's queue, or resolved
    open: bool
    sequence: int
    changed_at: datetime


class PhoneOwnershipSchema(_Strict):
    conversation_id = fields.String(required=True, validate=validate.Length(min=1, max=36))
    phones = fields.List(fields.String(validate=validate.Length(min=1, max=32)), required=True,
                         validate=validate.Length(min=1, max=50))
    owner_id = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=64))
    open = fields.Boolean(required=True)
    sequence = fields.Integer(required=True, validate=validate.Range(min=0))
    changed_at = AwareDateTime(required=True)

    @post_load
    def _make(self, d: dict, **_: Any) -> PhoneOwnership:
        d["phones"] = tuple(d["phones"])
        return PhoneOwnership(**d)


# --- the envelope ---------------------------------------------------------------------------


PAYLOAD_SCHEMAS: dict[tuple[str, int], type[Schema]] = {
    (InboundMessage.TYPE, InboundMessage.VERSION): InboundMessageSchema,
    (ConversationOpened.TYPE, ConversationOpened.VERSION): ConversationOpenedSchema,
    (DeliveryStatus.TYPE, DeliveryStatus.VERSION): DeliveryStatusSchema,
    (Redirected.TYPE, Redirected.VERSION): RedirectedSchema,
    (ConversationReply.TYPE, ConversationReply.VERSION): ConversationReplySchema,
    (ConversationResolved.TYPE, ConversationResolved.VERSION): ConversationResolvedSchema,
    (ConversationMessage.TYPE, ConversationMessage.VERSION): ConversationMessageSchema,
    (SurveyAnswer.TYPE, SurveyAnswer.VERSION): SurveyAnswerSchema,
    (SurveyOptOut.TYPE, SurveyOptOut.VERSION): SurveyOptOutSchema,
    (ConversationAssigned.TYPE, ConversationAssigned.VERSION): ConversationAssignedSchema,
    (ConversationCalledBack.TYPE, ConversationCalledBack.VERSION): ConversationCalledBackSchema,
    (SurveyResult.TYPE, SurveyResult.VERSION): SurveyResultSchema,
    (MailReport.TYPE, MailReport.VERSION): MailReportSchema,
    (AddressSuppressed.TYPE, AddressSuppressed.VERSION): AddressSuppressedSchema,
    (PhoneOwnership.TYPE, PhoneOwnership.VERSION): PhoneOwnershipSchema,
}


@dataclass(frozen=True)
class Envelope:
    type: str
    version: int
    message_id: str
    correlation_id: str
    occurred_at: datetime
    payload: Any

    @classmethod
    def wrap(cls, payload: Any, *, message_id: str, correlation_id: str, occurred_at: datetime) -> Envelope:
        return cls(type=payload.TYPE, version=payload.VERSION, message_id=message_id,
                   correlation_id=correlation_id, occurred_at=occurred_at, payload=payload)


class EnvelopeSchema(_Strict):
    type = fields.String(required=True)
    version = fields.Integer(required=True)
    message_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    correlation_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    occurred_at = AwareDateTime(required=True)
    payload = fields.Dict(required=True)


@functools.cache
def _schema(cls: type[Schema]) -> Schema:
    """One instance per schema class: building one costs more than the dump or load it serves, and
    marshmallow 4 keeps no per-call state on the instance, so the consumer threads share them."""
    return cls()


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
    schema = _schema(PAYLOAD_SCHEMAS[(envelope.type, envelope.version)])
    payload = schema.dump(_plain(envelope.payload))
    head = _schema(EnvelopeSchema).dump({
        "type": envelope.type, "version": envelope.version, "message_id": envelope.message_id,
        "correlation_id": envelope.correlation_id, "occurred_at": envelope.occurred_at, "payload": payload})
    # Round-trip now so that a producer can never put on the bus what a consumer would reject.
    decode(head)
    object.__setattr__(envelope, _WIRE, head)
    return head


def decode(body: Any) -> Envelope:
    """JSON dict → Envelope with a typed payload; anything else raises ContractError."""
    if not isinstance(body, dict):
        raise ContractError("the message body is not a JSON object")
    try:
        head = _schema(EnvelopeSchema).load(body)
        schema_cls = PAYLOAD_SCHEMAS.get((head["type"], head["version"]))
        if schema_cls is None:
            raise ContractError(f"unknown message type {head['type']!r} version {head['version']}")
        payload = _schema(schema_cls).load(head["payload"])
    except ValidationError as exc:
        raise ContractError(f"the message does not match its contract: {exc.messages}") from exc
    envelope = Envelope(type=head["type"], version=head["version"], message_id=head["message_id"],
                        correlation_id=head["correlation_id"], occurred_at=head["occurred_at"], payload=payload)
    # The body passed the consumer's own checks: publishing this envelope again (a stored event
    # relayed from its outbox row) sends the body as it was instead of dumping it anew.
    object.__setattr__(envelope, _WIRE, body)
    return envelope


def _plain(obj: Any) -> Any:
    """Dataclasses → dicts, all the way down, for the schemas' dump. A walk over the fields, not
    dataclasses.asdict: asdict deep-copies every other value, which cost more than the dump."""
    if hasattr(obj, "__dataclass_fields__"):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclass_fields(obj)}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    return obj

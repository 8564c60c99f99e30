"""The agent API's requests and responses as marshmallow schemas (SPEC §6): the views in
services/router/api.py load every body and query through the request schemas (422 on a mismatch) and
dump every answer through the response schemas, and the OpenAPI document is generated from the same
classes, so the three cannot drift apart.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from services.router.assignment import AVAILABILITY_STATUS
from shared.contracts import CHANNELS
from shared.vocabulary import LANGUAGES

# --- schemas: requests ------------------------------------------------------------------------


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class AwareDateTime(fields.AwareDateTime):
    """ISO 8601; without an offset it is UTC."""

    def __init__(self, **kwargs: Any):
        super().__init__(format="iso", default_timezone=UTC, **kwargs)


class ConversationQuery(_Strict):
    status = fields.String(validate=validate.OneOf(("open", "resolved", "automatic")))
    channel = fields.String(validate=validate.OneOf(CHANNELS))
    category = fields.String(validate=validate.Length(min=1, max=32))
    promise_due_before = AwareDateTime()
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=500))
    cursor = fields.String(validate=validate.Length(min=1, max=200),
                           metadata={"description": "next_cursor of the previous page"})


class MacroVariables(_Strict):
    customer_name = fields.String(validate=validate.Length(min=1, max=80),
                                  metadata={"description": "default: the customer's name, when known"})
    order_number = fields.String(validate=validate.Length(min=1, max=40))
    owner_name = fields.String(validate=validate.Length(min=1, max=80),
                               metadata={"description": "default: the replying agent's name"})


class ReplyRequest(_Strict):
    text = fields.String(validate=validate.Length(min=1, max=4000))
    macro = fields.String(validate=validate.Length(min=1, max=64),
                          metadata={"description": "a macro id (GET /macros), rendered in the conversation's language"})
    variables = fields.Nested(MacroVariables, load_default=dict)

    @validates_schema(skip_on_field_errors=False)
    def _text_or_macro(self, data: dict, **_: Any) -> None:
        if ("text" in data) == ("macro" in data):
            raise ValidationError("give exactly one of text and macro", "text")


class KpiQuery(_Strict):
    from_ = fields.String(data_key="from", validate=validate.Length(min=10, max=40),
                          metadata={"description": "a date (business zone midnight) or ISO-8601 time; default: 7 days before `to`"})
    to = fields.String(validate=validate.Length(min=10, max=40), metadata={"description": "exclusive; default: now"})
    team = fields.String(validate=validate.Length(min=1, max=64))
    agent = fields.String(validate=validate.Length(min=1, max=64))


class TransferRequest(_Strict):
    agent_id = fields.String(validate=validate.Length(min=1, max=64))
    team_id = fields.String(validate=validate.Length(min=1, max=64))
    note = fields.String(required=True, validate=validate.Length(min=1, max=1000))

    @validates_schema
    def _one_target(self, data: dict, **_: Any) -> None:
        if ("agent_id" in data) == ("team_id" in data):
            raise ValidationError("give exactly one of agent_id and team_id", "_schema")


class ConfirmReplyToRequest(_Strict):
    address = fields.String(required=True, validate=validate.Length(min=3, max=320),
                            metadata={"description": "the waiting Reply-To, as the agent saw it"})


class MergeRequest(_Strict):
    from_ = fields.String(required=True, data_key="from", validate=validate.Length(min=1, max=36))
    into = fields.String(required=True, validate=validate.Length(min=1, max=36))


class MacroQuery(_Strict):
    language = fields.String(validate=validate.OneOf(LANGUAGES))
    category = fields.String(validate=validate.Length(min=1, max=32))


class AvailabilityRequest(_Strict):
    status = fields.String(required=True, validate=validate.OneOf(tuple(AVAILABILITY_STATUS)))


class CategoryRequest(_Strict):
    category = fields.String(required=True, validate=validate.Length(min=1, max=32))


# --- schemas: responses -----------------------------------------------------------------------


class ErrorSchema(Schema):
    error = fields.String(required=True)
    message = fields.String(required=True)
    details = fields.Dict()


class ConversationSummary(Schema):
    id = fields.String()
    reference = fields.String()
    customer_id = fields.String()
    status = fields.String()
    channel = fields.String()
    language = fields.String()
    category = fields.String()
    owner_id = fields.String(allow_none=True)
    team_id = fields.String(allow_none=True)
    assignment_reason = fields.String()
    opened_at = fields.DateTime()
    promise_due = fields.DateTime()
    first_response_at = fields.DateTime(allow_none=True)
    resolved_at = fields.DateTime(allow_none=True)
    last_message_at = fields.DateTime()
    reply_to = fields.String(metadata={"description": "where answers go (e-mail: the From, or a confirmed Reply-To)"})
    reply_to_pending = fields.String(allow_none=True, metadata={
        "description": "a Reply-To the customer gave that is none of their addresses: answers do not go there "
                       "until an agent confirms it (POST …/reply-to/confirm)"})
    unverified_sender = fields.Boolean(metadata={
        "description": "e-mail our mail server did not authenticate (Authentication-Results) opened or joined it"})


class ConversationList(Schema):
    conversations = fields.List(fields.Nested(ConversationSummary),
                                metadata={"description": "newest activity first"})
    next_cursor = fields.String(allow_none=True, metadata={"description": "the next page's cursor; null on the last"})


class HistoryMessage(Schema):
    id = fields.String()
    conversation_id = fields.String()
    direction = fields.String(metadata={"description": "in: from the customer; out: to the customer; "
                                                    "note: an agent's e-mail answer to a notice, "
                                                    "kept here, never sent"})
    channel = fields.String()
    sender_kind = fields.String(allow_none=True)
    sender_value = fields.String(allow_none=True)
    subject = fields.String(allow_none=True)
    text = fields.String()
    received_at = fields.DateTime(metadata={"description": "arrival: when the gateway accepted it (promises start here)"})
    sent_at = fields.Method("_sent_at", metadata={
        "description": "the provider's own time for it (Telegram's date, WhatsApp's timestamp, a mail's Date), "
                       "if it gave one: a device's clock, for display"})
    edited_at = fields.Method("_edited_at", metadata={
        "description": "when the customer last edited it (text is the edited one; revisions keeps the earlier)"})
    revoked_at = fields.Method("_revoked_at", metadata={"description": "when the customer deleted it"})
    revisions = fields.Method("_revisions", metadata={
        "description": "the customer's edits and deletion: id, kind (edit|revoke), at, previous_text"})
    attachments = fields.Method("_attachments", metadata={
        "description": "files as metadata: content_type, url, name, size (a voicemail's recording is one)"})
    sender_verified = fields.Method("_sender_verified", metadata={
        "description": "e-mail: whether our mail server authenticated the From (null for other channels, "
                       "whose providers authenticate every sender)"})
    quoted_reference = fields.Method("_quoted_reference", metadata={
        "description": "a reference (or the thread of a conversation) this message quoted that is not its "
                       "sender's: it was not joined"})
    reply_to = fields.Method("_reply_to", metadata={"description": "e-mail: a Reply-To other than the From"})

    def _attachments(self, message: Any) -> list[dict]:
        return list((getattr(message, "details", None) or {}).get("attachments") or [])

    def _sender_verified(self, message: Any) -> bool | None:
        value = (getattr(message, "details", None) or {}).get("sender_verified")
        return value if isinstance(value, bool) else None

    def _quoted_reference(self, message: Any) -> str | None:
        return (getattr(message, "details", None) or {}).get("quoted_reference")

    def _reply_to(self, message: Any) -> str | None:
        return (getattr(message, "details", None) or {}).get("reply_to")

    def _sent_at(self, message: Any) -> str | None:
        return (getattr(message, "details", None) or {}).get("sent_at")

    def _edited_at(self, message: Any) -> str | None:
        return (getattr(message, "details", None) or {}).get("edited_at")

    def _revoked_at(self, message: Any) -> str | None:
        return (getattr(message, "details", None) or {}).get("revoked_at")

    def _revisions(self, message: Any) -> list[dict]:
        return list((getattr(message, "details", None) or {}).get("revisions") or [])


class CallbackSchema(Schema):
    id = fields.Integer()
    conversation_id = fields.String()
    phone = fields.String(metadata={"description": "E.164: the number to call back"})
    kind = fields.String(metadata={"description": "voicemail | missed"})
    created_at = fields.DateTime()
    done_at = fields.DateTime(allow_none=True)


class CallbackList(Schema):
    callbacks = fields.List(fields.Nested(CallbackSchema))


class CallbackResult(Schema):
    callback = fields.Nested(CallbackSchema)


class CustomerSchema(Schema):
    id = fields.String()
    name = fields.String(allow_none=True)
    identities = fields.List(fields.Dict())


class ConversationDetail(ConversationSummary):
    customer = fields.Nested(CustomerSchema)
    history = fields.List(fields.Nested(HistoryMessage),
                          metadata={"description": "every message of every conversation of the customer, newest last"})
    callbacks = fields.List(fields.Nested(CallbackSchema),
                            metadata={"description": "calls to return in this conversation (voicemail, missed call)"})


class MacroSchema(Schema):
    id = fields.String()
    category = fields.String()
    title = fields.String()
    language = fields.String()


class MacroList(Schema):
    macros = fields.List(fields.Nested(MacroSchema))


class KpiResult(Schema):
    """The figures are defined in services/router/kpis.py; durations in seconds, percentages 0–100."""

    period = fields.Dict()
    scope = fields.Dict()
    conversations = fields.Integer()
    volume = fields.Dict()
    first_response = fields.Dict()
    promises = fields.Dict()
    resolution = fields.Dict()
    reopen_rate_pct = fields.Float(allow_none=True)
    surveys = fields.Dict()
    arrivals = fields.Dict()
    trend = fields.List(fields.Dict())
    # Not `load =`: a field of that name would hide Schema.load. Same key in the JSON and the spec.
    load_ = fields.List(fields.Dict(), attribute="load", data_key="load")
    automatic_mail = fields.Dict(metadata={"description": "automatic mail received in the period, outside every "
                                           "KPI: {total, by_kind: {bounce, complaint, vacation, spam, ...}}"})


class ReplyResult(Schema):
    reply_id = fields.String()
    text = fields.String(metadata={"description": "the text sent (a macro rendered)"})
    conversation = fields.Nested(ConversationSummary)


class TransferResult(Schema):
    conversation = fields.Nested(ConversationSummary)


class MergeResult(Schema):
    customer_id = fields.String()
    merged = fields.String()
    conversations = fields.List(fields.String())


class AvailabilityResult(Schema):
    agent_id = fields.String()
    status = fields.String()
    moved = fields.List(fields.String(), metadata={"description": "conversations handed over or drained"})

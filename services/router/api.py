"""The agent API (SPEC §6): JSON over HTTP under /api/v1/, per-agent bearer tokens, OpenAPI 3.

Every request is authenticated first (401), then its body and query are parsed by a marshmallow
schema (400 not JSON, 422 invalid), then the conversation is looked up (404) and checked against
the agent (403: an agent sees only their own conversations, a lead also their team's). Nothing is
changed or published for a refused request. Each operation is one transaction; the events it
produces are stored with it and published after commit (services/router/operations.py).

The OpenAPI document at /api/v1/openapi.json is generated from the same schemas, route by route,
so it cannot drift from what the handlers accept. This module holds the views; the schemas are in
services/router/api_schemas.py, and who may see which conversation in services/router/access.py,
which the inbox uses too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, g, jsonify, request
from marshmallow import Schema, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.router import automatic, kpi_store, listing, macros
from services.router import operations as ops
from services.router.access import may_see, visible_to
from services.router.api_schemas import (
    AvailabilityRequest,
    AvailabilityResult,
    CallbackList,
    CallbackResult,
    CategoryRequest,
    ConfirmReplyToRequest,
    ConversationDetail,
    ConversationList,
    ConversationQuery,
    ConversationSummary,
    ErrorSchema,
    KpiQuery,
    KpiResult,
    MacroList,
    MacroQuery,
    MergeRequest,
    MergeResult,
    ReplyRequest,
    ReplyResult,
    TransferRequest,
    TransferResult,
)
from services.router.models import CallbackTask, CategoryCorrection, Conversation, Customer, Identity, Message
from shared.bus.publisher import Publisher
from shared.config import Agent, Config
from shared.contracts import (
    new_id,
)
from shared.db import transaction
from shared.web import error

PREFIX = "/api/v1"
_PATH_PARAM = re.compile(r"<(?:(\w+):)?(\w+)>")

Learn = Callable[[str, str, str | None], None]  # (text, category, language): retrain on a correction


@dataclass
class ApiDeps:
    config: Config
    sessions: sessionmaker[Session]
    publisher: Publisher
    clock: Callable[[], datetime]
    learn: Learn | None = None
    secure_cookies: bool = False  # SECURE_COOKIES: the inbox's cookies are Secure even when the request looks http


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


# --- helpers ------------------------------------------------------------------------------------


def _load(schema: Schema, data: Any) -> dict:
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise ApiError(422, "invalid", "the request does not match its schema", details=exc.messages) from exc


def _body(schema: Schema) -> dict:
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise ApiError(400, "malformed", "the body must be a JSON object (Content-Type: application/json)")
    return _load(schema, data)


def _correlation_id() -> str:
    value = request.headers.get("X-Correlation-Id") or request.headers.get("X-Request-Id") or ""
    return value[:128] if value.strip() else new_id()


def _summary(conv: Conversation) -> dict:
    """The conversation's summary fields, read while the session is open; dumped by the response schema."""
    return {name: getattr(conv, name) for name in ConversationSummary().fields}


# --- the blueprint -----------------------------------------------------------------------------


def build_api(deps: ApiDeps) -> Blueprint:
    bp = Blueprint("agent_api", __name__, url_prefix=PREFIX)
    spec = APISpec(title="Switchboard agent API", version="1", openapi_version="3.0.3",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "Agents' conversations: read, reply, resolve, transfer, merge."})
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
    spec.components.schema("Error", schema=ErrorSchema)
    config = deps.config

    def route(rule: str, method: str, summary: str, *, response: type[Schema], status: int = 200,
              body: type[Schema] | None = None, query: type[Schema] | None = None,
              errors: tuple[tuple[int, str], ...] = ()):
        # Flask's "<int:id>" is OpenAPI's "{id}" with an integer schema.
        found = _PATH_PARAM.search(rule)
        converter, name = found.groups() if found else (None, None)
        path = PREFIX + _PATH_PARAM.sub(r"{\2}", rule)
        operation: dict[str, Any] = {
            "summary": summary, "security": [{"bearer": []}],
            "responses": {str(status): {"description": "OK", "content": {"application/json": {"schema": response}}},
                          **{str(code): {"description": text, "content": {"application/json": {"schema": "Error"}}}
                             for code, text in ((401, "no or unknown bearer token"), (403, "not yours"),
                                                (404, "unknown id"), (422, "invalid request"), *errors)}},
        }
        if name:
            operation["parameters"] = [{"in": "path", "name": name, "required": True,
                                        "schema": {"type": "integer" if converter == "int" else "string"}}]
        if query is not None:
            operation.setdefault("parameters", []).append({"in": "query", "schema": query})
        if body is not None:
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        spec.path(path=path, operations={method.lower(): operation})

        def decorate(view):
            @functools.wraps(view)
            def wrapper(**kwargs):
                g.agent = _authenticate()
                return view(**kwargs)

            bp.add_url_rule(rule, view.__name__, wrapper, methods=[method])
            return view

        return decorate

    def _authenticate() -> Agent:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "an Authorization: Bearer <token> header is required")
        with deps.sessions() as s:
            agent_id = ops.authenticate(s, token.strip(), deps.clock())
        agent = config.agents.get(agent_id) if agent_id else None
        if agent is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked token")
        return agent

    def _conversation(s: Session, conversation_id: str, *, lock: bool = False) -> Conversation:
        stmt = select(Conversation).where(Conversation.id == conversation_id)
        conv = s.scalar(stmt.with_for_update() if lock else stmt)
        if conv is None:
            raise ApiError(404, "not_found", f"no conversation {conversation_id}")
        if not may_see(g.agent, conv, config):
            raise ApiError(403, "forbidden", "this conversation is neither yours nor your team's")
        return conv

    def _publish(ids: list[str]) -> None:
        ops.publish_pending(deps.sessions, deps.publisher, ids)
        # Events stored on the way (assignments by hand-over or drain) and anything an earlier
        # request could not publish (broker outage) go out with this one; consumers are idempotent.
        ops.relay_pending(deps.sessions, deps.publisher, deps.clock(), older_than=timedelta(0))

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        resp = error(exc.status, exc.code, exc.message, **exc.extra)
        if exc.status == 401:
            resp[0].headers["WWW-Authenticate"] = 'Bearer realm="switchboard"'
        return resp

    @route("/conversations", "GET", "My conversations (a lead: the team's), filtered",
           response=ConversationList, query=ConversationQuery)
    def list_conversations():
        q = _load(ConversationQuery(), request.args.to_dict())
        where = [getattr(Conversation, key) == q[key] for key in ("channel", "category") if key in q]
        if "promise_due_before" in q:
            where.append(Conversation.promise_due < q["promise_due_before"])
        try:
            with deps.sessions() as s:
                rows, next_cursor = listing.page(s, g.agent, config, where=where, limit=q["limit"],
                                                 cursor=q.get("cursor"),
                                                 statuses=[q["status"]] if "status" in q else listing.STATUSES)
        except listing.BadCursor as exc:
            raise ApiError(422, "invalid", str(exc), details={"cursor": [str(exc)]}) from exc
        return jsonify(ConversationList().dump({"conversations": rows, "next_cursor": next_cursor}))

    @route("/conversations/<conversation_id>", "GET", "A conversation with the customer's whole history",
           response=ConversationDetail)
    def get_conversation(conversation_id: str):
        with deps.sessions() as s:
            conv = _conversation(s, conversation_id)
            customer = s.get_one(Customer, conv.customer_id)  # a foreign key: always there
            identities = s.scalars(select(Identity).where(Identity.customer_id == customer.id).order_by(Identity.id))
            history = s.scalars(select(Message).join(Conversation, Message.conversation_id == Conversation.id)
                                .where(Conversation.customer_id == customer.id)
                                .order_by(Message.received_at, Message.id))
            body = {**_summary(conv),
                    "customer": {"id": customer.id, "name": customer.name,
                                 "identities": [{"kind": i.kind, "value": i.value} for i in identities]},
                    "history": list(history),
                    "callbacks": ops.open_callbacks(s, CallbackTask.conversation_id == conv.id)}
            return jsonify(ConversationDetail().dump(body))

    @route("/callbacks", "GET", "Calls to return: my conversations' (a lead: the team's), oldest first",
           response=CallbackList)
    def list_callbacks():
        with deps.sessions() as s:
            return jsonify(CallbackList().dump({"callbacks": ops.open_callbacks(s, visible_to(g.agent, config))}))

    @route("/callbacks/<int:callback_id>/done", "POST", "Mark a call returned", response=CallbackResult)
    def complete_callback(callback_id: int):
        with transaction(deps.sessions) as s:
            # Past a 64-bit integer no task has that id (and SQLite would refuse to compare it): 404.
            task = s.get(CallbackTask, callback_id, with_for_update=True) if callback_id < 2 ** 63 else None
            if task is None:
                raise ApiError(404, "not_found", f"no call-back task {callback_id}")
            _conversation(s, task.conversation_id, lock=True)  # 403 unless the agent's or their team's
            envelope = ops.complete_callback(s, task, agent_id=g.agent.id, at=deps.clock(),
                                             calendar=config.business_calendar,
                                             correlation_id=_correlation_id())
            body = CallbackResult().dump({"callback": task})
        _publish([envelope.message_id] if envelope else [])
        return jsonify(body)

    @route("/conversations/<conversation_id>/reply", "POST", "Reply on the customer's channel",
           response=ReplyResult, body=ReplyRequest, status=201,
           errors=((409, "the customer left no way to answer (a voicemail from a withheld number)"),))
    def reply(conversation_id: str):
        req = _body(ReplyRequest())
        now, correlation = deps.clock(), _correlation_id()
        reply_id = new_id()
        with transaction(deps.sessions) as s:
            conv = _conversation(s, conversation_id, lock=True)
            text = req["text"] if "text" in req else _render_macro(s, conv, req["macro"], req["variables"])
            try:
                envelope = ops.reply(s, conv, reply_id=reply_id, agent_id=g.agent.id, text=text, at=now,
                                     calendar=config.business_calendar,
                                     correlation_id=correlation,
                                     details={"macro": req["macro"]} if "macro" in req else {})
            except ops.Unanswerable as exc:
                raise ApiError(409, "unanswerable", str(exc)) from exc
            summary = _summary(conv)
        _publish([envelope.message_id])
        return jsonify(ReplyResult().dump({"reply_id": reply_id, "text": text, "conversation": summary})), 201

    def _render_macro(s: Session, conv: Conversation, macro_id: str, variables: dict) -> str:
        try:
            macro = macros.find(macro_id, conv.language, config.macros)
            customer = s.get(Customer, conv.customer_id)
            return macros.render(macro, customer_name=variables.get("customer_name", customer.name if customer else None),
                                 order_number=variables.get("order_number"),
                                 owner_name=variables.get("owner_name", g.agent.name),
                                 business_name=config.business.name)
        except macros.MacroError as exc:
            raise ApiError(422, "invalid", str(exc)) from exc

    @route("/macros", "GET", "Macros in a language (default: the business's), a category's first",
           response=MacroList, query=MacroQuery)
    def list_macros():
        q = _load(MacroQuery(), request.args.to_dict())
        found = macros.macros_for(q.get("language") or config.business.default_language, q.get("category"),
                                  config.macros)
        return jsonify(MacroList().dump({"macros": found}))

    @route("/kpis", "GET", "KPIs over a period: a lead's team or agent, or an agent's own", response=KpiResult,
           query=KpiQuery)
    def get_kpis():
        q = _load(KpiQuery(), request.args.to_dict())
        try:
            scope = kpi_store.scope_for(g.agent, config, q.get("team"), q.get("agent"))
            start, end = kpi_store.period(config, deps.clock(), q.get("from_"), q.get("to"))
        except kpi_store.ScopeError as exc:
            raise ApiError(exc.status, "forbidden" if exc.status == 403 else "invalid", str(exc)) from exc
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc)) from exc
        with deps.sessions() as s:
            result = kpi_store.report(s, config, scope, start, end, deps.clock())
            # Outside every KPI, counted on its own: a lead sees bounce and spam volume.
            result["automatic_mail"] = automatic.counts(s, start, end, scope.team if scope.agent is None else None)
        return jsonify(result)

    @route("/conversations/<conversation_id>/resolve", "POST", "Resolve", response=TransferResult)
    def resolve(conversation_id: str):
        now, correlation = deps.clock(), _correlation_id()
        with transaction(deps.sessions) as s:
            conv = _conversation(s, conversation_id, lock=True)
            if conv.status != "open":
                raise ApiError(409, "conflict", "the conversation is already resolved")
            envelope = ops.resolve(s, config, conv, at=now, correlation_id=correlation)
            summary = _summary(conv)
        _publish([envelope.message_id])
        return jsonify(TransferResult().dump({"conversation": summary}))

    @route("/conversations/<conversation_id>/reopen", "POST", "Reopen a resolved conversation",
           response=TransferResult)
    def reopen(conversation_id: str):
        try:
            with transaction(deps.sessions) as s:
                conv = _conversation(s, conversation_id, lock=True)
                if conv.status == "open":
                    raise ApiError(409, "conflict", "the conversation is already open")
                if conv.status == automatic.STATUS:
                    raise ApiError(409, "conflict", "automatic mail opens no conversation")
                kpi_store.record_reopening(conv)
                s.flush()  # the one-open-conversation index speaks here
                summary = _summary(conv)
        except IntegrityError as exc:
            raise ApiError(409, "conflict", "the customer has another open conversation; it continues there") from exc
        return jsonify(TransferResult().dump({"conversation": summary}))

    @route("/conversations/<conversation_id>/reply-to/confirm", "POST",
           "Confirm the waiting Reply-To: answers go there from now on", response=TransferResult,
           body=ConfirmReplyToRequest, errors=((409, "that address is not the Reply-To waiting"),))
    def confirm_reply_to(conversation_id: str):
        req = _body(ConfirmReplyToRequest())
        with transaction(deps.sessions) as s:
            conv = _conversation(s, conversation_id, lock=True)
            try:
                ops.confirm_reply_to(s, conv, address=req["address"], agent_id=g.agent.id, at=deps.clock())
            except ops.NothingToConfirm as exc:
                raise ApiError(409, "conflict", str(exc)) from exc
            summary = _summary(conv)
        return jsonify(TransferResult().dump({"conversation": summary}))

    @route("/conversations/<conversation_id>/transfer", "POST", "Transfer to an agent or a team queue",
           response=TransferResult, body=TransferRequest)
    def transfer(conversation_id: str):
        req = _body(TransferRequest())
        now = deps.clock()
        if "agent_id" in req and req["agent_id"] not in config.agents:
            raise ApiError(422, "invalid", f"unknown agent {req['agent_id']!r}")
        if "team_id" in req and req["team_id"] not in config.teams:
            raise ApiError(422, "invalid", f"unknown team {req['team_id']!r}")
        with transaction(deps.sessions) as s:
            conv = _conversation(s, conversation_id, lock=True)
            if conv.status != "open":
                raise ApiError(409, "conflict", "only an open conversation can be transferred")
            ops.transfer(s, config, conv, by=g.agent.id, agent_id=req.get("agent_id"), team_id=req.get("team_id"),
                         note=req["note"], at=now)
            summary = _summary(conv)
        return jsonify(TransferResult().dump({"conversation": summary}))

    @route("/conversations/<conversation_id>/category", "POST", "Correct the category (kept as training data)",
           response=TransferResult, body=CategoryRequest)
    def correct_category(conversation_id: str):
        req = _body(CategoryRequest())
        if req["category"] not in config.categories:
            raise ApiError(422, "invalid", f"unknown category {req['category']!r}",
                           details={"known": sorted(config.categories)})
        now = deps.clock()
        with transaction(deps.sessions) as s:
            conv = _conversation(s, conversation_id, lock=True)
            first = s.scalar(select(Message).where(Message.conversation_id == conv.id, Message.direction == "in")
                             .order_by(Message.received_at, Message.id).limit(1))
            text = "\n".join(x for x in ((first.subject, first.text) if first else ()) if x)
            old = conv.category
            s.add(CategoryCorrection(conversation_id=conv.id, old_category=old, new_category=req["category"],
                                     agent_id=g.agent.id, text=text, language=conv.language, at=now))
            conv.category = req["category"]
            conv.category_reason = {"corrected_by": g.agent.id, "previous": old, "at": now.isoformat()}
            summary = _summary(conv)
        if deps.learn is not None and text and old != req["category"]:
            deps.learn(text, req["category"], conv.language)
        return jsonify(TransferResult().dump({"conversation": summary}))

    @route("/customers/merge", "POST", "Merge two customers (identities and conversations move)",
           response=MergeResult, body=MergeRequest)
    def merge_customers():
        req = _body(MergeRequest())
        source_id, target_id = req["from_"], req["into"]
        if source_id == target_id:
            raise ApiError(422, "invalid", "a customer cannot be merged into itself")
        agent: Agent = g.agent
        with transaction(deps.sessions) as s:
            source, target = s.get(Customer, source_id, with_for_update=True), s.get(Customer, target_id)
            if source is None or target is None:
                raise ApiError(404, "not_found", f"no customer {source_id if source is None else target_id}")
            if source.merged_into is not None:
                raise ApiError(409, "conflict", f"customer {source_id} was already merged into {source.merged_into}")
            for cust in (source, target):
                convs = list(s.scalars(select(Conversation).where(Conversation.customer_id == cust.id)))
                if not any(may_see(agent, c, config) for c in convs):
                    raise ApiError(403, "forbidden", f"customer {cust.id} has no conversation of yours or your team's")
            convs = list(s.scalars(select(Conversation).where(Conversation.customer_id == source.id)))
            open_both = [c for c in convs if c.status == "open"] and s.scalar(
                select(Conversation.id).where(Conversation.customer_id == target.id, Conversation.status == "open"))
            if open_both:
                raise ApiError(409, "conflict", "both customers have an open conversation; resolve one first")
            for ident in s.scalars(select(Identity).where(Identity.customer_id == source.id)):
                ident.customer_id = target.id
            for conv in convs:
                conv.customer_id = target.id
            source.merged_into = target.id
            if not target.name and source.name:
                target.name = source.name
            moved = [c.id for c in convs]
        return jsonify(MergeResult().dump({"customer_id": target_id, "merged": source_id, "conversations": moved}))

    @route("/agents/me/availability", "PUT", "Set my availability; off or on leave hands my conversations over",
           response=AvailabilityResult, body=AvailabilityRequest)
    def set_availability():
        req = _body(AvailabilityRequest())
        now = deps.clock()
        with transaction(deps.sessions) as s:
            moved = ops.set_availability(s, config, g.agent.id, req["status"], now)
        return jsonify(AvailabilityResult().dump({"agent_id": g.agent.id, "status": req["status"], "moved": moved}))

    @bp.get("/openapi.json")
    def openapi():
        return jsonify(spec.to_dict())

    return bp

"""The gateway's HTTP edge: webhooks in, InboundMessages onto the bus.

Order of work for every webhook: size limit → signature → parse → publish (or spool) → 2xx.
Nothing is published for a rejected request, and a client's mistake is a 4xx with a JSON body
that names it, never a 500.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, cast

from flask import Blueprint, Flask, Response, g, jsonify, request
from werkzeug.datastructures import EnvironHeaders
from werkzeug.http import HTTP_STATUS_CODES

from services.gateway import openapi
from services.gateway.channels import (
    FixedAnswer,
    HandshakeVerifier,
    Headers,
    Inbound,
    InboundAdapter,
    Malformed,
    RawRequest,
    Responder,
    StatusesParser,
    StatusParser,
    Unauthenticated,
    WebhookAnswerer,
)
from services.gateway.intake import Intake
from shared.config import Config
from shared.contracts import DeliveryStatus, Envelope, InboundMessage, derive_id
from shared.log import correlation_id
from shared.metrics import MESSAGES_IN, STAGE_LATENCY, WEBHOOKS_REJECTED, label
from shared.web import error, install_json_errors

log = logging.getLogger(__name__)

CORRELATION_HEADERS = ("X-Correlation-Id", "X-Request-Id")


@dataclass(frozen=True)
class _Kinds:
    """Which optional parts of the protocol an adapter has, worked out once per route: isinstance on
    a runtime-checkable Protocol walks the protocol's members on every call, five per webhook."""

    status_only: bool
    statuses: bool
    answerer: bool
    responder: bool
    fixed_answer: bool

    @classmethod
    def of(cls, adapter: InboundAdapter) -> _Kinds:
        return cls(isinstance(adapter, StatusParser), isinstance(adapter, StatusesParser),
                   isinstance(adapter, WebhookAnswerer), isinstance(adapter, Responder),
                   isinstance(adapter, FixedAnswer))


@dataclass
class GatewayDeps:
    config: Config
    intake: Intake
    adapters: dict[str, InboundAdapter]  # webhook path segment → adapter
    public_base_url: str
    max_body_bytes: int
    clock: Callable[[], datetime]


@dataclass(frozen=True)
class _Answer:
    """A webhook's HTTP answer, made without Flask: the fast path (_FastWebhooks) sends it as it is."""

    status: int
    body: bytes
    content_type: str


JSON = "application/json"


def _json(status: int, body: object) -> _Answer:
    return _Answer(status, json.dumps(body, separators=(",", ":")).encode(), JSON)


def _error(status: int, code: str, message: str) -> _Answer:
    """shared.web.error's body, without Flask's application context."""
    return _json(status, {"error": code, "message": message})


def correlation_of(headers: Headers) -> str:
    """The caller's correlation id (X-Correlation-Id, X-Request-Id; 128 characters at most), or a new one."""
    given = next((v for v in map(headers.get, CORRELATION_HEADERS) if v), None)
    return given[:128] if given else str(uuid.uuid4())


Handle = Callable[..., _Answer]


def webhook_handler(deps: GatewayDeps) -> Handle:
    """The work of one webhook, from its adapter and the request's parts to its answer; the same for
    Flask's route and for the fast path. `read` makes the RawRequest (reading the body) once the
    channel's switch and the declared size have let the request through."""

    # The metrics' labelled series, looked up once each: prometheus_client's labels() takes a lock
    # and builds a key on every call.
    @functools.cache
    def counted(channel: str, outcome: str) -> Any:
        return MESSAGES_IN.labels(channel, outcome)

    @functools.cache
    def published(channel: str) -> Any:
        return STAGE_LATENCY.labels("published", label(channel))  # as observe_stage does

    def handle(adapter_name: str, adapter: InboundAdapter, channel: str | None, kinds: _Kinds, *,
               content_length: int | None, read: Callable[[], RawRequest]) -> _Answer:
        if channel is not None and deps.config.channel_mode(channel) == "off":
            return _error(404, "channel_off", f"the {channel} channel is switched off")
        if content_length is not None and content_length > deps.max_body_bytes:
            WEBHOOKS_REJECTED.labels(adapter_name, "too_large").inc()
            return _error(413, "too_large", f"the body is over {deps.max_body_bytes} bytes")
        raw = read()
        try:
            adapter.verify(raw)
        except Unauthenticated as exc:
            log.warning("webhook rejected: %s", exc, extra={"adapter": adapter_name})
            WEBHOOKS_REJECTED.labels(adapter_name, "forbidden").inc()
            return _error(403, "forbidden", str(exc))
        try:
            envelopes: list[Envelope] = []
            statuses: list[DeliveryStatus]
            if kinds.status_only:
                # A status-only endpoint (Twilio's StatusCallback): the request is one delivery status.
                statuses = [cast(StatusParser, adapter).parse_status(raw)]
            else:
                messages = adapter.parse(raw)
                for msg in messages:
                    if deps.config.channel_mode(msg.channel) == "off":
                        log.info("dropped a message on the switched-off %s channel", msg.channel)
                        continue
                    envelopes.append(_wrap(msg, derive_id(msg.channel, msg.external_id), raw.received_at))
                statuses = cast(StatusesParser, adapter).parse_statuses(raw) if kinds.statuses else []
            for st in statuses:
                # One message gets several statuses (delivered, then read): each is its own event.
                envelopes.append(_wrap(st, derive_id(st.channel, "status", st.provider_message_id, st.status),
                                       raw.received_at))
        except Malformed as exc:
            log.warning("malformed webhook: %s", exc, extra={"adapter": adapter_name})
            WEBHOOKS_REJECTED.labels(adapter_name, "malformed").inc()
            return _error(400, "malformed", str(exc))
        # Worked out before publishing (it reads only the request): once the broker has confirmed,
        # the provider's answer is sent without parsing the body again.
        method_call = cast(WebhookAnswerer, adapter).webhook_answer(raw) if kinds.answerer else None
        outcomes = []
        for envelope in envelopes:
            outcome = deps.intake.accept(envelope)
            outcomes.append({"message_id": envelope.message_id, "outcome": outcome})
            if envelope.type == InboundMessage.TYPE:
                counted(envelope.payload.channel, outcome).inc()
                if outcome == "published":
                    published(envelope.payload.channel).observe(
                        max(0.0, (deps.clock() - raw.received_at).total_seconds()))
            log.info("accepted %s", envelope.type, extra={"message_id": envelope.message_id, "outcome": outcome})
        if kinds.responder:
            # The answer depends on the request: a call's TwiML says what happens next to the caller.
            body, content_type = cast(Responder, adapter).respond(raw)
            return _Answer(200, body.encode() if isinstance(body, str) else body, content_type)
        if method_call is not None:
            # Telegram runs one Bot API method given in the webhook's response (answerCallbackQuery).
            return _json(200, method_call)
        if kinds.fixed_answer:
            # Some providers read the body: Twilio would text a non-TwiML body to the customer.
            body, content_type = cast(FixedAnswer, adapter).success_response()
            return _Answer(200, body.encode() if isinstance(body, str) else body, content_type)
        return _json(200, {"ok": True, "accepted": outcomes})

    def _wrap(payload: Inbound | DeliveryStatus, message_id: str, received_at: datetime) -> Envelope:
        return Envelope.wrap(payload, message_id=message_id, correlation_id=correlation_id.get() or str(uuid.uuid4()),
                             occurred_at=received_at)

    return handle


@dataclass(frozen=True)
class _Route:
    name: str
    adapter: InboundAdapter
    channel: str | None
    kinds: _Kinds


class _FastWebhooks:
    """The providers' POSTs answered straight from WSGI, in front of Flask.

    A webhook is the gateway's hot path and Flask's request machinery (contexts, routing, hooks,
    the request and response objects) cost about as much CPU as the webhook's own work. This
    serves the common case, a POST to exactly a webhook's path with a Content-Length and a body
    that is not a form, with the same checks in the same order (webhook_handler); anything else
    (a form post such as Twilio's, a chunked body, a handshake GET, another path) goes to Flask as
    before."""

    def __init__(self, app: Callable[..., Any], deps: GatewayDeps, routes: dict[str, _Route], handle: Handle):
        self.app = app
        self.deps = deps
        self.routes = routes
        self.handle = handle

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        route = self.routes.get(environ.get("PATH_INFO", "")) if environ.get("REQUEST_METHOD") == "POST" else None
        length = environ.get("CONTENT_LENGTH")
        if (route is None or environ.get("SCRIPT_NAME") or not length or not length.isdigit()
                or environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() in _FORMS):
            return self.app(environ, start_response)
        headers = EnvironHeaders(environ)
        token = correlation_id.set(correlation_of(headers))
        try:
            answer = self.handle(route.name, route.adapter, route.channel, route.kinds, content_length=int(length),
                                 read=partial(self._raw, environ, headers, int(length)))
        except Exception:
            # A bug of ours, never the client's (shared.web.install_json_errors): logged whole.
            log.exception("unhandled error")
            answer = _error(500, "internal_error", "an internal error occurred; it has been logged")
        finally:
            correlation_id.reset(token)
        start_response(_STATUS[answer.status], [("Content-Type", answer.content_type),
                                                ("Content-Length", str(len(answer.body)))])
        return [answer.body]

    def _raw(self, environ: dict[str, Any], headers: EnvironHeaders, length: int) -> RawRequest:
        query = environ.get("QUERY_STRING", "").encode("latin-1").decode(errors="replace")
        return RawRequest(url=self.deps.public_base_url + f"{environ['PATH_INFO']}?{query}".rstrip("?"),
                          headers=headers, body=environ["wsgi.input"].read(length), form={},
                          received_at=self.deps.clock())


#: Bodies Flask parses into a form (RawRequest.form): those keep Flask's route.
_FORMS = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_STATUS = {code: f"{code} {HTTP_STATUS_CODES[code]}" for code in (200, 400, 403, 404, 413, 500)}


def webhooks_blueprint(deps: GatewayDeps, handle: Handle) -> Blueprint:
    bp = Blueprint("webhooks", __name__)

    @bp.before_request
    def _correlate() -> None:
        g.correlation_token = correlation_id.set(correlation_of(request.headers))

    @bp.teardown_request
    def _uncorrelate(_exc) -> None:
        token = g.pop("correlation_token", None)
        if token is not None:
            correlation_id.reset(token)

    def _handshake(adapter: HandshakeVerifier):
        try:
            challenge = adapter.verify_handshake(request.args)
        except Unauthenticated as exc:
            return error(403, "forbidden", str(exc))
        except Malformed as exc:
            return error(400, "malformed", str(exc))
        # Plain text, never HTML: the challenge is the caller's own string echoed back.
        return Response(challenge, 200, content_type="text/plain; charset=utf-8")

    def _handle(adapter_name: str, adapter: InboundAdapter, channel: str | None, kinds: _Kinds):
        # Flask's route: the same work as the WSGI fast path (_FastWebhooks), on Flask's request.
        answer = handle(adapter_name, adapter, channel, kinds, content_length=request.content_length,
                        read=lambda: RawRequest(
                            # Twilio signs the URL it called, query string included; behind a proxy only
                            # config knows it.
                            url=deps.public_base_url + request.full_path.rstrip("?"),
                            headers=request.headers,
                            body=request.get_data(cache=True),  # 413 past MAX_CONTENT_LENGTH for chunked bodies
                            form=request.form.to_dict(flat=False)
                            if request.mimetype == "application/x-www-form-urlencoded" else {},
                            received_at=deps.clock(),
                        ))
        return Response(answer.body, answer.status, content_type=answer.content_type)

    # One route per adapter, from what the adapter declares (its `webhook`, its handshake): adding
    # a channel adds no route here. Routes exist for the adapters given, so `build_adapters` is the
    # one list of what the gateway serves; the OpenAPI document is assembled from the same list
    # (services/gateway/openapi.py, tests/contract/test_gateway_openapi.py).
    for name, adapter in deps.adapters.items():
        hook = adapter.webhook
        bp.add_url_rule(hook.path, endpoint=name, view_func=partial(_handle, name, adapter, hook.channel,
                                                                    _Kinds.of(adapter)), methods=["POST"])
        if isinstance(adapter, HandshakeVerifier):
            bp.add_url_rule(hook.path, endpoint=f"{name}_handshake", view_func=partial(_handshake, adapter),
                            methods=["GET"])

    return bp


def create_app(deps: GatewayDeps, extra_blueprints: Sequence[Blueprint] = ()) -> Flask:
    app = Flask("switchboard.gateway")
    app.config["MAX_CONTENT_LENGTH"] = deps.max_body_bytes
    install_json_errors(app)
    # One webhook handler for Flask's routes and the WSGI fast path in front of them.
    handle = webhook_handler(deps)
    app.register_blueprint(webhooks_blueprint(deps, handle))
    for bp in extra_blueprints:
        app.register_blueprint(bp)
    # Assembled once: the base and the parts of exactly the adapters this app serves.
    document = openapi.assemble(deps.adapters.values())
    app.add_url_rule("/openapi.json", "openapi", lambda: jsonify(document))
    routes = {adapter.webhook.path: _Route(name, adapter, adapter.webhook.channel, _Kinds.of(adapter))
              for name, adapter in deps.adapters.items()}
    app.wsgi_app = _FastWebhooks(app.wsgi_app, deps, routes, handle)  # type: ignore[method-assign]
    return app

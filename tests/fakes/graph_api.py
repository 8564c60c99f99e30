"""A fake Meta Graph API: a real HTTP server on loopback for the Messenger/Instagram and WhatsApp senders.

It serves POST /{version}/me/messages (Send API) and POST /{version}/{phone_number_id}/messages
(WhatsApp Cloud API), checks the bearer token and the basic shape of the body as Meta does, records
every accepted send, and can be told to fail: `fail_next(n, status=500)`, a 429 with Retry-After,
a 400 with a Graph error code, a slow answer (`delay`) for timeouts, or any `reply_next` body.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.http import FakeHandler, FakeServer

VERSION = "v21.0"


@dataclass
class GraphSend:
    version: str
    target: str  # "me" (Messenger/Instagram) or the WhatsApp phone_number_id
    token: str | None
    body: dict[str, Any]
    at: float

    @property
    def recipient(self) -> str | None:
        recipient = self.body.get("recipient")
        # Messenger: {"recipient": {"id": PSID}}; WhatsApp: "to" (a wa_id) or "recipient" (a BSUID).
        return self.body.get("to") or (recipient.get("id") if isinstance(recipient, dict) else recipient)


@dataclass
class _Canned:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]
    delay: float


@dataclass
class FakeGraphApi(FakeServer):
    tokens: frozenset[str] = frozenset()  # accepted bearer tokens; empty accepts any
    sends: list[GraphSend] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # every POST path, failed ones included
    _canned: list[_Canned] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> FakeGraphApi:
        fake = self
        ids = itertools.count(1)

        class Handler(FakeHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.read_body()
                with fake._lock:
                    fake.calls.append(self.path)
                    canned = fake._canned.pop(0) if fake._canned else None
                if canned:
                    time.sleep(canned.delay)
                    return self._reply(canned.status, canned.body, canned.headers)
                auth = self.headers.get("Authorization", "")
                token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
                if token is None or (fake.tokens and token not in fake.tokens):
                    return self._reply(401, _error(190, "Invalid OAuth access token - Cannot parse access token",
                                                   "OAuthException"))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    return self._reply(400, _error(100, "(#100) The parameter body is not JSON"))
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) != 3 or parts[2] != "messages":
                    return self._reply(400, _error(100, f"Unsupported post request. Object with ID '{parts[-1]}'"
                                                        " does not exist"))
                version, target = parts[0], parts[1]
                problem = _check_messenger(body) if target == "me" else _check_whatsapp(body)
                if problem:
                    return self._reply(400, _error(100, f"(#100) {problem}"))
                n = next(ids)
                with fake._lock:
                    fake.sends.append(GraphSend(version, target, token, body, time.time()))
                if target == "me":
                    return self._reply(200, {"recipient_id": body["recipient"]["id"], "message_id": f"m_fake{n}"})
                return self._reply(200, {"messaging_product": "whatsapp",
                                         "contacts": [{"input": body.get("to") or body.get("recipient"),
                                                       "wa_id": body.get("to") or body.get("recipient")}],
                                         "messages": [{"id": f"wamid.FAKE{n}"}]})

            def _reply(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                self.send_json(status, body, headers)

        self.serve(Handler)
        return self

    @property
    def base_url(self) -> str:
        """META_GRAPH_BASE: scheme, host and the API version."""
        return f"http://127.0.0.1:{self.port}/{VERSION}"

    def reply_next(self, n: int, status: int, body: dict[str, Any], *, headers: dict[str, str] | None = None,
                   delay: float = 0.0) -> None:
        with self._lock:
            self._canned.extend([_Canned(status, body, dict(headers or {}), delay)] * n)

    def fail_next(self, n: int = 1, status: int = 500, *, code: int | None = None, subcode: int | None = None,
                  message: str | None = None, retry_after: str | None = None, is_transient: bool | None = None,
                  delay: float = 0.0) -> None:
        """Canned Graph errors: 500, 429 with Retry-After, 400 with an error code (100, 190, 131047…)."""
        code = code if code is not None else {429: 4, 400: 100}.get(status, 2)
        body = _error(code, message or _MESSAGES.get(code, "An unexpected error has occurred."), subcode=subcode)
        if is_transient is not None:
            body["error"]["is_transient"] = is_transient
        self.reply_next(n, status, body, headers={"Retry-After": retry_after} if retry_after else None, delay=delay)

    def sent_to(self, recipient: str) -> list[GraphSend]:
        with self._lock:
            return [s for s in self.sends if s.recipient == recipient]


_MESSAGES = {
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "(#4) Application request limit reached",
    10: "(#10) This message is sent outside of allowed window.",
    100: "(#100) No matching user found",
    190: "Error validating access token: Session has expired",
    200: "(#200) The user hasn't authorized the application to perform this action",
    551: "(#551) This person isn't available right now.",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    130429: "(#130429) Rate limit hit",
    131026: "(#131026) Message undeliverable",
    131047: "(#131047) Re-engagement message",
}


def _error(code: int, message: str, kind: str = "OAuthException", *, subcode: int | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"message": message, "type": kind, "code": code, "fbtrace_id": "AbCdEfGhIjK"}
    if subcode is not None:
        err["error_subcode"] = subcode
    return {"error": err}


def _check_messenger(body: dict[str, Any]) -> str | None:
    if not isinstance(body.get("recipient"), dict) or not body["recipient"].get("id"):
        return "param recipient[id] must be non-empty"
    if not isinstance(body.get("message"), dict):
        return "param message must be a JSON object"
    if body.get("messaging_type") not in ("RESPONSE", "UPDATE", "MESSAGE_TAG"):
        return "param messaging_type must be one of RESPONSE, UPDATE, MESSAGE_TAG"
    if body["messaging_type"] == "MESSAGE_TAG" and not body.get("tag"):
        return "param tag is required for messaging_type MESSAGE_TAG"
    return None


def _check_whatsapp(body: dict[str, Any]) -> str | None:
    if body.get("messaging_product") != "whatsapp":
        return "param messaging_product is required"
    if not body.get("to") and not isinstance(body.get("recipient"), str):
        return "param to is required"
    kind = body.get("type", "text")
    if kind not in ("text", "template", "interactive", "image", "document", "audio", "video", "location"):
        return f"param type {kind!r} is not valid"
    if not isinstance(body.get(kind), dict):
        return f"param {kind} is required"
    if kind == "template":
        return _check_template(body["template"])
    return None


def _check_template(template: dict[str, Any]) -> str | None:
    # What Meta checks before it looks the template up: its name, a language code and, for
    # button components, the sub_type, a string index and one payload or text parameter each.
    if not isinstance(template.get("name"), str) or not template["name"]:
        return "param template[name] is required"
    if not isinstance(template.get("language"), dict) or not isinstance(template["language"].get("code"), str):
        return "param template[language][code] is required"
    for component in template.get("components") or []:
        if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
            return "param template[components][type] must be header, body or button"
        if component["type"] == "button":
            if component.get("sub_type") not in ("quick_reply", "url", "copy_code", "flow", "catalog"):
                return "param template[components][sub_type] is required for buttons"
            if not isinstance(component.get("index"), str) or not component["index"].isdigit():
                return "param template[components][index] must be a string of digits"
            params = component.get("parameters")
            if not isinstance(params, list) or len(params) != 1 or not isinstance(params[0], dict) \
                    or params[0].get("type") not in ("payload", "text"):
                return "param template[components][parameters] needs one payload or text parameter"
    return None

"""A customer's edit or deletion of a message they sent, applied to the stored message.

WhatsApp (`edit`, `revoke`) and Messenger (`message_edit`) report these as messages of their own;
the gateway marks them `meta["revision"] = {"kind": "edit"|"revoke", "of": <original provider id>}`.
They are not new customer messages: they open nothing, reopen nothing, notify nobody and get no
acknowledgement. An edit replaces the stored text (the previous text is kept in the revision
history, agents see both); a deletion marks the message (its text stays for the agents who may
already be answering it, flagged as deleted by the customer).

Only the message's own author revises it (a forged revision from another sender changes nothing),
and a revision applied once is not applied again (its id is kept in the history), so a redelivery
changes nothing. Providers deliver out of order: a revision that arrives before its original is a
transient failure (`OriginalNotStoredYet`), retried by the bus with backoff and dead-lettered —
visible and replayable — if the original never comes.
"""

from __future__ import annotations

import logging
from typing import Any

from services.router.models import Message
from shared.contracts import InboundMessage

log = logging.getLogger(__name__)

KINDS = ("edit", "revoke")


class OriginalNotStoredYet(Exception):
    """The revised message is not stored (yet): retried, as providers deliver out of order."""


def revision_of(msg: InboundMessage) -> dict[str, str] | None:
    rev = msg.meta.get("revision")
    if isinstance(rev, dict) and rev.get("kind") in KINDS and isinstance(rev.get("of"), str) and rev["of"]:
        return rev
    return None


def apply_revision(original: Message | None, msg: InboundMessage, rev: dict[str, str]) -> None:
    """`original`: the stored customer message the revision names (locked by the caller), if any."""
    if original is None:
        raise OriginalNotStoredYet(f"{msg.channel} message {rev['of']} to {rev['kind']} is not stored yet")
    if (original.sender_kind, original.sender_value) != (msg.sender.kind, msg.sender.value):
        log.warning("a %s revision from someone other than the message's author ignored", msg.channel,
                    extra={"external_id": msg.external_id})
        return
    details: dict[str, Any] = dict(original.details or {})
    history = list(details.get("revisions") or [])
    if any(entry.get("id") == msg.external_id for entry in history):
        return  # a redelivery
    entry = {"id": msg.external_id, "kind": rev["kind"], "at": msg.received_at.isoformat(), "previous_text": original.text}
    if rev["kind"] == "edit":
        original.text = msg.text
        details["edited_at"] = msg.received_at.isoformat()
    else:
        details["revoked_at"] = msg.received_at.isoformat()
    details["revisions"] = [*history, entry]
    original.details = details  # a new dict: the JSON column sees the change
    log.info("%s message %s %s by the customer", msg.channel, rev["of"],
             "edited" if rev["kind"] == "edit" else "deleted")

"""Conversation lists by last activity, a page at a time with a cursor (keyset pagination).

"Mine or my teams'" is an OR the database cannot read in order from one index: it would fetch
every matching conversation (a lead's team: the whole history) and sort them all. So the list is
the union of branches — the agent's own, each led team's — times each asked status, and each
branch is one ordered scan of ix_conversations_{owner,team}_status_activity (owner or team,
status, last_message_at, id) that stops after a page. The next page starts after the last row's
(last_message_at, id): never OFFSET, so page 1 and page 1000 cost the same.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, literal, select, true, tuple_, union_all
from sqlalchemy.orm import Session

from services.router.access import led_teams
from services.router.models import Conversation
from shared.config import Agent, Config
from shared.db import UTCDateTime

STATUSES = ("open", "resolved")


class BadCursor(ValueError):
    """A cursor this server did not make."""


def encode_cursor(conv: Conversation) -> str:
    raw = json.dumps([conv.last_message_at.isoformat(), conv.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime, str]:
    if len(text) > 200:  # ours are under 100 characters; a long one is nobody's
        raise BadCursor("the cursor is not one this list gave")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        at, cid = json.loads(raw)
        moment = datetime.fromisoformat(at)
        moment.astimezone(UTC)  # the database is given UTC: year 1 at +01:00 has none
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as exc:
        raise BadCursor("the cursor is not one this list gave") from exc
    if moment.tzinfo is None or not isinstance(cid, str) or len(cid) > 36:
        raise BadCursor("the cursor is not one this list gave")
    return moment, cid


def page(s: Session, agent: Agent, config: Config, *, statuses: Sequence[str] = STATUSES,
         where: Sequence[ColumnElement[bool]] = (), limit: int = 100,
         cursor: str | None = None) -> tuple[list[Conversation], str | None]:
    """One page of the conversations the agent may see, newest activity first, and the cursor of
    the next page (None on the last). `where`: further filters (channel, category, promise due)."""
    c = Conversation
    after = decode_cursor(cursor) if cursor else None
    branches = [c.owner_id == agent.id] + [c.team_id == team for team in sorted(led_teams(agent, config))]
    parts = []
    for status in statuses:
        # Automatic mail belongs to nobody and every agent may see it (services.router.automatic):
        # one branch, so a lead's team branch does not list it twice.
        for branch in ([true()] if status == "automatic" else branches):
            stmt = select(c.id, c.last_message_at).where(branch, c.status == status, *where)
            if after is not None:
                stmt = stmt.where(tuple_(c.last_message_at, c.id)
                                  < tuple_(literal(after[0], UTCDateTime()), literal(after[1])))
            # Each branch as its own subquery: SQLite allows no ORDER BY/LIMIT inside a UNION.
            sub = stmt.order_by(c.last_message_at.desc(), c.id.desc()).limit(limit + 1).subquery()
            parts.append(select(sub.c.id))
    ids = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
    rows = list(s.scalars(select(c).where(c.id.in_(select(ids.c.id)))
                          .order_by(c.last_message_at.desc(), c.id.desc()).limit(limit + 1)))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1])
    return rows, None

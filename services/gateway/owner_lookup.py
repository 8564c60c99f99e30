"""Who owns a caller's open conversation: the gateway's one read of the router's tables.

Used only to decide whom a ringing call goes to (services/gateway/channels/twilio_voice.py). It
is a short, read-only query with tight timeouts, made on demand: the gateway keeps working without
a database, and any failure means "unknown", so the call rings the team's phone instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from sqlalchemy import Engine, create_engine, select, text

from services.router.models import Conversation, Identity
from shared.db import make_engine, normalise_url

#: Seconds: a caller is listening to silence while this runs.
QUERY_TIMEOUT_SECONDS = 2


def owner_lookup(database_url: str) -> Callable[[str], str | None]:
    """caller's E.164 number → the agent id owning their open conversation, or None.

    The engine is made at the first call, not at start: a gateway whose database is down still
    starts and answers calls.
    """
    lock = threading.Lock()
    engine: Engine | None = None

    def _engine() -> Engine:
        nonlocal engine
        with lock:
            if engine is None:
                url = normalise_url(database_url)
                if url.startswith("postgresql"):
                    engine = create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True,
                                           connect_args={"connect_timeout": QUERY_TIMEOUT_SECONDS})
                else:
                    engine = make_engine(url, pool_size=1)
            return engine

    def lookup(phone: str) -> str | None:
        eng = _engine()
        with eng.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SET TRANSACTION READ ONLY"))
                conn.execute(text(f"SET LOCAL statement_timeout = {QUERY_TIMEOUT_SECONDS * 1000}"))
            owner = conn.scalar(
                select(Conversation.owner_id)
                .join(Identity, Identity.customer_id == Conversation.customer_id)
                .where(Identity.kind == "phone", Identity.value == phone, Conversation.status == "open")
                .order_by(Conversation.last_message_at.desc()).limit(1))
            conn.rollback()
            return owner

    return lookup

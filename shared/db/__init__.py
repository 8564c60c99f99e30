"""Storage: SQLAlchemy 2 engine and sessions, one declarative Base, Alembic migrations at start.

PostgreSQL in services mode, SQLite in embedded mode. Each service defines its own models
(services/router/models.py, services/notifier/models.py) on the shared Base; one migration chain
(shared/db/migrations) creates them all, so one DATABASE_URL serves the whole deployment.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import JSON, DateTime, Engine, TypeDecorator, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

log = logging.getLogger(__name__)

# JSONB on PostgreSQL (indexable, compact), plain JSON text on SQLite.
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")

_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant: every service takes the same lock so only one migrates at a time.
_MIGRATION_LOCK = 7_240_311


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out, on every backend (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSONType}


def normalise_url(url: str) -> str:
    """`postgresql://` means psycopg 3 here (psycopg2 is not a dependency)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


#: A pooled connection back for less than this many seconds was working a moment ago: it is handed
#: out without a ping. The services check out a connection for every transaction (the notifier
#: several per message), and a ping each time was a round trip, an autocommit transaction and
#: ~0.1 ms of Python per checkout; a connection idle for longer is pinged as before.
PING_AFTER_IDLE = 1.0


def make_engine(url: str, *, pool_size: int = 10, ping_after_idle: float = PING_AFTER_IDLE) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            # WAL lets the web thread read while a consumer writes; FULL sync: nothing accepted is lost.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
    _ping_when_idle(engine, ping_after_idle)
    return engine


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """pool_pre_ping, for connections idle `idle` seconds or more (and fresh from the pool's reset).
    One that broke within the last `idle` seconds fails its first statement instead: SQLAlchemy
    then invalidates the whole pool, and that transaction is retried as any failed one is (the bus
    retries the message; nothing committed is lost), exactly as when the database goes away
    between the ping and the statement."""

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _back(_dbapi_conn, record) -> None:
        if record is not None:
            # record.info lives as long as this DBAPI connection (cleared when it is invalidated).
            record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy) -> None:
        since = record.info.get("idle_since")
        if since is not None and time.monotonic() - since < idle:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # The pool throws this connection away and checks out another (a fresh one, or an error
            # if the database does not answer).
            raise exc.DisconnectionError(f"connection failed its ping: {error}") from error


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def engine_of(sessions: sessionmaker[Session]) -> Engine:
    """The engine a `session_factory` is bound to: for statements that need a connection of their
    own and no Session around it (autocommit reads, the notifier's sending lock)."""
    bind = sessions.kw.get("bind")
    if not isinstance(bind, Engine):
        raise TypeError("the sessions are not bound to an engine (shared.db.session_factory binds them)")
    return bind


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; safe to call from several services at once."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    log.info("database schema is up to date")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@contextlib.contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session

"""Reading the database in tests: what a test asserts about stored state, in one place.

`db_count` and `query` take a URL (end-to-end tests: the services write, the test only reads);
`count` takes the test's own sessions (integration tests)."""

from __future__ import annotations

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shared.db import normalise_url


def db_count(url: str, sql: str) -> int:
    """The single number a `SELECT count(*) …` returns."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar_one()
    finally:
        engine.dispose()


def query(url: str, sql: str) -> list[tuple]:
    """Every row of a query, as plain tuples."""
    engine = create_engine(normalise_url(url))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def count(sessions: sessionmaker[Session], model: type) -> int:
    """How many rows a model's table holds."""
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0

"""shared/db/bulk.py against the real PostgreSQL: a batch's rows as one JSON document arrive as the
same values a VALUES list would store, serial keys come back in the rows' order, and the failures a
VALUES list has (a value too long, a duplicate) stay failures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.exc import DataError, IntegrityError

from shared.db import JSONType, UTCDateTime, make_engine
from shared.db.bulk import ROWS, in_order, recordset_insert, rows_document

pytestmark = pytest.mark.integration

metadata = MetaData()
things = Table("bulk_things", metadata,
               Column("id", Integer, primary_key=True, autoincrement=True),
               Column("key", String(8), nullable=False),
               Column("note", Text),
               Column("details", JSONType),
               Column("at", UTCDateTime()),
               Column("flag", Boolean),
               Column("score", Float),
               UniqueConstraint("key", name="uq_bulk_things_key"))
NAMES = ("key", "note", "details", "at", "flag", "score")
WARSAW = timezone(timedelta(hours=1))


@pytest.fixture
def engine(pg_url):
    engine = make_engine(pg_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def row(i: int, **extra) -> dict:
    return {"key": f"k{i}", "note": f"ünïcode \"quoted\" {{braces}} \\ {i}", "details": {"n": i, "tags": ["a", None]},
            "at": datetime(2026, 11, 23, 10, i, tzinfo=WARSAW), "flag": i % 2 == 0, "score": i / 3, **extra}


def test_rows_arrive_as_given_and_serials_come_back_in_their_order(engine) -> None:
    rows = [row(i) for i in range(20)]
    rows[3]["note"] = None
    with engine.begin() as conn:
        ids = in_order(conn.execute(recordset_insert(things, NAMES, returning=("id",), ordered=True),
                                    {ROWS: rows_document(rows)}).scalars().all())
        stored = {r.id: r for r in conn.execute(select(things))}
    assert len(ids) == 20
    for given, serial in zip(rows, ids, strict=True):
        got = stored[serial]
        assert (got.key, got.note, got.details, got.flag, got.score) == (
            given["key"], given["note"], given["details"], given["flag"], given["score"])
        assert got.at == given["at"] and got.at.tzinfo == UTC


def test_conflicts_are_skipped_only_when_asked(engine) -> None:
    with engine.begin() as conn:
        conn.execute(recordset_insert(things, NAMES), {ROWS: rows_document([row(1)])})
    with engine.begin() as conn:
        inserted = conn.execute(recordset_insert(things, NAMES, unique=("key",), returning=("key",)),
                                {ROWS: rows_document([row(1), row(2)])}).scalars().all()
    assert inserted == ["k2"]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(recordset_insert(things, NAMES), {ROWS: rows_document([row(3), row(2)])})


def test_a_value_too_long_fails_instead_of_being_cut(engine) -> None:
    with pytest.raises(DataError), engine.begin() as conn:
        conn.execute(recordset_insert(things, NAMES), {ROWS: rows_document([row(1, key="much-too-long")])})


def test_a_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        rows_document([row(1, at=datetime(2026, 11, 23, 10))])

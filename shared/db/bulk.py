"""Many rows in one INSERT on PostgreSQL, for the services' batch paths (the router's unit of work,
the notifier's claims): the rows go as one JSON document, INSERT … SELECT FROM
jsonb_to_recordset(:rows).

Why this shape: the statement's text is short and the same whatever the number of rows, so
SQLAlchemy compiles it once, psycopg converts it once (a multi-row VALUES of a 16-message batch is
too long for psycopg's query cache and was split with a regex on every batch) and PostgreSQL
prepares it once; and the rows are encoded by the json module's C encoder in one call, where an
array per column (INSERT … SELECT FROM unnest(:a, :b, …)) went through psycopg's Python list dumper,
element by element (~20 % of the router's CPU per message at batch 16).

Statements are built once: `recordset_insert` is an lru_cache builder keyed by what varies (table,
columns, conflict target, RETURNING), as the services' other parametrised statements are.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Insert, String, Table, Text, TypeDecorator, bindparam, func, select
from sqlalchemy import cast as cast_
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.schema import ScalarElementColumnDefault
from sqlalchemy.types import TypeEngine

#: The bound parameter of a recordset insert: the rows' JSON document (`rows_document`).
ROWS = "rows"
#: The column numbering the rows of an `ordered` insert (jsonb_array_elements … WITH ORDINALITY).
_ORDER = "ordinality"


@functools.lru_cache(maxsize=128)
def recordset_insert(table: Table, names: tuple[str, ...], *, unique: tuple[str, ...] | None = None,
                     returning: tuple[str, ...] = (), ordered: bool = False) -> Insert:
    """INSERT INTO table (names) SELECT … FROM jsonb_to_recordset(:rows) AS r(name type, …), with
    ON CONFLICT (unique) DO NOTHING when `unique` is given (else a conflict fails the INSERT, as in
    a VALUES list), RETURNING the `returning` columns.

    `ordered`: the rows are inserted in the document's order (… WITH ORDINALITY … ORDER BY), so a
    serial key takes ascending values in that order and the caller matches the keys RETURNING gives
    to its rows by sorting them (`in_order`), as SQLAlchemy's own "insertmanyvalues" does for such
    keys. The record's strings are unsized (text, not varchar(n)): a value too long for its column
    fails the INSERT, as in a VALUES list, instead of being cut by a cast."""
    document = cast_(bindparam(ROWS, type_=Text()), postgresql.JSONB)
    columns = [sql_column(name, _record_type(table.c[name])) for name in names]
    if ordered:
        # jsonb_to_recordset takes no WITH ORDINALITY beside its column list: the array's elements
        # numbered, each read as a record (a function in FROM sees the items before it: LATERAL).
        elements = func.jsonb_array_elements(document).table_valued("value", with_ordinality=_ORDER).render_derived()
        rows = func.jsonb_to_record(elements.c.value).table_valued(*columns, joins_implicitly=True) \
            .render_derived(with_types=True)
        source = select(*(rows.c[name] for name in names)).select_from(elements, rows).order_by(elements.c[_ORDER])
    else:
        rows = func.jsonb_to_recordset(document).table_valued(*columns).render_derived(with_types=True)
        source = select(*(rows.c[name] for name in names))
    statement = postgresql.insert(table).from_select(list(names), source)
    if unique is not None:
        statement = statement.on_conflict_do_nothing(index_elements=list(unique))
    return statement.returning(*(table.c[name] for name in returning)) if returning else statement


def _record_type(column: Column[Any]) -> TypeEngine[Any]:
    type_ = column.type
    if isinstance(type_, JSON):
        return postgresql.JSONB()
    if isinstance(type_, String):
        return Text()
    return type_.impl_instance if isinstance(type_, TypeDecorator) else type_


def recordset(name: str, columns: tuple[tuple[str, TypeEngine[Any]], ...]) -> Any:
    """A FROM item of the rows of the JSON document bound as `name` (`rows_document`): for a
    look-up by many keys, `(a, b) IN (SELECT a, b FROM <this>)`, one statement text whatever the
    number of keys, where an IN list of tuples is rendered again for every number of keys."""
    document = cast_(bindparam(name, type_=Text()), postgresql.JSONB)
    return func.jsonb_to_recordset(document).table_valued(
        *(sql_column(column, type_) for column, type_ in columns)).render_derived(with_types=True)


def rows_document(rows: Sequence[Mapping[str, Any]]) -> str:
    """The `rows` parameter of a recordset insert: the rows as one JSON array of objects, a key
    per column. An aware datetime goes as ISO 8601 (PostgreSQL reads its offset); a naive one is
    refused, as shared.db.UTCDateTime refuses it."""
    return json.dumps(rows, default=_json_value, separators=(",", ":"))


def _json_value(value: object) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; pass an aware one")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value a recordset insert writes")


def column_default(column: Column[Any]) -> Any:
    """What a column left out of a row gets: its scalar default (else NULL), as in a VALUES list."""
    default = column.default
    return default.arg if isinstance(default, ScalarElementColumnDefault) else None


def in_order(keys: Sequence[Any]) -> list[Any]:
    """The serial keys an `ordered` insert returned, in its rows' order."""
    return sorted(keys)

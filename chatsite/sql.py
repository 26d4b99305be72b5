"""Hand-written SQL helpers for queries the ORM makes slow.

`column IN (...)` over thousands of values costs the ORM a Python call per value to
prepare it (a credential re-check or a batch of pings over 10,000 sockets spent most
of an idle gateway's CPU there). On PostgreSQL the values go as one array parameter.

`RowReader` turns rows of hand-written SQL into model instances without a raw queryset,
which works out again for every query which columns it has and how to convert them.

`fetch_prepared` runs a statement prepared on the connection (PostgreSQL): Django binds
parameters on the client and never prepares, so a statement of several joins was planned
again on every call, which cost PostgreSQL more than running it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import psycopg
from django.conf import settings
from django.db import connection, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorDebugWrapper, CursorWrapper

M = TypeVar("M", bound=models.Model)
Converter = Callable[[Any, Any, BaseDatabaseWrapper], Any]


def any_of(column: str, values: Iterable[int] | Iterable[str]) -> tuple[str, list[Any]]:
    """Return the SQL condition `column` is one of `values`, and its parameters.

    PostgreSQL: `column = ANY(%s)` with the values as one array. Elsewhere (the embedded
    SQLite): `column IN (%s, ...)`, one placeholder a value. Never empty: no values
    gives a condition that is false.
    """
    items: list[Any] = list(values)
    if not items:
        return "FALSE", []
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [items]
    return f"{column} IN ({', '.join(['%s'] * len(items))})", items


def fetch_prepared(sql: str, params: Sequence[Any] | Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Run `sql` and return its rows; prepared on PostgreSQL, planned once.

    A parameter whose type PostgreSQL cannot infer from where it stands (a value in the
    SELECT list of an `INSERT ... SELECT`, one compared with NULL) needs a cast in `sql`.

    Through Django's cursor wrapper all the same (its error translation, query logging
    and a broken transaction's refusal), around a psycopg cursor with server-side binding
    that prepares what it runs. Elsewhere, or with `DB_PREPARED_STATEMENTS` off, a plain
    cursor.
    """
    if connection.vendor != "postgresql" or not settings.DB_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows: list[tuple[Any, ...]] = cursor.fetchall()
            return rows
    connection.ensure_connection()
    connection.validate_thread_sharing()
    with connection.wrap_database_errors:
        # Typed Any: django-stubs take the wrapped cursor for a Django wrapper already.
        raw: Any = _PreparedCursor(connection.connection)
    wrapped = (
        _PreparedDebugWrapper(raw, connection)
        if connection.queries_logged
        else connection.make_cursor(raw)
    )
    with wrapped as cursor:
        cursor.execute(sql, params)
        prepared: list[tuple[Any, ...]] = cursor.fetchall()
        return prepared


class _PreparedDebugWrapper(CursorDebugWrapper):
    """Django's query log, with the statement as written.

    A prepared statement has no text with its parameters in it, which Django's log asks
    psycopg for.
    """

    def execute(self, sql: Any, params: Any = None) -> Any:
        with self.debug_sql(sql, params):
            return CursorWrapper.execute(self, sql, params)


class _PreparedCursor(psycopg.Cursor[Any]):
    """A server-side binding cursor that prepares every statement it runs."""

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        return super().execute(query, params, **{**kwargs, "prepare": True})


class RowReader(Generic[M]):
    """Build `model` instances from rows that start with every concrete column, in order.

    `columns(alias)` is the SELECT list to write; the row may carry more values after
    them (`read` returns those apart). The backend's and the fields' converters (SQLite
    gives datetimes as text) are looked up once per database connection's vendor.
    """

    __slots__ = ("_attnames", "_converters", "model")

    def __init__(self, model: type[M]) -> None:
        """Read rows of `model`'s table."""
        self.model = model
        self._attnames = [f.attname for f in model._meta.concrete_fields]
        self._converters: dict[str, list[tuple[int, list[Converter], Any]]] = {}

    def columns(self, alias: str) -> str:
        """Return the SELECT list of every concrete column, qualified by `alias`."""
        quote = connection.ops.quote_name
        return ", ".join(f"{alias}.{quote(f.column)}" for f in self.model._meta.concrete_fields)

    def _converters_for(self, db: BaseDatabaseWrapper) -> list[tuple[int, list[Converter], Any]]:
        found = self._converters.get(db.vendor)
        if found is None:
            found = []
            table = self.model._meta.db_table
            for position, field in enumerate(self.model._meta.concrete_fields):
                column = field.get_col(table)
                converters = db.ops.get_db_converters(column) + column.get_db_converters(db)
                if converters:
                    found.append((position, converters, column))
            self._converters[db.vendor] = found
        return found

    def read(self, row: Sequence[Any]) -> tuple[M, Sequence[Any]]:
        """Return the instance the row's first values describe, and the values after them."""
        count = len(self._attnames)
        values = list(row[:count])
        for position, converters, column in self._converters_for(connection):
            value = values[position]
            for convert in converters:
                value = convert(value, column, connection)
            values[position] = value
        return self.model.from_db(connection.alias, self._attnames, values), row[count:]

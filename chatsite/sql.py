"""Hand-written SQL helpers for queries the ORM makes slow.

`column IN (...)` over thousands of values costs the ORM a Python call per value to
prepare it (a credential re-check or a batch of pings over 10,000 sockets spent most
of an idle gateway's CPU there). On PostgreSQL the values go as one array parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection


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

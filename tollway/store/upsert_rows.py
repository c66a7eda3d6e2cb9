"""Adds counter rows to a rollup table: INSERT … ON CONFLICT DO UPDATE SET c = c + excluded.c,
straight to the driver.

SQLAlchemy's executemany built parameters row by row (tens of µs a row, more than the
database's own work), and a batch touches a few thousand rollup rows across the full rollups,
the cube and the latency histograms. PostgreSQL gets one statement per table whatever the row
count (`SELECT * FROM unnest($1::type[], ...)`: one array per column, prepared once); SQLite a
multi-row VALUES built once per table and row count, values passed through each column's bind
processor (its DateTime text).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

MAX_PARAMS = 4000  # per statement: inside SQLite's 32,766 and PostgreSQL's 65,535

_SQL: dict[tuple[str, str, int], str] = {}
_PROCESSORS: dict[tuple[str, str], list[Callable[[Any], Any] | None]] = {}


def _sql(
    dialect: str,
    dollar: bool,
    table: Table,
    keys: Sequence[str],
    counters: Sequence[str],
    rows: int,
) -> str:
    found = _SQL.get((dialect, table.name, rows))
    if found is not None:
        return found
    width = len(keys) + len(counters)
    if dollar:
        groups = [
            "(" + ", ".join(f"${r * width + i + 1}" for i in range(width)) + ")"
            for r in range(rows)
        ]
    else:
        groups = ["(" + ", ".join("?" * width) + ")"] * rows
    sets = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in counters)
    found = _SQL[(dialect, table.name, rows)] = (
        f"INSERT INTO {table.name} ({', '.join([*keys, *counters])}) VALUES {', '.join(groups)}"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
    )
    return found


def _processors(conn: AsyncConnection, table: Table, names: Sequence[str]) -> list[Any]:
    found = _PROCESSORS.get((conn.dialect.name, table.name))
    if found is None:
        found = _PROCESSORS[(conn.dialect.name, table.name)] = [
            table.c[n].type._cached_bind_processor(conn.dialect) for n in names
        ]
    return found


def _pg_sql(
    conn: AsyncConnection, table: Table, keys: Sequence[str], counters: Sequence[str]
) -> str:
    found = _SQL.get(("pg", table.name, 0))
    if found is None:
        names = [*keys, *counters]
        arrays = ", ".join(
            f"${i}::{table.c[n].type.compile(conn.dialect)}[]" for i, n in enumerate(names, 1)
        )
        sets = ", ".join(f"{c} = {table.name}.{c} + excluded.{c}" for c in counters)
        found = _SQL[("pg", table.name, 0)] = (
            f"INSERT INTO {table.name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
            f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sets}"
        )
    return found


async def add_rows(
    conn: AsyncConnection,
    table: Table,
    keys: Sequence[str],
    counters: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Upsert `rows` (each: the key columns' values, then the counters'), adding the counters
    to a row that exists. Callers pass rows sorted, so concurrent writers lock in one order."""
    if not rows:
        return
    names = [*keys, *counters]
    if conn.dialect.name == "postgresql":
        columns = tuple(list(col) for col in zip(*rows, strict=True))
        await conn.exec_driver_sql(_pg_sql(conn, table, keys, counters), columns)
        return
    processors = _processors(conn, table, names)
    dollar = conn.dialect.paramstyle in ("numeric_dollar", "format_dollar")
    per = max(1, MAX_PARAMS // len(names))
    for start in range(0, len(rows), per):
        chunk = rows[start : start + per]
        params: list[Any] = []
        for row in chunk:
            for value, processor in zip(row, processors, strict=True):
                params.append(processor(value) if processor and value is not None else value)
        sql = _sql(conn.dialect.name, dollar, table, keys, counters, len(chunk))
        await conn.exec_driver_sql(sql, tuple(params))

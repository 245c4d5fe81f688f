"""Where a table's pieces live in the DuckDB file, and the few SQL helpers every room shares.

Every other storage module reaches the catalog through these functions, so the rules about names
(user tables in ``main``, looked up case-insensitively as DuckDB does; the raw rows of a fetch in
``main.__mp_raw_<name>``; its statistics in ``_mp.stats_<name>``) are written down once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import duckdb

from .naming import quote_ident

RAW_PREFIX = "__mp_raw_"
"""A fetch writes into ``main.__mp_raw_<name>``; in the usual case finalize renames it to ``name``."""


def now() -> datetime:
    """UTC without a zone: what the bookkeeping TIMESTAMP columns hold."""
    return datetime.now(UTC).replace(tzinfo=None)


def row(
    conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None
) -> tuple[Any, ...] | None:
    """First row or None. Reads every row: duckdb 2 refuses new work on a half-read result."""
    rows = conn.execute(sql, params).fetchall()
    return tuple(rows[0]) if rows else None


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    found = row(conn, sql, params)
    return None if found is None else found[0]


def unregister(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered Arrow view without masking the error that is being raised.

    After an interrupt inside a transaction DuckDB refuses any statement ("transaction is
    aborted"), unregister included; the rollback that follows drops the view anyway.
    """
    with suppress(duckdb.Error):
        conn.unregister(name)


def sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """``conn`` inside BEGIN/COMMIT, rolled back on any exception (interrupts included).

    BEGIN and COMMIT sit inside the ``try``: a Ctrl-C that lands just after BEGIN returned, or
    during COMMIT, must not leave a transaction open for the next one to trip over ("cannot start
    a transaction within a transaction"). The ROLLBACK never masks the error being raised.
    """
    try:
        conn.execute("BEGIN TRANSACTION")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        with suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise


def raw_table(name: str) -> str:
    return "main." + quote_ident(RAW_PREFIX + name.lower())


def stats_table(name: str) -> str:
    return "_mp." + quote_ident("stats_" + name.lower())


def user_table(name: str) -> str:
    return "main." + quote_ident(name)


def table_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Is there a user table ``name`` (any case)?"""
    return table_name(conn, name) is not None


def table_name(conn: duckdb.DuckDBPyConnection, name: str) -> str | None:
    """The user table's own spelling of ``name`` (DuckDB names are case-insensitive), or None."""
    found = scalar(
        conn,
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND NOT temporary AND lower(table_name) = lower(?)",
        [name],
    )
    return None if found is None else str(found)


def raw_exists(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        scalar(
            conn,
            "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main' AND table_name = ?",
            [RAW_PREFIX + name.lower()],
        )
    )


def columns_of(conn: duckdb.DuckDBPyConnection, name: str) -> list[str]:
    """The user table's columns in table order."""
    rows = conn.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND lower(table_name) = lower(?) ORDER BY column_index",
        [name],
    ).fetchall()
    return [str(r[0]) for r in rows]


def raw_columns(conn: duckdb.DuckDBPyConnection, name: str) -> dict[str, str]:
    """The raw table's columns and their types, in table order."""
    rows = conn.execute(
        "SELECT column_name, data_type FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index",
        [RAW_PREFIX + name.lower()],
    ).fetchall()
    return {str(r[0]): str(r[1]) for r in rows}

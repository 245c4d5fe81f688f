"""Opening a workspace file: a DuckDB database or nothing, one engine per file per process.

DuckDB opens a CSV or Parquet file given as a database path as a read-only view of it, so a
mistyped path would quietly become a "workspace" holding one odd table: files are checked for
DuckDB's header first. Two engines on one file in one process would share DuckDB's database
instance but not the engine's lock and bookkeeping, so the second is refused; a file another
process holds (a second notebook kernel) is reported with the holder's PID.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import duckdb

from ..exceptions import (
    NotADatabaseError,
    StorageError,
    WorkspaceInUseError,
    WorkspaceLockedError,
)
from .naming import quote_ident

_MAGIC = b"DUCK"
_MAGIC_OFFSET = 8  # after the 8-byte checksum of the first header block
_HOLDER_PID = re.compile(r"\(PID (\d+)\)")

ROW_GROUP_SIZE = 16_384
"""Rows per row group in a workspace file (DuckDB's default is 122,880).

A checkpoint rewrites the row group still being filled, so with the default one a fetch's
automatic checkpoints recompressed up to 122,880 rows each time (0.1-0.7 s on the writer
thread, growing with the table); and a scan runs one thread per row group, so a whole
100,000-profile table was read by one core. Eight times smaller groups bound the first and let
`table()` use every core. DuckDB keeps in-memory databases at its default: there the option
is not honoured."""

IN_MEMORY_ROW_GROUP_SIZE = 122_880
"""DuckDB's own row-group size, which an in-memory database keeps."""


def row_group_size(conn: duckdb.DuckDBPyConnection) -> int:
    """Rows per row group of new tables in the connection's current database."""
    found = conn.execute(
        "SELECT path IS NULL FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return IN_MEMORY_ROW_GROUP_SIZE if found is None or found[0] else ROW_GROUP_SIZE


IN_MEMORY_CHECKPOINT_THRESHOLD = "128MB"
"""When an in-memory workspace compresses what a fetch appended (DuckDB's default: 16 MB).

In memory, a checkpoint only compresses: nothing is written anywhere. With the default, a
100,000-profile fetch stopped to compress its still-growing table once or twice (0.5 s of writer
time and a transient copy of the uncompressed rows), and a late property's column then made
finalize copy the table uncompressed anyway. At 128 MB no fetch of up to 400,000 profiles stopped
to compress: 100,000 profiles took 2.5-2.6 s instead of 3.1-4.6 s, 200,000 took 4.8-6.3 s instead
of 7.4-9.1 s, and 400,000 13 s instead of 25 s. The price is memory: the table stays
uncompressed, about 1.2 KB a profile instead of 0.3 KB, so the fetch itself peaks higher (400,000
profiles: 1.17 GB instead of 0.91 GB), though no higher than reading the table into a DataFrame
does in either case (1.24 GB). A workspace file has its own threshold, `FILE_CHECKPOINT_THRESHOLD`."""

FILE_CHECKPOINT_THRESHOLD = "64MB"
"""When a workspace file moves what a fetch appended from its write-ahead log into the file.

With DuckDB's default (16 MB) a 100,000-profile fetch stopped six times to compress its raw rows
(0.15-0.85 s each, on the writer thread), rows that finalize then copies into the typed table and
drops whenever a property appeared after the first page, as in most real fetches: that fetch took
5.2-6.6 s. At 64 MB it took 4.1-4.9 s and left a 56 MB file instead of 69 MB, its peak memory the
same (200,000 profiles: 495 MiB, 426 MiB under a 512 MB cap, against 494 and 437 MiB). At 128 MB
a fetch was faster still (3.4-4.8 s) but 200,000 profiles peaked at 559 MiB, nearly twice what
20,000 need; the log's appended rows wait in memory for the checkpoint. A crash meanwhile loses
nothing committed: the log is replayed when the file is next opened."""

# Names an attached file cannot take: the connection's own databases and schemas.
_RESERVED = frozenset({"memory", "system", "temp", "main"})

_open_lock = threading.Lock()
_open_paths: set[Path] = set()

Config = dict[str, str | bool | int | float | list[str]]


def _check_is_database(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_file():
        raise NotADatabaseError(str(path))
    try:
        with path.open("rb") as handle:
            head = handle.read(_MAGIC_OFFSET + len(_MAGIC))
    except OSError as exc:
        raise StorageError(f"cannot read workspace {str(path)!r}: {exc.strerror}") from exc
    if head[_MAGIC_OFFSET:] != _MAGIC:
        raise NotADatabaseError(str(path))


def open_database(
    path: Path | None, config: Config
) -> tuple[duckdb.DuckDBPyConnection, Path | None]:
    """(connection, the resolved path it holds in the registry); release it with `release`.

    Each kind of workspace gets its own checkpoint threshold here (a caller's ``config`` wins).
    """
    threshold = IN_MEMORY_CHECKPOINT_THRESHOLD if path is None else FILE_CHECKPOINT_THRESHOLD
    config = {"checkpoint_threshold": threshold, **config}
    if path is None:
        try:
            return duckdb.connect(":memory:", config=config), None
        except duckdb.Error as exc:
            raise StorageError(f"cannot open an in-memory DuckDB database: {exc}") from exc
    resolved = path.expanduser().resolve()
    _check_is_database(resolved)
    with _open_lock:
        if resolved in _open_paths:
            raise WorkspaceInUseError(str(path))
        try:
            conn = _attach(resolved, config)
        except duckdb.IOException as exc:
            text = str(exc)
            if "Could not set lock" in text:
                found = _HOLDER_PID.search(text)
                raise WorkspaceLockedError(
                    str(path), int(found.group(1)) if found else None
                ) from None
            raise StorageError(f"cannot open DuckDB database {str(path)!r}: {text}") from exc
        except duckdb.Error as exc:
            raise StorageError(f"cannot open DuckDB database {str(path)!r}: {exc}") from exc
        _open_paths.add(resolved)
    return conn, resolved


def _attach(path: Path, config: Config) -> duckdb.DuckDBPyConnection:
    """The file as the connection's default database, under the name DuckDB itself would give
    it (the file's stem), with `ROW_GROUP_SIZE`; only ATTACH takes that option."""
    conn = duckdb.connect(":memory:", config=config)
    try:
        alias = quote_ident(path.stem if path.stem.lower() not in _RESERVED else "workspace")
        literal = "'" + str(path).replace("'", "''") + "'"
        conn.execute(f"ATTACH {literal} AS {alias} (ROW_GROUP_SIZE {ROW_GROUP_SIZE})")
        conn.execute(f"USE {alias}")
    except BaseException:
        conn.close()
        raise
    return conn


def release(resolved: Path | None) -> None:
    """The engine holding ``resolved`` closed: another may open the file."""
    if resolved is None:
        return
    with _open_lock:
        _open_paths.discard(resolved)

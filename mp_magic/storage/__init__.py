"""The DuckDB storage engine: pages typed as they arrive, one writer, tables renamed into place.

Write path
----------
A fetch worker hands each page's body to a transform thread, which parses it once in DuckDB
(``pages.transform_page``): its structure, and one query splitting out the profiles and reading
every property as the type this page alone suggests. The ONE writer (``writer``) merges the page's
type statistics, converts columns when a page widens a type (the rows already written are cast, or
re-read from their JSON), and appends to ``main.__mp_raw_<name>``. ``finalizer`` then renames that
table into place when it already has the final layout (pages written in page order, every property
seen on the first page: the usual sequential fetch); otherwise it copies it once into the layout
below, and rebuilds from the JSON when profiles repeat (several sessions) or when appending.
``ledger`` keeps the bookkeeping (``metadata`` the TableMetadata it stores), ``reader`` the read
side, ``opening`` the checks on a workspace file (and its 16,384-row groups, see
``opening.ROW_GROUP_SIZE``), ``engine`` the facade and its lock.

Typed table layout
------------------
After ``finalize`` a profile table has, in this order, whatever order the pages arrived in:

* ``distinct_id`` VARCHAR
* ``last_seen`` TIMESTAMP, from ``$last_seen`` (which gets no column of its own); absent when
  ``output_properties`` leave ``$last_seen`` out (an append keeps it if the table had it)
* ``group_key`` VARCHAR, only for group-profile fetches (the query's ``group_id``)
* one typed column per top-level property, in the naming rule's order
* ``properties`` JSON, the original ``$properties`` object, so nothing is lost, always last.

Rows are in the API's order: page, then position in the page (also after a parallel fetch). An
append keeps the existing rows first and adds the new profiles after them in API order; a profile
fetched again is one row, at its newest position, holding the union of its properties (the latest
value wins where both copies have one). ``TableMetadata.column_map`` lists the property columns in
table order; ``TableMetadata.queries`` every query whose profiles the table holds.

In a DataFrame (``table``, ``sql``) a missing value reads as ``<NA>``: integers are ``Int64``,
doubles ``Float64``, booleans ``boolean``, strings and JSON ``string``; timestamps are
``datetime64`` (missing: NaT) and lists Arrow-backed lists whose values read as Python lists
(missing: ``<NA>``).

Types are inferred inside DuckDB over every value: all integers → BIGINT; numbers → DOUBLE;
booleans → BOOLEAN; strings that all match ``YYYY-MM-DDTHH:MM:SS`` → TIMESTAMP; other strings →
VARCHAR; lists → VARCHAR[] / BIGINT[] / DOUBLE[] / BOOLEAN[] when the elements agree (VARCHAR[] when
every list is empty), else JSON[]; objects → JSON; values of different types (5 here, "n/a" there),
integers beyond BIGINT, or only nulls → JSON, which keeps every value exactly. A missing property
(or a JSON null) is NULL. With ``output_properties`` only the asked-for properties get columns.

Column naming rule
------------------
1. ``distinct_id``, ``last_seen``, ``group_key`` and ``properties`` are reserved for the fixed
   columns.
2. A property's candidate name is its name without one leading ``$``, with every character outside
   ``[A-Za-z0-9_]`` replaced by ``_``, prefixed with ``_`` if it starts with a digit, and
   ``property`` if nothing is left.
3. Names are assigned in this order: custom properties (no leading ``$``) sorted by name, then
   ``$`` properties sorted by name.
4. A property takes its candidate unless that name is already taken (compared case-insensitively,
   as DuckDB identifiers are); then a ``$`` property tries ``mp_<candidate>``; then
   ``<candidate>_2``, ``<candidate>_3``, … until a free name is found.

So ``$email`` and a custom ``email`` both survive: ``email`` ← ``email``, ``mp_email`` ←
``$email``. ``TableMetadata.column_map`` maps every property column to its original property name.
Names are a function of the table's set of property names, so an append that brings a new property
can rename an existing column (e.g. a custom ``email`` arriving pushes ``$email`` to ``mp_email``).

Bookkeeping (schema ``_mp``)
----------------------------
``_mp.fetches`` (one row per table: status, mode, query, plan, run number), ``_mp.pages`` (page
done/failed markers of the current run), ``_mp.tables`` (the TableMetadata JSON of the last
finalize) and ``_mp.stats_<name>`` (per-page type statistics of an unfinished fetch). The rows
of an unfinished fetch are in ``main.__mp_raw_<name>`` (kept for resume; `tables()` does not list
it, and table names starting with ``__mp_`` are refused). ``_mp`` is created by the first write,
so reading a DuckDB file of one's own (tables, SQL) leaves it untouched, and recreated by the next
write if it was dropped.

Workspace files
---------------
A workspace path is a DuckDB database or a path that does not exist yet; any other file (a CSV,
a Parquet file, which DuckDB would open as views) is refused. One engine per file per process;
a file another process holds is refused naming that process. Table names are case-insensitive
(``BASE`` is the existing ``base``, which keeps its spelling) and may not be a name of DuckDB's
own catalog (``duckdb_tables``, ``sqlite_master``, ``pg_catalog``, ...).
"""

from __future__ import annotations

from .engine import FetchMode, FetchState, StorageEngine
from .naming import FIXED_COLUMNS, assign_columns, candidate, validate_table_name
from .pages import PageBatch
from .schema import DATETIME_PATTERN

__all__ = [
    "DATETIME_PATTERN",
    "FIXED_COLUMNS",
    "FetchMode",
    "FetchState",
    "PageBatch",
    "StorageEngine",
    "assign_columns",
    "candidate",
    "validate_table_name",
]

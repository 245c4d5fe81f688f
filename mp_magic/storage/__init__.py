"""The DuckDB storage engine: pages typed as they arrive, one writer, tables renamed into place.

Write path
----------
A fetch worker hands each page's body to a transform thread, which parses it once in DuckDB
(``pages.transform_page``): its structure, and one query splitting out the profiles and reading
every property as the type this page alone suggests. The ONE writer merges the page's type
statistics, converts columns when a page widens a type (the rows already written are cast, or re-read
from their JSON), and appends to ``main.__mp_raw_<name>``. Finalize then renames that table into
place; it only rebuilds from the JSON when profiles repeat (several sessions) or when appending.

Typed table layout
------------------
After ``finalize`` a profile table has, in this order:

* ``distinct_id`` VARCHAR
* ``last_seen`` TIMESTAMP, from ``$last_seen`` (which gets no column of its own)
* ``group_key`` VARCHAR, only for group-profile fetches (the query's ``group_id``)
* one typed column per top-level property on the first page written, in the naming rule's order
* ``properties`` JSON, the original ``$properties`` object, so nothing is lost
* one typed column per property first seen on a later page (newer properties, usually), in the
  naming rule's order.

A table rebuilt from the JSON (append, repeated profiles) has every property column before
``properties``. ``TableMetadata.column_map`` lists the property columns in table order.

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
it, and table names starting with ``__mp_`` are refused).
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

"""The DuckDB storage engine: raw page writes during a fetch, typed wide tables after it.

Typed table layout
------------------
After ``finalize`` a profile table has, in this order:

* ``distinct_id`` VARCHAR
* ``last_seen`` TIMESTAMP, from ``$last_seen`` (which gets no column of its own)
* ``group_key`` VARCHAR, only for group-profile fetches (the query's ``group_id``)
* one typed column per top-level property found in any page (the union over all pages)
* ``properties`` JSON, the original ``$properties`` object, so nothing is lost.

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
finalize) and ``_mp.raw_<name>`` (rows written by an unfinished fetch, kept for resume).
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

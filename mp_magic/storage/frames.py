"""Arrow → pandas with nullable dtypes, so a BIGINT column with NULLs stays integer.

DuckDB hands results over as Arrow; the mapping below turns integers into pandas' nullable ``Int*``,
doubles into ``Float64``, booleans into ``boolean`` and strings (VARCHAR and JSON) into the
``string`` dtype, so a missing value reads as ``<NA>`` in every one of them (a plain ``float64``
would show NaN beside the ``<NA>`` of the others). Timestamps stay ``datetime64`` (missing: NaT,
pandas' only missing value for them). Lists stay Arrow lists (``pd.ArrowDtype``): each value reads
as a Python list, a missing one as ``<NA>``, and ``Series.list`` works on them; DuckDB's Arrow
buffers are taken as they are, where an ``object`` column built a NumPy array per row (the
slowest column of a 100,000-profile table to convert).
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa

_INTS: dict[Any, Any] = {
    pa.int8(): pd.Int8Dtype(),
    pa.int16(): pd.Int16Dtype(),
    pa.int32(): pd.Int32Dtype(),
    pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(),
    pa.uint16(): pd.UInt16Dtype(),
    pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(),
}


def _types_mapper(arrow_type: pa.DataType) -> Any:
    if arrow_type in _INTS:
        return _INTS[arrow_type]
    if pa.types.is_floating(arrow_type):
        return pd.Float32Dtype() if arrow_type == pa.float32() else pd.Float64Dtype()
    if pa.types.is_boolean(arrow_type):
        return pd.BooleanDtype()
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return pd.StringDtype()
    if isinstance(arrow_type, pa.ExtensionType) and pa.types.is_string(arrow_type.storage_type):
        return pd.StringDtype()
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pd.ArrowDtype(arrow_type)
    return None


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """The DataFrame every read method returns."""
    frame: pd.DataFrame = table.to_pandas(types_mapper=_types_mapper)
    return frame

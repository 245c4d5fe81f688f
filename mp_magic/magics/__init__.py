"""The IPython magics (``%load_ext mp_magic``), one job per module.

`core` holds the `MpMagic` class and the extension entry points, `profiles` what ``%mp_profiles``
does with its line, `cell_body` the ``%%mp_profiles`` ``name: value`` grammar, `substitution` the
``{name}`` rules, `parsing` the magic lines' argument spec and error lines, `summary` the line a
fetch leaves behind.
"""

from __future__ import annotations

from .cell_body import CELL_BODY_HELP, BodyValue, parse_cell_body
from .core import (
    CELL_MAGICS,
    LINE_MAGICS,
    MpMagic,
    load_ipython_extension,
    unload_ipython_extension,
)
from .parsing import build_profiles_parser
from .substitution import substitute
from .summary import EMULATOR_SOURCE, summary_line

__all__ = [
    "CELL_BODY_HELP",
    "CELL_MAGICS",
    "EMULATOR_SOURCE",
    "LINE_MAGICS",
    "BodyValue",
    "MpMagic",
    "build_profiles_parser",
    "load_ipython_extension",
    "parse_cell_body",
    "substitute",
    "summary_line",
    "unload_ipython_extension",
]

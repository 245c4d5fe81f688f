"""The built-in Engage emulator: a local, deterministic stand-in for Mixpanel's Query Profiles API.

With no credentials configured, the whole product (demos, Binder, tests, benchmarks) talks to this
server, so it follows the documented Engage protocol closely (see docs/architecture.md and the
protocol notes) and can script the faults a real client meets. It imports nothing from the rest of
mp_magic::

    from mp_magic.emulator import EmulatorConfig, EngageEmulator, Fault

    with EngageEmulator(EmulatorConfig(profiles=2500, seed=7)) as emu:
        ...  # POST emu.url + "/api/query/engage" with Basic auth emu.username:emu.secret
        emu.advance(3600); emu.touch(5); emu.add_profiles(3)  # time moves, data changes
        emu.stats.pages_by_endpoint  # {"engage": ..., "engage/properties": ..., ...}

Rooms: `server` (the facade and routing), `transport` (HTTP, bounded bodies), `request`
(parsing and validation), `auth`, `limits` (429s), `faults`, `sessions`, `selection`, `live`
(the clock and changed profiles), `metadata` (engage/properties, cohorts/list), `stats`,
`data`/`data_words` (generated profiles), `where_tokens`/`where_values`/`where` (expressions).
"""

from __future__ import annotations

from .config import EmulatorConfig, Fault, FaultKind
from .data import Dataset
from .server import ENDPOINTS, ENGAGE_PATHS, EmulatorStats, EngageEmulator
from .where import UNDEFINED, CompiledWhere, WhereSyntaxError, compile_where

__all__ = [
    "ENDPOINTS",
    "ENGAGE_PATHS",
    "UNDEFINED",
    "CompiledWhere",
    "Dataset",
    "EmulatorConfig",
    "EmulatorStats",
    "EngageEmulator",
    "Fault",
    "FaultKind",
    "WhereSyntaxError",
    "compile_where",
]

"""Helpers shared by the client tests (a plain module: conftest is not for importing)."""

from __future__ import annotations

from typing import Any

from mp_magic.config import Credentials, Secret, Settings

# A secret nobody would type: the leak tests search every output for it.
LEAKY_SECRET = "Zq9-very-secret-7Hx2Kp"

# Fast retries: the policy is the same, the waits are milliseconds.
FAST = {
    "backoff_base": 0.02,
    "backoff_cap": 0.1,
    "max_attempts": 3,
    "connect_timeout": 2.0,
    "read_timeout": 5.0,
}


def stat(emu: Any, key: str) -> int:
    """A counter from ``emu.stats`` (a mapping or an object with attributes)."""
    stats = emu.stats
    if callable(stats):
        stats = stats()
    if isinstance(stats, dict):
        return int(stats.get(key, 0))
    return int(getattr(stats, key, 0))


def settings_for(emu: Any, *, secret: str | None = None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"api_url": emu.url, **FAST, **overrides}
    return Settings(
        credentials=Credentials(emu.username, Secret(secret or emu.secret), emu.project_id),
        **values,
    )

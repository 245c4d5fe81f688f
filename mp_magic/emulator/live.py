"""The project as it is now: the generated dataset plus what happened since (the emulator's time).

The generated `Dataset` is shared between emulators and read-only, so the changes one emulator
makes (`touch`: profiles seen again, `add_profiles`: new sign-ups) live here, per emulator, as
an overlay. Everything is deterministic from the seed and the sequence of calls, so a test can
show an incremental update: "after touch(5), where $last_seen >= T selects exactly those 5".
"""

from __future__ import annotations

import threading
import time
from typing import Any

from .data import Dataset, mix64

__all__ = ["EPOCH", "LiveData", "iso"]

EPOCH = 1_767_225_600
"""The emulator's clock starts at 2026-01-01T00:00:00 (UTC), after every generated $last_seen."""


def iso(ts: int) -> str:
    """Unix seconds as the API writes datetimes: ``YYYY-MM-DDTHH:MM:SS``, no zone."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


class LiveData:
    """User profiles by index (server order): generated ones, changed ones, then added ones."""

    def __init__(self, base: Dataset) -> None:
        self.base = base
        self._lock = threading.Lock()
        self._changed: dict[int, dict[str, Any]] = {}
        self._added: list[dict[str, Any]] = []
        self._added_created: list[int] = []
        self._added_index: dict[str, int] = {}
        self._created: tuple[int, list[int]] | None = None
        self.now = EPOCH
        self.version = 0
        """Bumped on every change: selections cached for an older version are stale."""
        self._rounds = 0

    @property
    def size(self) -> int:
        return self.base.size + len(self._added)

    def profile(self, index: int) -> dict[str, Any]:
        changed = self._changed.get(index)
        if changed is not None:
            return changed
        if index < self.base.size:
            return self.base.profile(index)
        return self._added[index - self.base.size]

    def page(self, start: int, stop: int) -> list[dict[str, Any]]:
        stop = min(stop, self.size)
        base_stop = min(stop, self.base.size)
        out = self.base.page(start, base_stop) if start < base_stop else []
        if stop > base_stop:
            first = max(start, base_stop) - self.base.size
            out.extend(self._added[first : stop - self.base.size])
        if self._changed:
            changed = self._changed
            for j, i in enumerate(range(start, stop)):
                p = changed.get(i)
                if p is not None:
                    out[j] = p
        return out

    @property
    def created(self) -> list[int]:
        """``$created`` of every profile as Unix seconds (for as_of_timestamp)."""
        cached = self._created
        if cached is not None and cached[0] == self.version:
            return cached[1]
        created = [*self.base.created, *self._added_created]
        self._created = (self.version, created)
        return created

    def index_of(self, distinct_id: str) -> int | None:
        found = self.base.index_of(distinct_id)
        return found if found is not None else self._added_index.get(distinct_id)

    # ------------------------------------------------------------------ time
    def advance(self, seconds: float) -> int:
        if seconds < 0:
            raise ValueError("advance(seconds): the clock only moves forward; give seconds >= 0")
        with self._lock:
            self.now += int(seconds)
            return self.now

    def touch(self, count: int) -> list[str]:
        """``count`` distinct existing profiles are seen again now: ``$last_seen`` becomes now,
        ``logins`` grows and ``ltv`` moves; which ones, and by how much, follows from the seed."""
        if count < 0:
            raise ValueError("touch(count): give a count >= 0")
        with self._lock:
            size = self.size
            if count > size:
                raise ValueError(f"touch(count): only {size} profiles exist; give at most {size}")
            self._rounds += 1
            seed, rounds = self.base.seed, self._rounds
            picked: list[int] = []
            seen: set[int] = set()
            j = 0
            while len(picked) < count:
                i = mix64(seed, 7919, rounds, j) % size
                j += 1
                if i not in seen:
                    seen.add(i)
                    picked.append(i)
            now = iso(self.now)
            ids = []
            for i in sorted(picked):
                old = self.profile(i)
                props = dict(old["$properties"])
                h = mix64(seed, rounds, i)
                props["$last_seen"] = now
                props["logins"] = _as_int(props.get("logins")) + 1 + h % 5
                props["ltv"] = round(_as_float(props.get("ltv")) + (h >> 8) % 5000 / 100, 2)
                self._changed[i] = {"$distinct_id": old["$distinct_id"], "$properties": props}
                ids.append(old["$distinct_id"])
            self.version += 1
            return ids

    def add_profiles(self, count: int) -> list[str]:
        """``count`` new profiles sign up now (``$created`` = ``$last_seen`` = now), after the
        existing ones in server order; their other properties follow from the seed."""
        if count < 0:
            raise ValueError("add_profiles(count): give a count >= 0")
        with self._lock:
            now_text, base, seed = iso(self.now), self.base, self.base.seed
            ids = []
            for _ in range(count):
                i = self.size
                did = f"user_{i:06d}"
                props: dict[str, Any]
                if base.size:
                    template = base.profile(mix64(seed, 104729, i) % base.size)["$properties"]
                    props = dict(template)
                    if "$email" in props:
                        local, _, domain = str(props["$email"]).partition("@")
                        props["$email"] = f"{local.rstrip('0123456789')}{i}@{domain}"
                else:
                    props = {"$name": f"New user {i}"}
                props["$created"] = now_text
                props["$last_seen"] = now_text
                props["logins"] = 1
                self._added.append({"$distinct_id": did, "$properties": props})
                self._added_created.append(self.now)
                self._added_index[did] = i
                ids.append(did)
            self.version += 1
            return ids


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _as_float(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0

"""Which profiles a query selects, in server order, and the slices served from that selection.

Selecting means scanning every profile with the compiled `where`, so a selection is cached per
query key (not per page): the 200 pages of one session, and the next session for the same
query, reuse one scan.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import GroupSet
from .live import LiveData
from .request import Query
from .where import truthy

__all__ = ["BEHAVIORS_CACHE_LIMIT", "Selection", "Selector", "project"]

BEHAVIORS_CACHE_LIMIT = 1000
"""Behaviors over more than this many profiles need as_of_timestamp to page past page 0."""
_CACHE_SIZE = 32
GHOST = 1 << 40
"""Selection indexes from here on name cohort members without a profile (``ghosts[i - GHOST]``),
clear of every real profile index however many profiles are added."""


@dataclass(frozen=True)
class Selection:
    """The profiles a query matched, in server order: indexes into the user (or group) profiles;
    an index >= GHOST names a cohort member without a profile (``ghosts[index - GHOST]``)."""

    indices: Sequence[int]
    ghosts: Sequence[str]
    group: GroupSet | None
    uncached: bool

    def __len__(self) -> int:
        return len(self.indices)

    def profiles(self, data: LiveData, start: int, stop: int) -> list[dict[str, Any]]:
        idx = self.indices[start:stop]
        if self.group is not None:
            gp = self.group.profiles
            return [gp[i] for i in idx]
        if isinstance(idx, range) and idx.step == 1:
            return data.page(idx.start, idx.stop)
        ghosts, profile = self.ghosts, data.profile
        return [
            profile(i) if i < GHOST else {"$distinct_id": ghosts[i - GHOST], "$properties": {}}
            for i in idx
        ]


class Selector:
    """Computes selections over the live data and keeps the last few (LRU) by query key and
    data version (a change to the data makes older selections stale; sessions keep theirs)."""

    def __init__(self, data: LiveData) -> None:
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[Any, ...], Selection] = OrderedDict()
        self.data = data

    def select(self, query: Query) -> Selection:
        key = (self.data.version, query.key)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        selection = self._compute(query)
        with self._lock:
            self._cache[key] = selection
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return selection

    def _compute(self, query: Query) -> Selection:
        ds = self.data
        group = query.group
        size = len(group.profiles) if group is not None else ds.size
        candidates: Sequence[int]
        ghosts: Sequence[str] = ()
        if query.distinct_ids is not None:
            wanted = set(query.distinct_ids)
            found: set[int] = set()
            for did in wanted:
                i = group.index.get(did) if group is not None else ds.index_of(did)
                if i is not None:
                    found.add(i)
            candidates = sorted(found)
        else:
            wanted = set()
            candidates = range(size)
        if query.cohort is not None:
            members = query.cohort.members
            if query.distinct_ids is not None:
                member_set = set(members)
                candidates = [i for i in candidates if i in member_set]
            else:
                candidates = members
            if query.include_all_users:
                ghosts = query.cohort.ghost_ids
                if query.distinct_ids is not None:
                    ghosts = [g for g in ghosts if g in wanted]
        if query.as_of is not None:
            created = group.created if group is not None else ds.created
            as_of = query.as_of
            candidates = [i for i in candidates if created[i] <= as_of]
        where = query.where
        if where is not None:
            ev = where.evaluator
            bc = ds.base.behavior_count
            if group is not None:
                gp = group.profiles
                candidates = [i for i in candidates if truthy(ev(gp[i]["$properties"], i, bc))]
            else:
                profile = ds.profile
                candidates = [i for i in candidates if truthy(ev(profile(i)["$properties"], i, bc))]
            if ghosts:
                base = ds.base.size  # ghosts' behaviors as before profiles were added
                empty: dict[str, Any] = {}
                ghosts = [g for j, g in enumerate(ghosts) if truthy(ev(empty, base + j, bc))]
        indices: Sequence[int] = candidates
        if ghosts:
            indices = [*candidates, *range(GHOST, GHOST + len(ghosts))]
        uncached = (
            query.behaviors is not None
            and query.as_of is None
            and len(indices) > BEHAVIORS_CACHE_LIMIT
        )
        return Selection(indices, ghosts, group, uncached)


def project(profiles: list[dict[str, Any]], keep: tuple[str, ...] | None) -> list[dict[str, Any]]:
    if keep is None:
        return profiles
    out = []
    for p in profiles:
        props = p["$properties"]
        out.append(
            {
                "$distinct_id": p["$distinct_id"],
                "$properties": {k: props[k] for k in keep if k in props},
            }
        )
    return out

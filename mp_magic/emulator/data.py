"""Deterministic synthetic profiles: users, group profiles, cohorts and behavior counts.

Everything derives from the seed through ``random.Random(seed)`` (whose ``random()`` stream is the
same on every platform and Python version; no ``randrange``/``choice``, whose algorithms have
changed) and a splitmix64 hash (no ``hash()``, which is salted per process). A dataset is generated
lazily, in chunks of 1024 profiles each from its own stream (so the first page of a 200,000-profile
project is served without building the rest), each chunk once, and shared
between emulators with the same shape (`get_dataset`), so a benchmark's 200,000 profiles are built
once per process. Profiles are plain dicts in the exact shape
served (``{"$distinct_id": ..., "$properties": {...}}``) so a page is one ``orjson.dumps``; treat
them as read-only.
"""

from __future__ import annotations

import contextlib
import gc
import random
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .data_words import (
    BROWSERS as _BROWSERS,
)
from .data_words import (
    DOMAINS as _DOMAINS,
)
from .data_words import (
    FIRST as _FIRST,
)
from .data_words import (
    INDUSTRIES as _INDUSTRIES,
)
from .data_words import (
    LANGS as _LANGS,
)
from .data_words import (
    LAST as _LAST,
)
from .data_words import (
    NICKS as _NICKS,
)
from .data_words import (
    OS as _OS,
)
from .data_words import (
    PLACES as _PLACES,
)
from .data_words import (
    PLAN_LTV as _PLAN_LTV,
)
from .data_words import (
    PLANS as _PLANS,
)
from .data_words import (
    SUFFIXES as _SUFFIXES,
)
from .data_words import (
    SYLLABLES as _SYLLABLES,
)
from .data_words import (
    TAGS as _TAGS,
)
from .data_words import (
    THEMES as _THEMES,
)
from .data_words import (
    WORDS as _WORDS,
)

__all__ = ["Cohort", "Dataset", "GroupSet", "get_dataset", "mix64"]

_M64 = (1 << 64) - 1
CHUNK = 1024
"""Profiles are generated in chunks of this many, each from its own seeded stream, on first use."""


def mix64(*parts: int) -> int:
    """splitmix64 over the parts: a cheap, portable, well-spread hash of integers."""
    x = 0x2545F4914F6CDD1D
    for part in parts:
        x = (x ^ (part & _M64)) + 0x9E3779B97F4A7C15 & _M64
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
        x ^= x >> 31
    return x


def _str_key(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


_T0 = 1_546_300_800  # 2019-01-01T00:00:00Z
_T1 = 1_751_241_600  # 2025-06-30T00:00:00Z
_T2 = 1_759_190_400  # 2025-09-30T00:00:00Z


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building: millions of fresh, acyclic dicts would otherwise trigger
    full collections that rescan every profile already built (doubling the build time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


class _IsoCache:
    """``_iso`` with the date part cached per day: generation formats 400,000 timestamps."""

    _clock: ClassVar[list[str]] = []

    def __init__(self) -> None:
        self.days: dict[int, str] = {}
        if not _IsoCache._clock:
            _IsoCache._clock = [
                f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)
            ]
        self.clock = _IsoCache._clock

    def __call__(self, ts: int) -> str:
        day, rest = divmod(ts, 86400)
        prefix = self.days.get(day)
        if prefix is None:
            prefix = self.days[day] = time.strftime("%Y-%m-%dT", time.gmtime(day * 86400))
        return prefix + self.clock[rest]


@dataclass(frozen=True)
class Cohort:
    """Cohort ``id``: member profile indexes (server order) and member ids that have no profile."""

    id: int
    members: list[int]
    ghost_ids: list[str]


@dataclass(frozen=True)
class GroupSet:
    """The group profiles of one group key (``data_group_id``)."""

    key: str
    profiles: list[dict[str, Any]]
    created: list[int]
    index: dict[str, int]


class Dataset:
    """All profiles of one emulated project, generated once from the seed."""

    def __init__(
        self,
        profiles: int,
        seed: int,
        sparse_properties: int,
        groups: Mapping[str, int],
        cohorts: int = 20,
    ) -> None:
        self.size = profiles
        self.seed = seed
        self.sparse_properties = sparse_properties
        self.group_sizes = dict(groups)
        self.cohort_count = cohorts
        self._lock = threading.RLock()
        self._chunks: list[tuple[list[dict[str, Any]], list[int]] | None] = [None] * (
            (profiles + CHUNK - 1) // CHUNK
        )
        self._all: list[dict[str, Any]] | None = None
        self._created: list[int] | None = None
        self._index: dict[str, int] | None = None
        self._cohorts: dict[int, Cohort] = {}
        self._groups: dict[str, GroupSet] = {}
        self.build_seconds = 0.0

    # ------------------------------------------------------------------ access
    def _chunk(self, c: int) -> tuple[list[dict[str, Any]], list[int]]:
        found = self._chunks[c]
        if found is None:
            with self._lock:
                found = self._chunks[c]
                if found is None:
                    started = time.perf_counter()
                    with _gc_paused():
                        found = self._chunks[c] = self._users(c)
                    self.build_seconds += time.perf_counter() - started
        return found

    def profile(self, index: int) -> dict[str, Any]:
        """User profile ``index`` (0-based, server order), generating only its chunk if needed."""
        return self._chunk(index // CHUNK)[0][index % CHUNK]

    def page(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Profiles ``start:stop`` in server order (a slice of the generated chunks)."""
        stop = min(stop, self.size)
        out: list[dict[str, Any]] = []
        while start < stop:
            c, offset = divmod(start, CHUNK)
            take = min(stop - start, CHUNK - offset)
            out.extend(self._chunk(c)[0][offset : offset + take])
            start += take
        return out

    @property
    def profiles(self) -> list[dict[str, Any]]:
        """Every user profile (generates them all on first use). Read-only: served as is."""
        if self._all is None:
            with self._lock:
                if self._all is None:
                    all_: list[dict[str, Any]] = []
                    created: list[int] = []
                    with _gc_paused():
                        for c in range(len(self._chunks)):
                            chunk, chunk_created = self._chunk(c)
                            all_.extend(chunk)
                            created.extend(chunk_created)
                    self._created = created
                    self._all = all_
        return self._all

    @property
    def created(self) -> list[int]:
        """``$created`` of every user profile as Unix seconds (for as_of_timestamp)."""
        if self._created is None:
            _ = self.profiles
        assert self._created is not None
        return self._created

    # ------------------------------------------------------------------ users
    def _users(self, chunk: int) -> tuple[list[dict[str, Any]], list[int]]:
        rng = random.Random(mix64(self.seed, chunk))
        r = rng.random
        n = self.size
        beta_from = n - n // 5  # beta_cohort_flag only on the last 20% (late pages)
        sparse = self.sparse_properties
        sparse_names = [f"prop_{k:03d}" for k in range(sparse)]
        out: list[dict[str, Any]] = []
        created_list: list[int] = []
        nf, nl, nd, npl = len(_FIRST), len(_LAST), len(_DOMAINS), len(_PLACES)
        nos, nbr, npn, ntg = len(_OS), len(_BROWSERS), len(_PLANS), len(_TAGS)
        nlang, nnick = len(_LANGS), len(_NICKS)
        locals_ = [[(f + "." + la).lower().replace("'", "") for la in _LAST] for f in _FIRST]
        iso = _IsoCache()
        for i in range(chunk * CHUNK, min(n, (chunk + 1) * CHUNK)):
            fi = int(r() * nf)
            li = int(r() * nl)
            first = _FIRST[fi]
            last = _LAST[li]
            city, region, cc, tz = _PLACES[int(r() * npl)]
            created = _T0 + int(r() * (_T1 - _T0))
            last_seen = created + int(r() * (_T2 - created))
            plan = _PLANS[int(r() * npn)]
            has_email = r() >= 0.07
            email = f"{locals_[fi][li]}{i}@{_DOMAINS[int(r() * nd)]}" if has_email else ""
            has_city = r() >= 0.1
            tags: list[str] = []
            for _ in range(int(r() * 4)):
                tag = _TAGS[int(r() * ntg)]
                if tag not in tags:
                    tags.append(tag)
            s = r()
            props: dict[str, Any] = {
                "$created": iso(created),
                "$email": email,
                "$first_name": first,
                "$last_name": last,
                "$name": first + " " + last,
                "$last_seen": iso(last_seen),
                "$city": city,
                "$region": region,
                "$country_code": cc,
                "$timezone": tz,
                "$os": _OS[int(r() * nos)],
                "$browser": _BROWSERS[int(r() * nbr)],
                "plan": plan,
                "ltv": round(_PLAN_LTV[plan] * (0.5 + r()) + r() * 50, 2),
                "logins": int(r() * r() * 500),
                "is_paying": plan != "free",
                "tags": tags,
                "preferences": {
                    "theme": _THEMES[int(r() * 3)],
                    "language": _LANGS[int(r() * nlang)],
                    "notifications": {"email": r() < 0.7, "push": r() < 0.4},
                },
                "score": "n/a" if s < 0.08 else (int(s * 100) if s < 0.6 else round(s * 100, 1)),
            }
            if not has_email:
                del props["$email"]
            if not has_city:
                del props["$city"]
            if r() < 0.6:
                props["nickname"] = _NICKS[int(r() * nnick)] + str(int(r() * 100))
            if i >= beta_from:
                # From a hash, not the stream: other profiles must not depend on the dataset size.
                props["beta_cohort_flag"] = mix64(self.seed, i) & 1 == 1
            if sparse:
                picks = sorted({int(r() * sparse) for _ in range(2 + int(r() * 3))})
                for k in picks:
                    props[sparse_names[k]] = _sparse_value(k, r())
            out.append({"$distinct_id": f"user_{i:06d}", "$properties": props})
            created_list.append(created)
        return out, created_list

    # ------------------------------------------------------------------ lookups
    def index_of(self, distinct_id: str) -> int | None:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    # Ids are user_NNNNNN by construction; no need to generate profiles to look up.
                    self._index = {f"user_{i:06d}": i for i in range(self.size)}
        return self._index.get(distinct_id)

    def cohort(self, cohort_id: int) -> Cohort | None:
        """Cohort k (1..cohorts) holds ~1/(k+1) of the profiles plus a few ids without profile."""
        if not 1 <= cohort_id <= self.cohort_count:
            return None
        found = self._cohorts.get(cohort_id)
        if found is None:
            k, seed = cohort_id, self.seed
            members = [i for i in range(self.size) if mix64(seed, 1000 + k, i) % (k + 1) == 0]
            ghosts = max(1, len(members) // 25) if self.size else 0
            ghost_ids = [
                f"cohort{k:02d}_anon_{mix64(seed, k, j) % 10**10:010d}" for j in range(ghosts)
            ]
            found = Cohort(cohort_id, members, ghost_ids)
            with self._lock:
                self._cohorts.setdefault(cohort_id, found)
        return found

    def behavior_count(self, name: str, index: int) -> int:
        """How many times profile ``index`` did behavior ``name``: 0 for about half of them."""
        return max(0, int(mix64(self.seed, _str_key(name), index) % 8) - 3)

    def group(self, key: str) -> GroupSet | None:
        if key not in self.group_sizes:
            return None
        found = self._groups.get(key)
        if found is None:
            found = self._make_group(key, self.group_sizes[key])
            with self._lock:
                self._groups.setdefault(key, found)
        return found

    def _make_group(self, key: str, count: int) -> GroupSet:
        rng = random.Random(mix64(self.seed, _str_key(key)))
        r = rng.random
        prefix = key[:-3] if key.endswith("_id") and len(key) > 3 else key
        profiles: list[dict[str, Any]] = []
        created_list: list[int] = []
        for j in range(count):
            name = "".join(_SYLLABLES[int(r() * len(_SYLLABLES))] for _ in range(2 + int(r() * 2)))
            name = name.capitalize() + " " + _SUFFIXES[int(r() * len(_SUFFIXES))]
            created = _T0 + int(r() * (_T1 - _T0))
            employees = int(1 + r() * r() * 5000)
            props: dict[str, Any] = {
                "$name": name,
                "$created": _iso(created),
                "industry": _INDUSTRIES[int(r() * len(_INDUSTRIES))],
                "employees": employees,
                "arr": round(employees * (200 + r() * 3000), 2),
                "plan": _PLANS[int(r() * len(_PLANS))],
                "$country_code": _PLACES[int(r() * len(_PLACES))][2],
                "domain": name.split(" ")[0].lower() + ".example.com",
            }
            profiles.append({"$distinct_id": f"{prefix}_{j:04d}", "$properties": props})
            created_list.append(created)
        index = {p["$distinct_id"]: j for j, p in enumerate(profiles)}
        return GroupSet(key, profiles, created_list, index)


def _sparse_value(k: int, u: float) -> Any:
    kind = k % 4
    if k % 7 == 6:  # a mixed-type property: mostly numbers, sometimes text
        return int(u * 1000) if u < 0.7 else f"v{int(u * 100)}"
    if kind == 0:
        return int(u * 10_000)
    if kind == 1:
        return round(u * 1000, 3)
    if kind == 2:
        return _WORDS[int(u * len(_WORDS))]
    return u < 0.5


_CACHE: OrderedDict[tuple[Any, ...], Dataset] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 4


def get_dataset(
    profiles: int, seed: int, sparse_properties: int, groups: Mapping[str, int], cohorts: int = 20
) -> Dataset:
    """The dataset of this shape, built on first use and shared (LRU of 4) across emulators."""
    key = (profiles, seed, sparse_properties, tuple(sorted(groups.items())), cohorts)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None:
            _CACHE.move_to_end(key)
            return found
        dataset = Dataset(profiles, seed, sparse_properties, groups, cohorts)
        _CACHE[key] = dataset
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
        return dataset

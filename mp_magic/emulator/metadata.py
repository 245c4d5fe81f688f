"""The two read endpoints Engage clients call before paging: ``engage/properties`` (each profile
property with how many profiles have it and its type, which Airbyte's Mixpanel source reads to
build its schema) and ``cohorts/list`` (the cohorts `filter_by_cohort` can name).

Shapes follow what public clients parse: ``{"results": {name: {"count": n, "type": t}},
"status": "ok"}`` and a JSON array of ``{"count", "is_visible", "description", "created",
"project_id", "id", "name"}`` objects.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from .data import Dataset, mix64

__all__ = ["cohort_list", "property_summary"]

_DATETIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_COHORT_NAMES = (
    "Power users",
    "Recent sign-ups",
    "Churn risk",
    "Paying customers",
    "Newsletter readers",
    "Mobile first",
    "Trial users",
    "Referrals",
    "Beta testers",
    "Webinar attendees",
)


def _type(value: Any) -> str:
    """Mixpanel's property types: string, number, boolean, datetime, list, object."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "datetime" if _DATETIME.fullmatch(value) else "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "unknown"


def property_summary(profiles: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each property: how many profiles have it and its most common type; most common first."""
    counts: Counter[str] = Counter()
    types: dict[str, Counter[str]] = {}
    for p in profiles:
        for name, value in p["$properties"].items():
            counts[name] += 1
            types.setdefault(name, Counter())[_type(value)] += 1
    return {
        name: {"count": n, "type": types[name].most_common(1)[0][0]}
        for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    }


def cohort_list(dataset: Dataset, project_id: int) -> list[dict[str, Any]]:
    """Every cohort `filter_by_cohort` accepts, as Mixpanel lists them (count includes the
    members without a profile, as ``include_all_users`` does by default)."""
    out = []
    for k in range(1, dataset.cohort_count + 1):
        cohort = dataset.cohort(k)
        assert cohort is not None
        created = 1_546_300_800 + mix64(dataset.seed, 31, k) % 200_000_000
        name = _COHORT_NAMES[(k - 1) % len(_COHORT_NAMES)]
        if k > len(_COHORT_NAMES):
            name = f"{name} {(k - 1) // len(_COHORT_NAMES) + 1}"
        out.append(
            {
                "count": len(cohort.members) + len(cohort.ghost_ids),
                "is_visible": 1,
                "description": f"About 1 in {k + 1} users",
                "created": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(created)),
                "project_id": project_id,
                "id": k,
                "name": name,
            }
        )
    return out

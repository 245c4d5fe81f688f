"""``python -m mp_magic``: the demo fetch from the README's first command.

Fetches every profile from the built-in emulator (or the configured project) in parallel, with the
text progress bar, and prints the row count, a few profiles and a typed SQL aggregate.
"""

from __future__ import annotations

import sys

from .progress import TextProgress
from .workspace import Workspace


def main() -> int:
    with Workspace() as workspace:
        print(f"source: {workspace.source}")
        result = workspace.fetch_profiles(
            "profiles", parallel=True, progress=TextProgress(stream=sys.stderr)
        )
        print(
            f"fetched {result.total_rows:,} profiles into table 'profiles' "
            f"({result.successful_pages} pages in {result.duration_seconds:.2f} s)"
        )
        frame = workspace.table("profiles")
        columns = [
            c
            for c in ("distinct_id", "name", "email", "city", "plan", "ltv", "last_seen")
            if c in frame.columns
        ]
        print(frame[columns].head(5).to_string(index=False))
        if {"plan", "ltv"} <= set(frame.columns):
            print(
                workspace.sql(
                    "SELECT plan, count(*) AS profiles, round(avg(ltv), 2) AS avg_ltv "
                    "FROM profiles GROUP BY plan ORDER BY profiles DESC"
                ).to_string(index=False)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m mp_magic``: the demo from the README's first command, written to teach.

It fetches every profile from the built-in emulator (or the configured project) in parallel with
the text progress bar, says where the table now lives, prints a few profiles and a typed SQL
aggregate, each under a one-line caption, and ends with the next three things to try. The
progress bar's final line is the one summary of the fetch.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .exceptions import MpMagicError
from .progress import TextProgress
from .workspace import Workspace

TABLE = "profiles"
SHOWN_COLUMNS = ("distinct_id", "name", "email", "city", "plan", "ltv", "last_seen")
SQL = (
    f"SELECT plan, count(*) AS profiles, round(avg(ltv), 2) AS avg_ltv "
    f"FROM {TABLE} GROUP BY plan ORDER BY profiles DESC"
)
NEXT_STEPS = """\
Next:
  1. In a notebook:  %load_ext mp_magic   then   %mp_profiles df --parallel
  2. In a shell:     mp fetch profiles -p   then   mp sql "SELECT count(*) FROM profiles"
  3. Your project:   export MP_USERNAME=... MP_SECRET=... MP_PROJECT_ID=... (and MP_REGION=eu
                     or in outside the US); the same commands then fetch from Mixpanel"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mp_magic",
        description=(
            "Demo: fetch every profile into a DuckDB table, in parallel, then print a few\n"
            "profiles and a SQL aggregate. Without credentials it uses the built-in Engage\n"
            "emulator (5,000 reproducible profiles), so it runs anywhere."
        ),
        epilog=NEXT_STEPS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--db",
        metavar="FILE",
        type=Path,
        help="keep the table in this DuckDB file (default: in memory, gone when the demo ends)",
    )
    return parser


def where_it_lives(path: Path | None) -> str:
    if path is None:
        return (
            f"table {TABLE!r} is in memory: it lasts as long as this command "
            "(--db FILE keeps it in a file)"
        )
    return (
        f"table {TABLE!r} is in the DuckDB file {path}: "
        f'open it again with Workspace("{path}") or mp sql --db {path} "SELECT ..."'
    )


def run(path: Path | None) -> None:
    with Workspace(path, announce=False) as workspace:  # it prints its own source line
        _ = workspace.client  # connects (starting the emulator when that is the source)
        print(f"source: {workspace.source}", flush=True)
        workspace.fetch_profiles(
            TABLE,
            parallel=True,
            replace=TABLE in workspace.tables(),
            progress=TextProgress(stream=sys.stderr),
        )
        sys.stderr.flush()
        print(where_it_lives(path))

        frame = workspace.table(TABLE)
        columns = [c for c in SHOWN_COLUMNS if c in frame.columns]
        print(
            f"\nThe first 5 of {len(frame):,} profiles ({len(columns)} of {frame.shape[1]} columns):"
        )
        print(frame[columns].head(5).to_string(index=False))
        if {"plan", "ltv"} <= set(frame.columns):
            print("\nProfiles and average lifetime value per plan, by DuckDB SQL:")
            print(workspace.sql(SQL).to_string(index=False))
    print(f"\n{NEXT_STEPS}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args.db)
    except MpMagicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

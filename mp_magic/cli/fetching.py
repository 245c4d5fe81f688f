"""`mp fetch profiles`: one `FetchRequest` from the command line, its progress, its summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..argspec import ArgumentSpecError, request_from_namespace
from ..ctrl_c import ctrl_c_cancels
from ..exceptions import TableExistsError
from ..text import one_line
from .commands import db_path, open_workspace
from .console import PROG, isatty, out, say
from .exits import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, interrupts
from .render import render_result, shell_quote

if TYPE_CHECKING:
    from ..types import (
        BudgetWait,
        FetchPlan,
        FetchResult,
        ParallelProfileFetchResult,
        ProfileBatchProgress,
        ProgressReporter,
    )

EMULATOR_NOTICE = "no credentials configured; using the built-in emulator"

#: Seed 001's JSON keys, in its order; anything else a result carries follows them.
RESULT_KEYS = (
    "table",
    "total_rows",
    "successful_pages",
    "failed_pages",
    "failed_page_indices",
    "duration_seconds",
    "fetched_at",
    "has_failures",
)


def cmd_fetch_profiles(ns: argparse.Namespace) -> int:
    request = request_from_namespace(ns, table=ns.name)  # refused here: nothing opened or sent
    db = db_path(ns, must_exist=False)
    resume_hint = f"interrupted; resume with: {resume_command(ns.name, db)}"
    from ..client import CancelEvent

    cancel = CancelEvent()
    with interrupts(resume_hint), ctrl_c_cancels(cancel), open_workspace(db) as ws:
        progress = CliReporter(
            progress_bar(ns),
            first_line=EMULATOR_NOTICE if ws.using_emulator else None,
            quiet=ns.quiet,
        )
        try:
            result = ws.fetch(request.with_changes(progress=progress, cancel=cancel))
        except TableExistsError:
            raise ArgumentSpecError(
                f"NAME: table {ns.name!r} already exists in {db}; add --append to add to it "
                "or --replace to replace it"
            ) from None
    summary = result_summary(result)
    out(render_result(summary, ns.format))
    if result.note and not ns.quiet:
        say(result.note)
    status = summary.get("status", "complete")
    if status == "interrupted":
        say(resume_hint)
        return EXIT_INTERRUPTED
    if summary["has_failures"] or status not in ("complete", None):
        if not ns.quiet:
            failed = summary["failed_page_indices"]
            what = "the fetch stopped early"
            if failed:
                what = f"pages {', '.join(map(str, failed))} failed"
            say(f"partial: {what}; finish with: {resume_command(ns.name, db)}")
        return EXIT_PARTIAL
    return EXIT_OK


def progress_bar(ns: argparse.Namespace) -> ProgressReporter | None:
    """A text progress bar on stderr when a person is watching; none when piped or --quiet."""
    if ns.quiet or not isatty(sys.stderr):
        return None
    from ..progress import TextProgress

    return TextProgress(stream=sys.stderr)


class CliReporter:
    """What the CLI shows of a fetch: the progress bar on a terminal, else one-line notices.

    The emulator notice is held back until the fetch has really started (the plan is known), so a
    command line refused with exit 3 still prints exactly one line. Notices (worker cap, budget
    pacing, a renewed session) go to the progress bar when there is one, else to stderr as
    ``mp: ...`` lines, and nowhere with --quiet.
    """

    def __init__(
        self, bar: ProgressReporter | None, *, first_line: str | None, quiet: bool
    ) -> None:
        self._bar = bar
        self._first_line = first_line
        self._quiet = quiet

    def _announce(self) -> None:
        if self._first_line is not None:
            say(self._first_line)
            self._first_line = None

    def start(self, plan: FetchPlan) -> None:
        self._announce()
        if self._bar is not None:
            self._bar.start(plan)

    def batch(self, progress: ProfileBatchProgress) -> None:
        if self._bar is not None:
            self._bar.batch(progress)

    def wait(self, event: BudgetWait) -> None:
        if self._bar is not None:
            self._bar.wait(event)

    def notice(self, message: str) -> None:
        if self._bar is not None:
            self._bar.notice(message)
        elif not self._quiet:
            say(one_line(message))

    def finish(self, result: FetchResult | ParallelProfileFetchResult) -> None:
        self._announce()  # a fetch that needed no request still says where it would have gone
        if self._bar is not None:
            self._bar.finish(result)


def result_summary(result: FetchResult | ParallelProfileFetchResult) -> dict[str, Any]:
    """Seed 001's JSON object for either kind of result, seed keys first, bookkeeping after."""
    data = result.to_dict()
    rows = data.pop("rows", None)
    data.setdefault("total_rows", rows)
    indices = list(data.get("failed_page_indices") or [])
    data["failed_page_indices"] = indices
    data.setdefault("failed_pages", len(indices))
    data.setdefault("successful_pages", 0)
    data["has_failures"] = bool(indices)
    data.pop("type", None)
    if isinstance(data.get("duration_seconds"), float):
        data["duration_seconds"] = round(data["duration_seconds"], 3)
    if isinstance(data.get("waited_seconds"), float):
        data["waited_seconds"] = round(data["waited_seconds"], 3)
    ordered = {key: data.pop(key) for key in RESULT_KEYS if key in data}
    ordered.update(data)
    return ordered


def resume_command(name: str, db: Path) -> str:
    return f"{PROG} fetch profiles {name} --resume --db {shell_quote(str(db))}"

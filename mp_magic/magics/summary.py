"""The one line a fetch leaves in the notebook: what landed where, what failed, how to go on."""

from __future__ import annotations

from ..types import AnyFetchResult

EMULATOR_SOURCE = "source: built-in emulator (no credentials configured)"


def summary_line(
    result: AnyFetchResult, *, table: str, mode: str, table_rows: int, emulator: bool
) -> str:
    """The one line printed after a fetch: what landed where, what failed and how to retry."""
    from ..text import format_duration, plural

    page_text = plural(result.successful_pages, "page")
    took = format_duration(result.duration_seconds)
    if mode == "append":
        now = plural(table_rows, "row")
        text = f"appended {page_text} to table {table} in {took} (now {now})"
    elif mode == "resume":
        now = plural(table_rows, "row")
        text = f"resumed table {table}: now {now} from {page_text} ({took} this run)"
    else:
        verb = "replaced" if mode == "replace" else "created"
        text = f"{verb} table {table}: {plural(table_rows, 'row')} from {page_text} in {took}"
    parts = [text]
    if result.waited_seconds >= 1:
        parts.append(f"waited {format_duration(result.waited_seconds)} for the query budget")
    failed = list(result.failed_page_indices)
    if failed:
        shown = ", ".join(str(p) for p in failed[:10]) + (", …" if len(failed) > 10 else "")
        parts.append(f"failed pages [{shown}]: run the same cell with --resume to retry them")
    if emulator:
        parts.append(EMULATOR_SOURCE)
    return " · ".join(parts)

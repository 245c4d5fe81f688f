"""Progress views for profile fetches: plain text, an ipywidgets box, and nothing.

The fetch services report to a `types.ProgressReporter` (start → batch… / wait… / notice… → finish).
These classes only present those events; they never influence the fetch. Which one a fetch gets is
decided by `auto_reporter()`: a widget in a Jupyter kernel, text everywhere else (terminal IPython,
nbconvert logs, the CLI), so the same code path works in every front end.

Both real reporters take a lock around every update: the fetch services call them on the caller's
thread, but the widget's countdown ticker (and anyone else) may touch them from another thread.
"""

from __future__ import annotations

import os
from typing import TextIO

from ..text import format_duration, plural
from ..types import ProgressReporter
from .terminal import NullProgress, TextProgress
from .tracker import result_summary, summary_parts
from .widget import (
    BAR_WIDTH,
    DONE_CLASS,
    FAILED_CLASS,
    INTERRUPTED_CLASS,
    LABEL_WIDTH,
    PARTIAL_CLASS,
    WAITING_CLASS,
    WidgetProgress,
)

__all__ = [
    "BAR_WIDTH",
    "DONE_CLASS",
    "FAILED_CLASS",
    "INTERRUPTED_CLASS",
    "LABEL_WIDTH",
    "PARTIAL_CLASS",
    "WAITING_CLASS",
    "NullProgress",
    "TextProgress",
    "WidgetProgress",
    "auto_reporter",
    "format_duration",
    "plural",
    "result_summary",
    "summary_parts",
]


def _in_widget_kernel() -> bool:
    """True inside a Jupyter kernel (ZMQInteractiveShell), whose front ends render widgets."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return False
    shell = get_ipython()
    if shell is None:
        return False
    return any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def auto_reporter(stream: TextIO | None = None) -> ProgressReporter:
    """A widget in a Jupyter kernel, plain text elsewhere.

    ``MP_PROGRESS=text|widget|none`` overrides the choice (e.g. ``text`` for a kernel run headless
    by nbconvert, whose log has no widget front end).
    """
    choice = os.environ.get("MP_PROGRESS", "").strip().lower()
    if choice in ("none", "off", "0", "false"):
        return NullProgress()
    if choice != "text" and (choice == "widget" or _in_widget_kernel()):
        try:
            return WidgetProgress()
        except ImportError:  # ipywidgets missing in this kernel: fall back to text
            pass
    return TextProgress(stream)

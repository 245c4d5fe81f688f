"""Words shared by every front end and every layer: durations, counts, one-line messages.

One module so that "125.4 s" reads the same in a budget warning, a progress bar and a CLI line:
two copies of `format_duration` once rounded it differently ("2 min 6 s" and "2 min 5 s").
"""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``3.2 s``, ``35 s``, ``12 min 3 s``, ``2 h 5 min``: short enough for one progress line.

    Past ten seconds it rounds to the nearest whole second (half up), everywhere.
    """
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f} s"
    whole = math.floor(seconds + 0.5)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    minutes = rest // 60
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def plural(count: int, word: str) -> str:
    """``1 row``, ``2,500 rows``."""
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def one_line(value: object) -> str:
    """Messages are one line by contract; a stray newline from below must not break that."""
    return " ".join(str(value).split())

"""Words shared by every front end and every layer: durations, counts, yes/no, one-line messages.

One module so that "125.4 s" reads the same in a budget warning, a progress bar and a CLI line:
two copies of `format_duration` once rounded it differently ("2 min 6 s" and "2 min 5 s").
"""

from __future__ import annotations

import math
import re
from datetime import timedelta


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


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])", re.IGNORECASE)
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def seconds_of(raw: float | str | timedelta) -> float:
    """``3600``, ``timedelta(hours=1)``, ``"1h"``, ``"90m"``, ``"1h30m"``, ``"0"`` → seconds.

    One rule for every duration a user writes (``--max-age``, ``MP_MAX_AGE``, ``--lookback``);
    raises ValueError with the sentence to show.
    """
    value: float
    if isinstance(raw, timedelta):
        value = raw.total_seconds()
    elif isinstance(raw, str):
        text = raw.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            value = float(text)
        elif text and not _DURATION_PART.sub("", text).strip():
            value = sum(
                float(n) * _UNIT_SECONDS[u.lower()] for n, u in _DURATION_PART.findall(text)
            )
        else:
            raise ValueError(f"{raw!r} is not a duration; write it like 24h, 30m, 90s or 0")
    else:
        value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be 0 or more seconds, got {raw!r}")
    return value


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def truth_of(raw: object) -> bool | None:
    """A bool as it is, or the words ``true``/``false`` (``1``/``0``, ``yes``/``no``, ``on``/``off``,
    any case) as one; None for anything else, for the caller to refuse in its own words.

    One rule for every yes/no a user writes (``include_all_users``, ``MP_ALLOW_INSECURE_HTTP``).
    """
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        word = raw.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    return None

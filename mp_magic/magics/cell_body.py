"""The ``%%mp_profiles`` cell body: one Engage parameter per line, written ``name: value``.

Long parameters (a multi-line ``where``, a JSON ``behaviors`` array, hundreds of ids) read better
in a cell than on one magic line; this module is that grammar and its help text, nothing more.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass

from IPython.core.error import UsageError

from ..query import engage_params, parameter_names

_CELL_BODY_TEMPLATE = """\
Cell body (%%mp_profiles): one Engage parameter per line, written `name: value`.

    %%mp_profiles pro_users --parallel
    # paying users in three countries, as they were on New Year's Day
    where: properties["plan"] == "pro"
        and properties["$country_code"] in ["DE", "FR", "NL"]
    output-properties: $email, $city, plan
    as-of-timestamp: 2025-01-01T00:00:00

    %%mp_profiles vips
    distinct_ids:
        user_000001
        user_000042, user_000043
    behaviors: [
        {"name": "bought", "window": "30d",
         "event_selectors": [{"event": "Purchase"}]}
      ]
    where: behaviors["bought"] > 0

<NAME>
  value   the rest of the line. Indented lines below continue it; a line starting with ] } or )
          may also sit at the left margin, so JSON can close its brackets there.
          where and other text values: continuation lines are joined with a space.
          distinct_ids, output_properties: one per line, comma-separated, or a JSON array.
          behaviors: a JSON array (or one object) spread over as many lines as you like.
  #       a line whose first non-blank character is # is a comment; blank lines are skipped.
          A # later in a line is part of the value (it may be inside a string).
  {name}  in any value (and in any option on the magic line) is taken from the notebook's
          variables, always as data: a value that is exactly {name} passes the object itself (a
          list of ids, a datetime, a list of behavior dicts, a where expression in a string).
          Inside a longer value it is written as a literal: in where, "{name}" inside quotes is
          escaped for that string and a bare {name} becomes a quoted string, a number, a boolean
          or a [list]; in JSON it is JSON. A variable that is None, or a value that has no
          sensible literal there (a dict outside JSON, a DataFrame, bytes), is refused.
          {{name}} is a literal {name}. An empty id list is written [] (or an empty list variable).

Options that are not Engage parameters (--parallel, --workers, --table, --append, --resume, ...)
stay on the magic line. A parameter goes either on the line or in the body, not both.
"""
CELL_BODY_HELP = _CELL_BODY_TEMPLATE.replace(
    "<NAME>",
    textwrap.fill(  # the names come from the declaration, so a new parameter is listed at once
        "a parameter name, dashes or underscores alike (as-of-timestamp = as_of_timestamp; a "
        f"leading -- is allowed): {', '.join(parameter_names())}.",
        width=98,
        initial_indent="  name    ",
        subsequent_indent=" " * 10,
    ),
)


_HEADER = re.compile(r"^(?:--)?([A-Za-z_][A-Za-z0-9_-]*)\s*:(.*)$")
_CLOSERS = ("]", "}", ")")


@dataclass(frozen=True)
class BodyValue:
    """One ``name: value`` entry of a cell body (``line`` is 1-based, for error messages)."""

    name: str
    value: str
    line: int


def _normalise_name(name: str) -> str:
    return name.strip().lstrip("-").lower().replace("-", "_")


def parse_cell_body(cell: str) -> dict[str, BodyValue]:
    """Parse the ``name: value`` body of ``%%mp_profiles`` (grammar in `CELL_BODY_HELP`).

    Raises `UsageError` naming the line for anything that is not that grammar: an unknown parameter,
    a parameter given twice, or text that belongs to no parameter.
    """
    known = parameter_names()
    kinds = {name: spec.kind for name, spec in engage_params()}
    entries: dict[str, tuple[int, list[str]]] = {}
    current: str | None = None
    for number, raw in enumerate(cell.splitlines(), start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        indented = raw[:1].isspace()
        header = None if indented else _HEADER.match(raw)
        if header is not None:
            name = _normalise_name(header.group(1))
            if name not in known:
                raise UsageError(
                    f"cell line {number}: unknown parameter `{header.group(1)}`; use one of "
                    f"{', '.join(known)} (other options go on the magic line)"
                )
            if name in entries:
                raise UsageError(
                    f"cell line {number}: `{name}` is given twice in the cell body; keep one "
                    "(indent a line to continue a value)"
                )
            entries[name] = (number, [header.group(2).strip()])
            current = name
            continue
        if current is None:
            raise UsageError(
                f"cell line {number}: {text[:40]!r} is not `name: value`; start with a parameter "
                "name such as `where:` (see %mp_profiles --help)"
            )
        if not indented and not text.startswith(_CLOSERS):
            raise UsageError(
                f"cell line {number}: {text[:40]!r} is not `name: value`; indent it to continue "
                f"`{current}:` or start it with a parameter name"
            )
        entries[current][1].append(text)
    out: dict[str, BodyValue] = {}
    for name, (number, parts) in entries.items():
        parts = [p for p in parts if p]
        joiner = " " if kinds[name] == "text" else "\n"
        out[name] = BodyValue(name=name, value=joiner.join(parts), line=number)
    return out

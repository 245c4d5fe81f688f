"""mp_magic's frames carry MathJax's ignore classes in a real IPython shell; other frames do not.

The browser test shows what JupyterLab does with them; this checks the formatter's contract: which
frames it marks, that the data is untouched, and that it leaves the user's own frames (and any
printer registered before it) alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pandas as pd
import pytest

from mp_magic import Workspace
from mp_magic.display import MARKER, install_formatter, literal_dollars


@pytest.fixture
def html(shell: Any) -> Iterator[Any]:
    """The shell's text/html formatter, enabled (a terminal shell keeps it off), then restored."""
    formatter = shell.display_formatter.formatters["text/html"]
    enabled = formatter.enabled
    printers = dict(formatter.type_printers)
    formatter.enabled = True
    install_formatter(shell)
    try:
        yield formatter
    finally:
        formatter.enabled = enabled
        formatter.type_printers.clear()
        formatter.type_printers.update(printers)


def test_workspace_frames_render_with_ignore_classes_and_exact_values(html: Any) -> None:
    with Workspace(emulator={"profiles": 30, "page_size": 10}) as ws:
        ws.fetch_profiles("people", progress=False)
        frame = ws.table("people")
        rendered = html(frame)
        assert rendered.startswith('<div class="mp-frame tex2jax_ignore mathjax_ignore">')
        assert 'class="dataframe tex2jax_ignore mathjax_ignore"' in rendered  # pandas' own table
        raw = ws.table("people", raw=True)  # the JSON, whose keys start with `$`
        assert "$email" in html(raw)
        stored = ws.sql("SELECT properties FROM people")  # the data itself is untouched
        assert raw.loc[0, "properties"] == stored.loc[0, "properties"]
        i = frame["email"].first_valid_index()
        assert orjson.loads(raw.loc[i, "properties"])["$email"] == frame.loc[i, "email"]
        # frames derived from ours keep the marker; SQL results are marked too
        assert "mathjax_ignore" in html(raw.head(2)[["properties"]])
        assert "mathjax_ignore" in html(frame.head(2)[["distinct_id", "email"]])
        assert "mathjax_ignore" in html(ws.sql("SELECT '$a$ costs $b$' AS note"))


def test_other_frames_keep_pandas_default_and_earlier_printers(shell: Any, html: Any) -> None:
    plain = pd.DataFrame({"note": ["$a$ costs $b$"]})
    assert html(plain) == plain._repr_html_()
    assert "mathjax_ignore" not in html(plain)

    # a printer registered before ours (say, an interactive-table library) still gets its frames
    formatter = html
    formatter.type_printers.pop(pd.DataFrame, None)
    formatter.for_type(pd.DataFrame, lambda frame: "<b>theirs</b>")
    install_formatter(shell)
    assert html(plain) == "<b>theirs</b>"
    assert "mathjax_ignore" in html(literal_dollars(pd.DataFrame({"a": [1]})))
    install_formatter(shell)  # idempotent: not wrapped twice
    assert getattr(formatter.type_printers[pd.DataFrame], MARKER)
    assert html(plain) == "<b>theirs</b>"

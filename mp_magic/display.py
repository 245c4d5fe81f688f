"""How mp_magic's DataFrames render in notebooks: pandas' own HTML table, with ``$`` kept literal.

Why this exists: JupyterLab and Jupyter Notebook 7 run MathJax over every HTML output, so the text
between two ``$`` signs is typeset as LaTeX. Mixpanel tables are full of them (``$email`` and
``$created`` inside the ``properties`` JSON, user values such as ``$20+``), and a table cell like
``{"$created":"2020-…","$email":…}`` came out as italic math.

What works, in every front end we checked (the browser test asserts it in JupyterLab 4.6):

- MathJax skips any element carrying its *ignore class*, and all of its descendants. MathJax 4
  (JupyterLab 4.6, Notebook 7.5) reads ``mathjax_ignore``; MathJax 2 and early 3 read
  ``tex2jax_ignore``. We put both on a ``<div>`` around the table, and also let pandas put them on
  the ``<table>`` itself (``display.html.use_mathjax = False``, applied only while our frame's HTML
  is rendered, via ``pd.option_context``).
- VS Code's notebook renderer never runs MathJax on HTML outputs (pandas-dev/pandas#51940), so
  ``$`` is literal there already; the classes are inert.

What does not work: HTML entities (``&#36;``) — MathJax reads the decoded DOM text, so they are
typeset just the same; ``$\\$$``-style escaping — it would change the values. The values are never
touched here: ``ws.table(name, raw=True).loc[0, "properties"]`` is still the exact JSON.

Why scoped, not ``pd.set_option("display.html.use_mathjax", False)`` for the whole kernel: that
would silently turn off LaTeX in the user's own frames (column labels like ``$\\alpha$``). Instead a
frame handed out by mp_magic carries a marker in ``DataFrame.attrs`` (which pandas copies to frames
derived from it: ``df.head()``, ``df[cols]``, ``df.query(…)``), and one IPython ``text/html``
formatter for DataFrames renders marked frames this way and hands every other frame to whatever
rendered it before (a previously registered printer, else pandas' own ``_repr_html_``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MARKER", "install_formatter", "literal_dollars", "literal_html", "render_html"]

MARKER = "mp_magic"
"""The ``DataFrame.attrs`` key that marks a frame mp_magic handed out."""

IGNORE_CLASSES = "mp-frame tex2jax_ignore mathjax_ignore"


def literal_html(markup: str) -> str:
    """``markup`` inside a container MathJax skips (see the module docstring for why)."""
    return f'<div class="{IGNORE_CLASSES}">{markup}</div>'


def render_html(frame: pd.DataFrame) -> str | None:
    """pandas' notebook HTML for ``frame`` (scrollable, truncated as usual), ``$`` kept literal.

    None when pandas itself would give no HTML (``display.notebook_repr_html`` off).
    """
    import pandas as pd

    with pd.option_context("display.html.use_mathjax", False):
        inner = frame._repr_html_()  # type: ignore[operator]
    return None if inner is None else literal_html(str(inner))


def literal_dollars(frame: pd.DataFrame) -> pd.DataFrame:
    """Mark ``frame`` (in place; the data is untouched) so notebooks render its ``$`` literally.

    Returns the same frame, so callers can write ``return literal_dollars(storage.table(name))``.
    Inside IPython it also makes sure the formatter is installed, so ``ws.table(...)`` as a cell's
    value renders right even without ``%load_ext mp_magic``.
    """
    frame.attrs[MARKER] = True
    if "IPython" in sys.modules:  # no IPython imported: no shell can be running, nothing to do
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            install_formatter(shell)
    return frame


def install_formatter(shell: Any) -> None:
    """Register the DataFrame ``text/html`` printer in ``shell`` (once per shell; idempotent)."""
    import pandas as pd

    formatter = getattr(getattr(shell, "display_formatter", None), "formatters", {}).get(
        "text/html"
    )
    if formatter is None:  # a shell without rich display
        return
    previous = formatter.type_printers.get(pd.DataFrame)
    if getattr(previous, MARKER, False):  # ours already (the marker survives a shell's reuse)
        return

    def dataframe_html(frame: pd.DataFrame) -> str | None:
        if frame.attrs.get(MARKER):
            return render_html(frame)
        if previous is not None:
            result: str | None = previous(frame)
            return result
        return frame._repr_html_()  # type: ignore[operator,no-any-return]

    setattr(dataframe_html, MARKER, True)
    formatter.for_type(pd.DataFrame, dataframe_html)

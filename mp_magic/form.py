"""`fetch_form()`: an ipywidgets form for people who would rather click than type flags.

The form is a front end like the magics: it only parses and presents. Its fields come from
`query.engage_params()` (one per Engage parameter, so a parameter added there appears here
without touching this module), its validation is `EngageQuery.build` itself (the same rules the
magic and the CLI apply, re-run on every change so the message sits next to the field at fault),
and the fetch is `Workspace.fetch_profiles`.

Why the Fetch button runs the fetch on a background thread: a button click is handled while the
kernel processes a comm message, so a fetch on that thread would block every other cell (and the
widget messages that draw the progress bar would only be flushed once the fetch ended). On its own
thread the fetch reports progress live and the kernel stays free to run cells. One fetch runs at a
time (the button is disabled while it does); the progress reporter and all widget updates belong to
that thread, which is what `Workspace` promises (callbacks run on the thread that called it).
`FetchForm.fetch()` is the programmatic, blocking variant used by scripts, tests and notebooks run
without a front end.
"""

from __future__ import annotations

import html
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from .display import literal_html
from .exceptions import InvalidTableNameError, MpMagicError, QueryValidationError
from .query import EngageParam, EngageQuery, engage_params
from .request import DEFAULT_TABLE, MAX_WORKERS, FetchRequest
from .types import FetchResult, ParallelProfileFetchResult

if TYPE_CHECKING:
    import pandas as pd

    from .workspace import Workspace

__all__ = ["FetchForm", "fetch_form"]

PREVIEW_ROWS = 10
TABLE_FIELD = "table"
"""The key under which the table name's validation message is kept in `FetchForm.errors`."""

_BOOL_OPTIONS = (("(not set)", ""), ("true", "true"), ("false", "false"))
_DESCRIPTION_STYLE = {"description_width": "150px"}
_FIELD_WIDTH = "480px"


def fetch_form(workspace: Workspace | None = None, *, table: str = "profiles") -> FetchForm:
    """A fetch form bound to ``workspace`` (None: ``default_workspace()``, resolved at first fetch).

    Put it last in a cell to display it; after a fetch, ``form.dataframe`` holds the profiles.
    ``table`` pre-fills the table name.
    """
    return FetchForm(workspace, table=table)


def _error_text(exc: BaseException) -> str:
    """An exception as the single line the form shows (our messages are written to stand alone)."""
    text = str(exc).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(exc, MpMagicError):
        return message or type(exc).__name__
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _field_widget(name: str, spec: EngageParam) -> Any:
    """The input for one Engage parameter, chosen by its declared kind."""
    common: dict[str, Any] = {
        "description": name,
        "tooltip": f"{spec.flag}: {spec.help}",
        "style": _DESCRIPTION_STYLE,
        "layout": widgets.Layout(width=_FIELD_WIDTH),
    }
    widget: Any
    if spec.kind == "bool":
        # tri-state: "not set" must stay possible (include_all_users=false is still a value)
        widget = widgets.Dropdown(options=list(_BOOL_OPTIONS), value="", **common)
    elif spec.multiline:
        widget = widgets.Textarea(value="", placeholder=spec.placeholder, rows=2, **common)
    else:
        widget = widgets.Text(value="", placeholder=spec.placeholder, **common)
    widget.add_class(f"mp-form-field-{name}")
    return widget


def _checkbox(description: str, tooltip: str) -> Any:
    """An option that is off until ticked, its label beside the box (no indent)."""
    return widgets.Checkbox(value=False, description=description, indent=False, tooltip=tooltip)


def _error_label(name: str) -> Any:
    label = widgets.HTML(value="", layout=widgets.Layout(width="auto", max_width="520px"))
    label.add_class("mp-form-error")
    label.add_class(f"mp-form-error-{name}")
    return label


def _error_html(message: str) -> str:
    if not message:
        return ""
    return f'<span style="color:#b00020">⚠ {html.escape(message)}</span>'


class FetchForm:
    """The widget form: Engage fields, table/parallel/workers/append, Fetch, progress, preview.

    Public state, for Python code and tests:
      ``fields``        {parameter name: input widget} for every Engage parameter
      ``table_input``, ``parallel_input``, ``workers_input``, ``append_input``, ``fetch_button``
      ``errors``        {parameter (or "table"): message} from the last validation
      ``query``         the valid `EngageQuery`, or None while something is invalid
      ``result``, ``dataframe``, ``table_name``, ``error`` after a fetch
    """

    def __init__(self, workspace: Workspace | None = None, *, table: str = "profiles") -> None:
        self._workspace = workspace
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._fetching = False

        self.result: FetchResult | ParallelProfileFetchResult | None = None
        self.dataframe: pd.DataFrame | None = None
        self.error: str | None = None
        self.error_field: str | None = None  # the option a refused fetch named
        self.errors: dict[str, str] = {}
        self.query: EngageQuery | None = None
        self.request: FetchRequest | None = None
        self._fetched_table: str | None = None

        self.fields: dict[str, Any] = {}
        self._error_labels: dict[str, Any] = {}
        rows: list[Any] = []
        for name, spec in engage_params():
            field = _field_widget(name, spec)
            label = _error_label(name)
            self.fields[name] = field
            self._error_labels[name] = label
            rows.append(widgets.HBox([field, label]))

        self.table_input = widgets.Text(
            value=table,
            description="table",
            placeholder="profiles",
            tooltip="DuckDB table the profiles are written to (letters, digits, underscores)",
            style=_DESCRIPTION_STYLE,
            layout=widgets.Layout(width=_FIELD_WIDTH),
        )
        self.table_input.add_class("mp-form-field-table")
        self._error_labels[TABLE_FIELD] = _error_label(TABLE_FIELD)
        self.parallel_input = _checkbox(
            "parallel", "Fetch up to 5 pages at once (one API session, pages in any order)"
        )
        self.workers_input = widgets.IntSlider(
            value=MAX_WORKERS,
            min=1,
            max=MAX_WORKERS,
            step=1,
            description="workers",
            disabled=True,
            style=_DESCRIPTION_STYLE,
            tooltip=f"Parallel workers (the API allows {MAX_WORKERS} concurrent queries)",
        )
        self.page_size_input = widgets.Text(
            value="",
            description="page size",
            placeholder="the page_size setting (5000)",
            tooltip="Profiles per page to ask for (at most 10,000): each page is one query",
            style=_DESCRIPTION_STYLE,
            layout=widgets.Layout(width="330px"),
        )
        self.page_size_input.add_class("mp-form-field-page_size")
        self._error_labels["page_size"] = _error_label("page_size")
        self.append_input = _checkbox("append", "Add to the existing table instead of replacing it")
        self.fetch_button = widgets.Button(
            description="Fetch",
            button_style="primary",
            icon="download",
            tooltip="Fetch the profiles into the table",
        )
        self.fetch_button.add_class("mp-form-fetch")
        self.status = widgets.HTML(value="")
        self.status.add_class("mp-form-status")
        self.progress_box = widgets.VBox([])
        self.progress_box.add_class("mp-form-progress")
        self.preview = widgets.Output()
        self.preview.add_class("mp-form-preview")

        options = widgets.HBox(
            [self.parallel_input, self.workers_input, self.append_input],
            layout=widgets.Layout(align_items="center"),
        )
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>Fetch Mixpanel profiles</b>"),
                *rows,
                widgets.HBox([self.table_input, self._error_labels[TABLE_FIELD]]),
                options,
                widgets.HBox([self.page_size_input, self._error_labels["page_size"]]),
                widgets.HBox(
                    [self.fetch_button, self.status], layout=widgets.Layout(align_items="center")
                ),
                self.progress_box,
                self.preview,
            ]
        )
        self.widget.add_class("mp-fetch-form")

        for field in (
            *self.fields.values(),
            self.table_input,
            self.append_input,
            self.page_size_input,
        ):
            field.observe(self._on_change, names="value")
        self.parallel_input.observe(self._on_parallel, names="value")
        self.fetch_button.on_click(self._on_click)
        self.validate()

    # -- display -------------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        show: Callable[..., object] = display
        show(self.widget)

    # -- values and validation -----------------------------------------------------------------

    @property
    def workspace(self) -> Workspace:
        """The workspace fetches go to (the default one is created on first use)."""
        if self._workspace is None:
            from .workspace import default_workspace

            self._workspace = default_workspace()
        return self._workspace

    @property
    def table_name(self) -> str:
        """The table of the last successful fetch, else the one the table field names."""
        return self._fetched_table or self.table_input.value.strip()

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def fetching(self) -> bool:
        return self._fetching

    def values(self) -> dict[str, str]:
        """The Engage parameters filled in, as the text typed (empty fields left out)."""
        out: dict[str, str] = {}
        for name, field in self.fields.items():
            text = str(field.value)
            if text:  # only an untouched field is "not set": blanks are refused, not widened
                out[name] = text
        return out

    def set(self, **values: Any) -> FetchForm:
        """Fill fields from Python (parameters by name, plus table/parallel/workers/append).

        Lists become comma-separated text, booleans ``"true"``/``"false"``, None clears a field.
        Returns the form so ``fetch_form().set(...)`` can end a cell.
        """
        options = {
            "table": self.table_input,
            "parallel": self.parallel_input,
            "workers": self.workers_input,
            "page_size": self.page_size_input,
            "append": self.append_input,
        }
        for name, value in values.items():
            if name == "page_size":
                options[name].value = "" if value is None else str(value)
            elif name in options:
                options[name].value = value
            elif name in self.fields:
                self.fields[name].value = self._as_text(value)
            else:
                known = ", ".join([*self.fields, *options])
                raise QueryValidationError(
                    name, f"the form has no such field; known ones are {known}"
                )
        return self

    @staticmethod
    def _as_text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list | tuple | set):
            return ", ".join(str(item) for item in value)
        return str(value)

    def validate(self) -> bool:
        """Re-check every field with `EngageQuery`'s rules; show each message next to its field.

        The query is rebuilt with the fields found at fault removed until it builds, so every
        field that is wrong on its own, and the field a conflicting combination names, shows its
        message at once, rather than one message per attempt.
        """
        errors: dict[str, str] = {}
        params: dict[str, Any] = dict(self.values())
        request: FetchRequest | None = None
        table = self.table_input.value.strip()
        if not table:
            errors[TABLE_FIELD] = "give the table the profiles go to, e.g. profiles"
        for _ in range(len(self.fields) + 2):
            try:
                request = self._request(table or DEFAULT_TABLE, params)
                break
            except InvalidTableNameError as exc:
                errors.setdefault(TABLE_FIELD, str(exc))
                table = DEFAULT_TABLE
            except QueryValidationError as exc:
                errors.setdefault(exc.parameter, exc.reason)
                if params.pop(exc.parameter, None) is None:  # a rule naming a field not filled in
                    break
        self.request = request if not errors else None
        query = request.query if request is not None else None
        self.errors = errors
        self.query = query if not errors else None
        for name, label in self._error_labels.items():
            label.value = _error_html(errors.get(name, ""))
        self._sync_button()
        return not errors

    def _request(self, table: str, params: dict[str, Any]) -> FetchRequest:
        """The request the form's fields describe (the same value the magic and the CLI build)."""
        parallel = bool(self.parallel_input.value)
        append = bool(self.append_input.value)
        size: Any = self.page_size_input.value.strip() or None  # blank: the setting's default
        if isinstance(size, str) and size.isdigit():
            size = int(size)
        return FetchRequest.build(
            table=table,
            parallel=parallel,
            max_workers=int(self.workers_input.value) if parallel else None,
            page_size=size,
            append=append,
            replace=not append,
            **params,
        )

    def _sync_button(self) -> None:
        self.fetch_button.disabled = bool(self.errors) or self._fetching

    def _on_change(self, _change: Mapping[str, Any]) -> None:
        self.validate()

    def _on_parallel(self, change: Mapping[str, Any]) -> None:
        self.workers_input.disabled = not change["new"]

    # -- fetching ------------------------------------------------------------------------------

    def _on_click(self, _button: Any) -> None:
        self.start()

    def start(self) -> threading.Thread | None:
        """Start a fetch on a background thread (what the button does); None if invalid or busy."""
        with self._lock:
            if self._fetching or not self.validate():
                return None
            self._fetching = True
            self._sync_button()
        thread = threading.Thread(target=self._run, name="mp-fetch-form", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background fetch to end; True when none is running any more."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def fetch(self) -> FetchResult | ParallelProfileFetchResult | None:
        """Fetch now, on this thread (for code and for notebooks run without a front end).

        Like the button, a problem is shown as one line in the form (and kept in ``form.error``)
        rather than raised; the result is returned, or None if the fetch did not happen.
        """
        with self._lock:
            if self._fetching:
                self._set_status("error", "a fetch is already running; wait for it to finish")
                return None
            self._fetching = True
        if not self.validate():
            self._fetching = False
            self._sync_button()
            self._set_status("error", "fix the fields marked ⚠ first")
            return None
        self._sync_button()
        self._run()
        return self.result

    def _run(self) -> None:
        """One fetch: progress widget, fetch, preview, status. Never raises."""
        request = self.request
        assert request is not None  # validated by the caller
        table, parallel = request.table, request.is_parallel
        self.error = self.error_field = None
        self.preview.outputs = ()
        reporter = None
        try:
            from .progress import WidgetProgress

            # drawn inside the form, not displayed by itself: from a background thread a display()
            # would land in whichever cell happens to be running
            reporter = WidgetProgress(display=False)
            self.progress_box.children = (reporter.widget,)
            self._set_status("running", f"fetching into {table}…")
            result = self.workspace.fetch(request.with_changes(progress=reporter))
            frame = self.workspace.table(table)
            self.result = result
            self.dataframe = frame
            self._fetched_table = table
            self._show_preview(frame)
            self._set_status(*self._summary(result, table, parallel))
        except Exception as exc:  # the form's contract: one line, never a traceback
            self.error = _error_text(exc)
            self.error_field = exc.parameter if isinstance(exc, QueryValidationError) else None
            self._set_status("error", self.error)
            if reporter is not None:  # the progress area shows the failure, not "connecting…"
                reporter.abort(self.error)
        finally:
            self._fetching = False
            self._sync_button()

    @staticmethod
    def _summary(
        result: FetchResult | ParallelProfileFetchResult, table: str, parallel: bool
    ) -> tuple[str, str]:
        how = "parallel" if parallel else "sequential"
        text = (
            f"{result.rows:,} rows in table {table} ({how}, {result.successful_pages} pages, "
            f"{result.duration_seconds:.1f}s) → form.dataframe"
        )
        if result.has_failures:
            pages = ", ".join(str(i) for i in result.failed_page_indices)
            return "partial", f"{text}; pages {pages} failed: run a retry of the failed pages"
        if result.status != "complete":
            return "partial", f"{text}; status {result.status}"
        return "done", text

    def _set_status(self, state: str, message: str) -> None:
        colours = {"error": "#b00020", "partial": "#a15c00", "done": "#1b5e20", "running": "#333"}
        icons = {"error": "✗", "partial": "⚠", "done": "✓", "running": "…"}
        self.status.value = (
            f'<span class="mp-form-status-{state}" style="color:{colours.get(state, "#333")}">'
            f"{icons.get(state, '')} {html.escape(message)}</span>"
        )

    def _show_preview(self, frame: pd.DataFrame) -> None:
        shown = frame.head(PREVIEW_ROWS)
        markup = shown.to_html(max_cols=20, border=0, classes="dataframe mp-form-preview-table")
        note = f"<p>first {len(shown)} of {len(frame):,} rows</p>"
        html_text = literal_html(markup + note)  # `$email` is not LaTeX (mp_magic/display.py)
        self.preview.outputs = (
            {
                "output_type": "display_data",
                "data": {"text/html": html_text, "text/plain": shown.to_string(max_cols=20)},
                "metadata": {},
            },
        )

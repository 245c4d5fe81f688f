"""The widget fetch form, driven from Python: fields, inline validation, Fetch against the emulator.

No front end is needed: widgets work without a kernel (their comms are inert), so the tests set
field values the way a browser would (assigning ``.value``), read the messages the form shows, and
click the button. The fetch is real: HTTP to the built-in emulator over loopback.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest

from mp_magic.form import FetchForm, fetch_form
from mp_magic.query import MAX_DISTINCT_IDS, EngageQuery, engage_params, parameter_names
from mp_magic.workspace import Workspace, set_default_workspace

PROFILES = 2500  # three pages of 1000: enough for a parallel fetch to mean something


@pytest.fixture
def workspace() -> Iterator[Workspace]:
    ws = Workspace(emulator={"profiles": PROFILES, "seed": 7, "page_size": 1000})
    try:
        yield ws
    finally:
        ws.close()


@pytest.fixture
def form(workspace: Workspace) -> FetchForm:
    return fetch_form(workspace)


def _error(form: FetchForm, name: str) -> str:
    """The message the form shows next to ``name`` (its HTML label), as text."""
    label: Any = form._error_labels[name]
    return str(label.value)


def _expected(workspace: Workspace, query: EngageQuery | None) -> list[dict[str, Any]]:
    emulator = workspace.emulator
    assert emulator is not None, "the workspace should be using the built-in emulator"
    form_params = query.to_form() if query is not None else {}
    return list(emulator.expected_profiles(form_params))


def _ids(frame: pd.DataFrame) -> list[str]:
    for column in ("distinct_id", "$distinct_id"):
        if column in frame.columns:
            return [str(v) for v in frame[column]]
    raise AssertionError(f"no distinct_id column in {list(frame.columns)}")


def _expected_ids(profiles: list[dict[str, Any]]) -> list[str]:
    return [str(p["$distinct_id"]) for p in profiles]


# -- fields --------------------------------------------------------------------------------------


def test_a_field_for_every_engage_parameter(form: FetchForm) -> None:
    assert tuple(form.fields) == parameter_names()
    for name, spec in engage_params():
        field = form.fields[name]
        kind = type(field).__name__
        if spec.kind == "bool":
            assert kind == "Dropdown"
            assert field.value == ""  # "not set" is a choice: false is a value too
        elif spec.multiline:
            assert kind == "Textarea"
        else:
            assert kind == "Text"
            assert field.placeholder == spec.placeholder
        assert spec.flag in field.tooltip


def test_empty_form_is_valid_and_fetchable(form: FetchForm) -> None:
    assert form.errors == {}
    assert form.query == EngageQuery()
    assert form.fetch_button.disabled is False
    assert form.table_name == "profiles"


def test_form_displays_as_its_widget(form: FetchForm) -> None:
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "mp-fetch-form" in form.widget._dom_classes


# -- inline validation: the rules are EngageQuery's ----------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"distinct_id": "user_1", "distinct_ids": "user_2, user_3"}, "distinct_ids", "not both"),
        ({"behaviors": '[{"name": "b"}]', "cohort_id": "12"}, "behaviors", "cannot be combined"),
        ({"include_all_users": "true"}, "include_all_users", "add cohort_id"),
        ({"include_all_users": "false"}, "include_all_users", "add cohort_id"),
        ({"behaviors": '[{"name": "b"'}, "behaviors", "not valid JSON"),
        ({"distinct_ids": '["a", "b"'}, "distinct_ids", "does not parse"),
        ({"cohort_id": "twelve"}, "cohort_id", "whole number"),
        ({"as_of_timestamp": "yesterday"}, "as_of_timestamp", "ISO date-time"),
        (
            {"distinct_ids": ", ".join(f"user_{i}" for i in range(MAX_DISTINCT_IDS + 1))},
            "distinct_ids",
            f"{MAX_DISTINCT_IDS + 1} ids",
        ),
    ],
)
def test_conflicts_and_bad_values_show_next_to_the_field(
    form: FetchForm, values: dict[str, str], field: str, fragment: str
) -> None:
    for name, value in values.items():
        form.fields[name].value = value  # what typing in the browser does
    assert set(form.errors) == {field}
    assert fragment in form.errors[field]
    assert fragment in _error(form, field)
    others = [name for name in form.fields if name != field]
    assert all(_error(form, name) == "" for name in others)
    assert form.fetch_button.disabled is True
    assert form.query is None
    # the message is EngageQuery's own
    with pytest.raises(Exception, match=fragment.replace("(", r"\(")) as caught:
        EngageQuery.build(**values)
    assert caught.value.parameter == field  # type: ignore[attr-defined]


def test_fixing_the_field_clears_the_message_and_enables_fetch(form: FetchForm) -> None:
    form.set(distinct_id="user_1", distinct_ids="user_2")
    assert form.fetch_button.disabled is True
    form.fields["distinct_id"].value = ""
    assert form.errors == {}
    assert _error(form, "distinct_ids") == ""
    assert form.fetch_button.disabled is False
    assert form.query == EngageQuery(distinct_ids=("user_2",))


def test_several_fields_wrong_at_once_each_get_their_message(form: FetchForm) -> None:
    form.set(cohort_id="0", behaviors="{nope", as_of_timestamp="9999999999999")
    assert set(form.errors) == {"cohort_id", "behaviors", "as_of_timestamp"}
    assert "positive" in _error(form, "cohort_id")
    assert "milliseconds" in _error(form, "as_of_timestamp")


def test_a_valid_cohort_query_with_include_all_users(form: FetchForm) -> None:
    form.set(cohort_id=7, include_all_users=True)
    assert form.errors == {}
    assert form.query == EngageQuery(cohort_id=7, include_all_users=True)


def test_bad_table_name_disables_fetch(form: FetchForm) -> None:
    form.table_input.value = "my table; drop"
    assert "letters, digits and underscores" in form.errors["table"]
    assert form.fetch_button.disabled is True
    form.table_input.value = "ok_table"
    assert form.fetch_button.disabled is False


def test_workers_follow_the_parallel_checkbox(form: FetchForm) -> None:
    assert form.workers_input.disabled is True
    form.parallel_input.value = True
    assert form.workers_input.disabled is False
    assert (form.workers_input.min, form.workers_input.max) == (1, 5)


def test_unknown_field_in_set_is_one_clear_error(form: FetchForm) -> None:
    with pytest.raises(ValueError, match="no such field"):
        form.set(cohort=3)


# -- fetching ------------------------------------------------------------------------------------


def test_click_fetches_in_the_background_into_a_dataframe(
    form: FetchForm, workspace: Workspace
) -> None:
    form.set(where='properties["plan"] == "pro"', table="pro_users")
    form.fetch_button.click()
    assert form.wait(timeout=120), "the fetch did not finish"
    assert form.error is None, form.error
    assert form.result is not None and form.result.status == "complete"
    frame = form.dataframe
    assert isinstance(frame, pd.DataFrame)
    expected = _expected(workspace, form.query)
    assert 0 < len(expected) < PROFILES
    assert sorted(_ids(frame)) == sorted(_expected_ids(expected))
    assert form.table_name == "pro_users"
    assert "pro_users" in workspace.tables()
    pd.testing.assert_frame_equal(frame, workspace.table("pro_users"))
    assert "mp-form-status-done" in form.status.value
    assert f"{len(expected):,} rows" in form.status.value
    preview = form.preview.outputs[0]["data"]["text/html"]
    assert "<table" in preview and "dataframe" in preview
    assert form.progress_box.children, "the progress widget should be shown in the form"
    assert form.fetch_button.disabled is False


def test_parallel_fetch_with_workers_and_replace(form: FetchForm, workspace: Workspace) -> None:
    form.set(parallel=True, workers=3, table="everyone")
    first = form.fetch()
    assert first is not None and first.rows == PROFILES
    assert form.dataframe is not None and len(form.dataframe) == PROFILES
    assert first.successful_pages == 3
    # fetching again replaces the table (append unchecked): same rows, not twice as many
    again = form.fetch()
    assert again is not None and again.rows == PROFILES
    assert len(workspace.table("everyone")) == PROFILES


def test_append_adds_rows(form: FetchForm, workspace: Workspace) -> None:
    form.set(distinct_ids="user_000001, user_000002", table="picked")
    assert form.fetch() is not None
    first = len(workspace.table("picked"))
    form.set(distinct_ids="user_000003", append=True)
    assert form.fetch() is not None
    assert len(workspace.table("picked")) == first + len(_expected(workspace, form.query))


def test_errors_are_one_line_in_the_form_never_raised(form: FetchForm) -> None:
    form.set(table="never_fetched", append=True)  # appending to a table that does not exist
    assert form.fetch() is None or form.error is not None
    assert form.error is not None
    assert "\n" not in form.error and "Traceback" not in form.status.value
    assert "never_fetched" in form.error
    assert "mp-form-status-error" in form.status.value
    assert form.fetch_button.disabled is False  # ready for another try


def test_fetch_refuses_while_invalid(form: FetchForm) -> None:
    form.set(include_all_users=True)
    assert form.fetch() is None
    assert form.result is None
    assert "fix the fields" in form.status.value
    assert form.start() is None  # the button path refuses too


def test_default_workspace_is_used_when_none_given(workspace: Workspace) -> None:
    set_default_workspace(workspace)
    try:
        form = fetch_form(table="via_default")
        form.set(distinct_id="user_000005")
        assert form.fetch() is not None, form.error
        assert form.workspace is workspace
        assert "via_default" in workspace.tables()
    finally:
        set_default_workspace(None)


def test_package_exposes_fetch_form() -> None:
    import mp_magic

    with Workspace() as ws:
        form = mp_magic.fetch_form(ws, table="from_package")
        assert isinstance(form, FetchForm)
        assert form.table_name == "from_package"


@pytest.mark.parametrize("cause", ["refused before a request", "refused by the server"])
def test_a_failed_fetch_shows_the_failure_in_the_progress_area(
    form: FetchForm, workspace: Workspace, cause: str
) -> None:
    from mp_magic.emulator import Fault
    from mp_magic.progress import FAILED_CLASS

    if cause == "refused by the server":
        _ = workspace.client  # starts the emulator, so it can be told to refuse page 0
        workspace.emulator.add_fault(Fault(kind="status", status=403, pages={0}, times=1))
        form.set(table="forbidden")
    else:
        form.set(table="never_fetched", append=True)
    assert form.fetch() is None and form.error is not None
    (box,) = form.progress_box.children
    shown = " ".join(
        f"{getattr(w, 'description', '')} {w.value}"
        for w in _widgets(box)
        if isinstance(getattr(w, "value", None), str) or getattr(w, "description", "")
    )
    assert "connecting" not in shown and "starting" not in shown, shown
    assert FAILED_CLASS in box._dom_classes
    assert "failed" in shown and html.escape(form.error) in shown, shown


def _widgets(box: Any) -> list[Any]:
    found = [box]
    for child in getattr(box, "children", ()):
        found.extend(_widgets(child))
    return found

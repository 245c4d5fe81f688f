"""Every notebook in notebooks/ runs top to bottom in a real kernel, with no credentials.

The kernel is this venv's Python (a kernelspec written to a temporary JUPYTER_PATH entry, which
Jupyter searches before the user's own kernels), started by nbclient in a copy of notebooks/ so
exports land in a temporary directory. No MP_* variable reaches it, so the built-in emulator is the
source, as on Binder or a fresh clone.

Cells tagged ``expect-dataframe`` must show a pandas DataFrame (HTML with the columns listed in
the cell's ``mp_magic.columns`` metadata). No output may contain an error, a traceback, or the
emulator's secret. Every HTML table (all of them come from mp_magic here) carries MathJax's
ignore classes, so a saved notebook shows its `$` literally too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbtest_support import EMULATOR_SECRET, NOTEBOOKS, checkout_env, install_kernelspec

pytestmark = [pytest.mark.notebook, pytest.mark.slow]

NOTEBOOK_FILES = sorted(NOTEBOOKS.glob("*.ipynb"))
EXPECTED = {"quickstart.ipynb", "parallel_fetch.ipynb", "fetch_form.ipynb"}


def _outputs_text(output: Any) -> str:
    """Everything an output could show, as one string (for the leak and error checks)."""
    parts: list[str] = []
    if output.get("output_type") == "stream":
        parts.append(str(output.get("text", "")))
    if output.get("output_type") == "error":
        parts.extend([str(output.get("ename")), str(output.get("evalue"))])
        parts.extend(str(line) for line in output.get("traceback", []))
    for value in (output.get("data") or {}).values():
        parts.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(parts)


def test_all_expected_notebooks_exist() -> None:
    assert {path.name for path in NOTEBOOK_FILES} >= EXPECTED


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=[p.name for p in NOTEBOOK_FILES])
def test_notebook_is_stored_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: stored with outputs"
            assert cell.execution_count is None, f"{path.name}: stored with execution counts"
    text = path.read_text()
    assert EMULATOR_SECRET not in text
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", NOTEBOOK_FILES, ids=[p.name for p in NOTEBOOK_FILES])
def test_notebook_runs_top_to_bottom(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, workdir)
    env = checkout_env(tmp_path)
    jupyter_path = install_kernelspec(tmp_path / "jupyter")
    monkeypatch.setenv("JUPYTER_PATH", str(jupyter_path))
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(workdir / path.name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=240,
        startup_timeout=60,
        allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()

    checked = 0
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        where = f"{path.name} cell {index} ({cell.source.splitlines()[0] if cell.source else ''})"
        assert cell.execution_count is not None, f"{where} did not run"
        for output in cell.outputs:
            text = _outputs_text(output)
            assert output.output_type != "error", f"{where}: {text}"
            assert "Traceback" not in text, f"{where}: {text}"
            assert EMULATOR_SECRET not in text, f"{where} shows the secret"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Error" not in text, f"{where}: {text}"
            table = (output.get("data") or {}).get("text/html", "")
            if "<table" in table:  # every table here comes from mp_magic: `$` is not LaTeX
                assert "mathjax_ignore" in table and "tex2jax_ignore" in table, f"{where}"
        if "expect-dataframe" in cell.metadata.get("tags", []):
            checked += 1
            html = [
                o["data"]["text/html"] for o in cell.outputs if "text/html" in (o.get("data") or {})
            ]
            assert html, f"{where}: expected a DataFrame, got {cell.outputs}"
            shown = "\n".join(html)
            assert 'class="dataframe' in shown, f"{where}: not a DataFrame: {shown[:300]}"
            for column in cell.metadata.get("mp_magic", {}).get("columns", []):
                assert f"<th>{column}</th>" in shown, f"{where}: no column {column}"
    assert checked >= 1, f"{path.name}: no cell tagged expect-dataframe"

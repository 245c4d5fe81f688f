"""The quickstart in a real JupyterLab, driven by headless Chromium: what a new user sees.

A JupyterLab server is started on a free loopback port (random token, a temporary copy of
notebooks/, temporary settings and workspaces so no earlier session leaks in), the quickstart is
opened, Run → Run All Cells is chosen from the menu, and the test waits for the progress widget's
done state (``.mp-progress-done``) and a rendered DataFrame. The screenshot goes to
artifacts/screenshots/quickstart.png (the README shows it).

Needs Playwright (python) and a Chromium: Debian's /usr/bin/chromium, or CHROMIUM_PATH. Missing
either one skips the test on a workstation but FAILS it when ``CI`` is set, so CI cannot go green
without having run it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nbtest_support import (
    ARTIFACTS,
    EMULATOR_SECRET,
    NOTEBOOKS,
    checkout_env,
    install_kernelspec,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOT = ARTIFACTS / "screenshots" / "quickstart.png"
SERVER_START_TIMEOUT = 60.0
RUN_TIMEOUT_MS = int(os.environ.get("BROWSER_TEST_TIMEOUT_MS", "") or 90_000)
FAILURE_SCREENSHOT = ARTIFACTS / "screenshots" / "quickstart-failure.png"


def _unavailable(reason: str) -> None:
    """Skip on a workstation; fail in CI, where a browser test that did not run is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"browser test cannot run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _chromium() -> str:
    candidates = [
        os.environ.get("CHROMIUM_PATH", ""),
        "/usr/bin/chromium",
        shutil.which("chromium") or "",
        shutil.which("chromium-browser") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    _unavailable("no Chromium found (apt-get install chromium, or set CHROMIUM_PATH)")
    raise AssertionError("unreachable")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Lab:
    url: str
    token: str
    process: subprocess.Popen[bytes]
    log: Path
    root: Path

    def tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def _write_lab_settings(settings_dir: Path) -> None:
    """Start the notebook's kernel without asking; no news or update toasts over the notebook."""
    settings = {
        ("apputils-extension", "notification"): {
            "fetchNews": "false",
            "checkForUpdates": False,
            "doNotDisturbMode": True,
        },
        ("notebook-extension", "tracker"): {"autoStartDefaultKernel": True},
    }
    for (extension, plugin), values in settings.items():
        target = settings_dir / "@jupyterlab" / extension
        target.mkdir(parents=True, exist_ok=True)
        (target / f"{plugin}.jupyterlab-settings").write_text(json.dumps(values))


def _stop(process: subprocess.Popen[bytes]) -> None:
    """End the server and its kernels: the whole process group it leads, TERM then KILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    root = tmp_path / "notebooks"
    shutil.copytree(NOTEBOOKS, root)
    env = checkout_env(tmp_path)
    env["JUPYTER_PATH"] = str(install_kernelspec(tmp_path / "jupyter"))
    env["JUPYTERLAB_SETTINGS_DIR"] = str(tmp_path / "lab-settings")
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(tmp_path / "lab-workspaces")
    env["JUPYTER_RUNTIME_DIR"] = str(tmp_path / "runtime")
    env["JUPYTER_CONFIG_DIR"] = str(tmp_path / "config")
    env["MPLBACKEND"] = "Agg"
    _write_lab_settings(tmp_path / "lab-settings")
    port = _free_port()
    token = secrets.token_hex(16)
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--ServerApp.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        "--LabApp.news_url=",
        "--LabApp.expose_app_in_browser=True",
        "--LabApp.extension_manager=readonly",  # no PyPI lookups from the extension manager
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # CI containers often run as root
        command.append("--allow-root")
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kernels die with it
        )
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, process=process, log=log, root=root)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if process.poll() is not None:
                pytest.fail(f"JupyterLab exited with {process.returncode}:\n{server.tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer in {SERVER_START_TIMEOUT:.0f}s:\n"
                        f"{server.tail()}"
                    )
                time.sleep(0.3)
        yield server
    finally:
        _stop(process)


def _open_notebook(page: Any, lab: Lab, name: str) -> None:
    """Open the notebook and wait for its kernel to be idle; one retry if the first load fails."""
    url = f"{lab.url}/lab/tree/{name}?token={lab.token}"
    last: Exception | None = None
    for _attempt in range(2):
        try:
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            _accept_kernel_dialog(page)
            page.wait_for_function(
                "() => { const s = document.querySelector("
                "'.jp-NotebookPanel-toolbar .jp-Toolbar-kernelStatus, "
                ".jp-Notebook-ExecutionIndicator');"
                " return !s || (s.getAttribute('data-status') || 'idle') === 'idle'; }",
                timeout=60_000,
            )
            return
        except Exception as exc:  # a slow first start of Lab: reload once
            last = exc
    raise AssertionError(f"could not open {name}: {last}\n{lab.tail()}")


def _accept_kernel_dialog(page: Any) -> None:
    """If Lab still asks which kernel to start, take its proposal (the notebook's python3)."""
    with contextlib.suppress(Exception):
        dialog = page.wait_for_selector(".jp-Dialog", timeout=3_000)
        if dialog is not None and "Select Kernel" in dialog.inner_text():
            page.click(".jp-Dialog .jp-mod-accept", timeout=5_000)
            page.wait_for_selector(".jp-Dialog", state="detached", timeout=10_000)


def _run_all_cells(page: Any) -> None:
    """Run → Run All Cells from the menu bar; the command itself if the menu is not there."""
    try:
        page.click("li.lm-MenuBar-item:has-text('Run')", timeout=10_000)
        page.click(".lm-Menu-item:has-text('Run All Cells')", timeout=10_000)
    except Exception:
        page.keyboard.press("Escape")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


@contextlib.contextmanager
def _browser_page() -> Iterator[Any]:
    """A page in headless Chromium (skip or, in CI, fail when Playwright/Chromium are missing)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not importable ({exc}); pip install playwright")
    executable = _chromium()
    with sync_playwright() as pw:
        try:
            browser = pw.chromium.launch(
                executable_path=executable, headless=True, args=CHROMIUM_ARGS
            )
        except Exception as exc:
            _unavailable(f"Chromium at {executable} does not start: {exc}")
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def _assert_no_errors(page: Any) -> None:
    text = page.inner_text(".jp-Notebook")
    assert "Traceback" not in text, text[-2000:]
    assert EMULATOR_SECRET not in text
    errors = page.query_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']"
    )
    assert not errors, [e.inner_text() for e in errors]


def _wait_all_cells_ran(page: Any) -> None:
    """Every cell finished: no prompt still shows [*]."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('.jp-InputArea-prompt')]"
        ".every(p => !p.textContent.includes('*'))",
        timeout=RUN_TIMEOUT_MS,
    )


def test_quickstart_runs_in_jupyterlab(lab: Lab) -> None:
    FAILURE_SCREENSHOT.unlink(missing_ok=True)
    with _browser_page() as page:
        try:
            _open_notebook(page, lab, "quickstart.ipynb")
            _run_all_cells(page)

            done = page.wait_for_selector(".mp-progress-done", timeout=RUN_TIMEOUT_MS)
            assert done is not None
            page.wait_for_selector(
                ".jp-OutputArea-output.jp-RenderedHTMLCommon table.dataframe",
                timeout=RUN_TIMEOUT_MS,
            )
            _wait_all_cells_ran(page)
            _assert_no_errors(page)
            partial = page.query_selector_all(".mp-progress-partial")
            assert not partial, "a fetch in the quickstart came back partial"
            # the tables' `$` (property names in the JSON, values such as `$20+`): shown as
            # typed, never as math
            _assert_no_math_in_outputs(page)
            fetched = _output_of_cell(page, "%mp_profiles df")
            assert "5000 rows" in fetched.inner_text(), fetched.inner_text()[:500]
            assert _scrolls_sideways(fetched), "the wide profiles table lost its horizontal scroll"
            raw_json = _output_of_cell(page, "%mp_sql SELECT distinct_id, properties")
            assert '"$email"' in raw_json.inner_text(), raw_json.inner_text()[:500]

            # the screenshot the README shows: the fetch's progress bar and its DataFrame
            with contextlib.suppress(Exception):  # more room for the table
                page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            page.evaluate(
                "() => document.querySelector('.mp-progress-done').closest('.jp-Cell')"
                ".scrollIntoView({block: 'start'})"
            )
            page.wait_for_timeout(800)
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
            assert SCREENSHOT.stat().st_size > 10_000
            # and the properties JSON, every `$` as typed
            raw_json.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            page.screenshot(path=str(SCREENSHOT.with_name("quickstart-properties.png")))
        except BaseException:
            _on_failure(page, lab, FAILURE_SCREENSHOT)
            raise


MATH_SELECTOR = "mjx-container, .MathJax, .MathJax_Display, .MathJax_Preview"


def _assert_no_math_in_outputs(page: Any) -> None:
    """No output was typeset by MathJax: every `$` in a table stayed a `$`."""
    typeset = page.query_selector_all(
        ", ".join(f".jp-OutputArea-output {s}" for s in MATH_SELECTOR.split(", "))
    )
    assert not typeset, [t.inner_text() for t in typeset][:5]


def _output_of_cell(page: Any, source_start: str) -> Any:
    """The output area of the first code cell whose source starts with ``source_start``."""
    for cell in page.query_selector_all(".jp-CodeCell"):
        editor = cell.query_selector(".jp-InputArea-editor")
        if editor is not None and editor.inner_text().strip().startswith(source_start):
            output = cell.query_selector(".jp-OutputArea")
            assert output is not None, f"cell {source_start!r} has no output area"
            return output
    raise AssertionError(f"no cell starting with {source_start!r}")


def _scrolls_sideways(output: Any) -> bool:
    """A table wider than the notebook sits in an element that scrolls horizontally."""
    return bool(
        output.evaluate(
            """(area) => {
                const table = area.querySelector('table.dataframe');
                if (!table) return false;
                for (let el = table.parentElement; el && el !== area.parentElement;
                     el = el.parentElement) {
                    const style = getComputedStyle(el).overflowX;
                    if ((style === 'auto' || style === 'scroll') && el.scrollWidth > el.clientWidth)
                        return true;
                }
                return false;
            }"""
        )
    )


DOLLAR_VALUE = "$a$ costs $b$"
"""Two `$` pairs: MathJax typesets both ``a`` and ``b`` unless the output is marked to be ignored."""


PROGRESS_CELL = """\
from mp_magic.progress import WidgetProgress
from mp_magic.types import FetchPlan, ProfileBatchProgress

for done, total in [(1, 5), (1234, 5000), (0, 1)]:  # short, long and singular labels
    bar = WidgetProgress(countdown_interval=None)
    bar.start(FetchPlan(table="t", total_profiles=total * 1000, page_size=1000,
                        total_pages=total, workers=5, budget_remaining=60))
    bar.batch(ProfileBatchProgress(page_index=0, total_pages=total, rows=1000, success=True,
                                   pages_done=done, rows_total=done * 1000, elapsed_seconds=1.0))
bar.abort("interrupted: 0/1 page kept")  # the longest state word
"""
"""Progress bars whose labels differ in length, as a long fetch's label grows."""


def _assert_bars_line_up(page: Any) -> None:
    """Every bar starts at the same x and has the same length, whatever its label says."""
    page.wait_for_selector(".mp-progress-failed, .mp-progress-interrupted", timeout=60_000)
    boxes = page.evaluate(
        """() => [...document.querySelectorAll('.mp-progress-bar')].map(bar => {
            const track = bar.querySelector('.progress');
            const label = bar.querySelector('.widget-label');
            const r = track.getBoundingClientRect();
            return {label: label ? label.textContent : '', x: r.left, width: r.width};
        })"""
    )
    assert len(boxes) == 3, boxes
    labels = [b["label"] for b in boxes]
    assert labels == ["1/5 pages", "1234/5000 pages", "interrupted"], labels
    assert len({round(b["x"]) for b in boxes}) == 1, boxes
    assert len({round(b["width"]) for b in boxes}) == 1, boxes
    assert boxes[0]["width"] > 50, boxes


def _write_dollar_notebook(path: Path) -> None:
    """A user's own frame (math expected: the control) beside mp_magic's frames (none expected)."""
    import nbformat

    cells = [
        "import pandas as pd\nimport mp_magic\nws = mp_magic.Workspace()",
        f"pd.DataFrame({{'note': [{DOLLAR_VALUE!r}]}})  # the user's own frame: LaTeX as usual",
        f"ws.sql(\"SELECT '{DOLLAR_VALUE}' AS note\")",
        "ws.fetch_profiles('people', progress=False, output_properties=['$email', 'plan'])\n"
        "ws.table('people', raw=True).head(3)  # the JSON: property names start with `$`",
        PROGRESS_CELL,
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_dollar_signs_render_literally_only_in_mp_magic_frames(lab: Lab) -> None:
    """MathJax runs over HTML outputs in JupyterLab (the control frame is typeset), yet mp_magic's
    frames, from `ws.sql` and `ws.table` without `%load_ext`, show every `$` as typed. The same
    notebook shows progress bars with labels of different lengths: they line up."""
    failure = ARTIFACTS / "screenshots" / "dollars-failure.png"
    failure.unlink(missing_ok=True)
    _write_dollar_notebook(lab.root / "dollars.ipynb")
    with _browser_page() as page:
        try:
            _open_notebook(page, lab, "dollars.ipynb")
            _run_all_cells(page)
            page.wait_for_selector(
                ".jp-OutputArea-output table.dataframe:has-text('user_000000')",
                timeout=RUN_TIMEOUT_MS,
            )
            _wait_all_cells_ran(page)
            _assert_no_errors(page)
            control = _output_of_cell(page, "pd.DataFrame(")
            control.wait_for_selector("mjx-container", timeout=60_000)  # the typesetter is on
            ours = [_output_of_cell(page, "ws.sql("), _output_of_cell(page, "ws.fetch_profiles(")]
            for output in ours:
                assert output.query_selector("table.dataframe") is not None
                assert output.query_selector(MATH_SELECTOR) is None, output.inner_html()[:800]
            assert DOLLAR_VALUE in ours[0].inner_text()
            assert '"$email"' in ours[1].inner_text()
            _assert_bars_line_up(page)
            page.screenshot(path=str(ARTIFACTS / "screenshots" / "dollars.png"))
        except BaseException:
            _on_failure(page, lab, failure)
            raise


def _on_failure(page: Any, lab: Lab, path: Path) -> None:
    """Keep what the browser showed when it went wrong (a CI artifact) and the server's log."""
    with contextlib.suppress(Exception):
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))
    print(f"JupyterLab log (tail):\n{lab.tail()}")


def test_fetch_form_renders_and_its_button_fetches(lab: Lab) -> None:
    """The form in a real front end: it renders, and a real click fetches in the background."""
    failure = ARTIFACTS / "screenshots" / "fetch-form-failure.png"
    failure.unlink(missing_ok=True)
    with _browser_page() as page:
        try:
            _open_notebook(page, lab, "fetch_form.ipynb")
            _run_all_cells(page)
            page.wait_for_selector(".mp-fetch-form", timeout=RUN_TIMEOUT_MS)
            _wait_all_cells_ran(page)
            # the cell that drove the form from Python fetched; its status shows in the widget
            page.wait_for_selector(".mp-fetch-form .mp-form-status-done", timeout=RUN_TIMEOUT_MS)
            _assert_no_errors(page)
            form = page.query_selector(".mp-fetch-form")
            assert form is not None
            assert form.query_selector(".mp-progress-done") is not None
            assert form.query_selector(".mp-form-preview table.dataframe") is not None
            _assert_no_math_in_outputs(page)
            preview = form.query_selector(".mp-form-preview")
            assert preview is not None and "\temail\n" in preview.inner_text()  # `$email` typed
            page.evaluate(
                "() => document.querySelector('.mp-fetch-form').scrollIntoView({block: 'start'})"
            )
            page.wait_for_timeout(300)
            page.screenshot(path=str(ARTIFACTS / "screenshots" / "fetch_form_fetched.png"))

            # a real click (a comm message from the browser) on the form's Fetch button
            page.evaluate(
                "() => document.querySelector('.mp-fetch-form').scrollIntoView({block: 'start'})"
            )
            table = page.locator(".mp-fetch-form .mp-form-field-table input")
            table.fill("clicked_users")
            table.press("Tab")
            button = page.locator(".mp-fetch-form .mp-form-fetch")
            button.click()
            page.wait_for_selector(
                ".mp-fetch-form .mp-form-status-done:has-text('clicked_users')",
                timeout=RUN_TIMEOUT_MS,
            )
            assert button.is_enabled()

            # invalid input typed into a field: the message appears, Fetch is disabled
            field = page.locator(".mp-form-field-include_all_users select")
            field.select_option(label="true")
            page.wait_for_selector(
                ".mp-form-error-include_all_users:has-text('add cohort_id')", timeout=30_000
            )
            page.wait_for_function(
                "() => document.querySelector('.mp-fetch-form .mp-form-fetch').disabled",
                timeout=30_000,
            )
            with contextlib.suppress(Exception):
                page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            page.evaluate(
                "() => document.querySelector('.mp-fetch-form').scrollIntoView({block: 'start'})"
            )
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "screenshots" / "fetch_form.png"))
        except BaseException:
            _on_failure(page, lab, failure)
            raise

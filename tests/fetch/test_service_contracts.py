"""The fetch services' public contracts, over HTTP: `ParallelProfileFetcherService(api_client,
storage).fetch_profiles(...)` and `FetcherService.fetch_profiles(parallel=...)`, with their
documented parameters, return types and errors; and the Python API's one emulator notice."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mp_magic import (
    FetchResult,
    ParallelProfileFetchResult,
    ProfileBatchProgress,
    TableExistsError,
    TableNotFoundError,
)
from mp_magic.client import MixpanelAPIClient
from mp_magic.config import Credentials, Secret, Settings
from mp_magic.fetch import FetcherService, ParallelProfileFetcherService
from mp_magic.storage import StorageEngine

PROFILES, PAGE = 730, 100


@pytest.fixture
def parts(
    emulator_factory: Callable[..., Any],
) -> Iterator[tuple[Any, MixpanelAPIClient, StorageEngine]]:
    emu = emulator_factory(profiles=PROFILES, page_size=PAGE)
    settings = Settings(
        api_url=emu.url,
        credentials=Credentials(emu.username, Secret(emu.secret), emu.project_id),
        query_budget="10000/60",  # type: ignore[arg-type]
    )
    with MixpanelAPIClient(settings) as client, StorageEngine() as storage:
        yield emu, client, storage


def ids(storage: StorageEngine, table: str) -> list[str]:
    return list(storage.sql(f"SELECT distinct_id FROM {table} ORDER BY 1")["distinct_id"])


def truth(emu: Any, form: dict[str, str]) -> list[str]:
    return sorted(p["$distinct_id"] for p in emu.expected_profiles(form))


def test_parallel_service_as_documented(
    parts: tuple[Any, MixpanelAPIClient, StorageEngine],
) -> None:
    emu, client, storage = parts
    seen: list[ProfileBatchProgress] = []
    service = ParallelProfileFetcherService(client, storage)
    where = 'properties["plan"] != "free"'
    result = service.fetch_profiles(
        "people",
        where=where,
        output_properties=["plan", "$email"],
        max_workers=3,
        on_batch_complete=seen.append,
        append=False,
        batch_size=1000,
    )
    assert isinstance(result, ParallelProfileFetchResult)
    expected = truth(emu, {"where": where, "output_properties": '["plan","$email"]'})
    assert ids(storage, "people") == expected and result.total_rows == len(expected)
    assert result.failed_pages == 0 and not result.has_failures
    assert [p.page_index for p in seen] and seen[-1].pages_done == result.successful_pages
    with pytest.raises(TableExistsError):
        service.fetch_profiles("people", where=where)
    with pytest.raises(TableNotFoundError):
        service.fetch_profiles("missing", append=True)
    with pytest.raises(TypeError):
        service.fetch_profiles("other", parallel=False)


@pytest.mark.parametrize("parallel", [False, True])
def test_fetcher_service_picks_its_result_type(
    parts: tuple[Any, MixpanelAPIClient, StorageEngine], parallel: bool
) -> None:
    emu, client, storage = parts
    rows: list[int] = []
    result = FetcherService(client, storage).fetch_profiles(
        "people", parallel=parallel, cohort_id=3, progress_callback=rows.append
    )
    assert isinstance(result, ParallelProfileFetchResult if parallel else FetchResult)
    expected = truth(emu, {"filter_by_cohort": '{"id":3}'})
    assert ids(storage, "people") == expected
    assert rows and rows[-1] == len(expected)  # the row-count callback, page by page


def test_the_python_api_says_once_that_it_uses_the_emulator(tmp_path: Path) -> None:
    script = (
        "import mp_magic\n"
        "for name in ('a', 'b'):\n"
        "    ws = mp_magic.Workspace()\n"
        "    ws.fetch_profiles(name, distinct_id='user_000001', progress=False)\n"
        "    ws.close()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MP_")}
    env.update(
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
        MP_CONFIG_FILE=str(tmp_path / "absent.toml"),
    )
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "using the built-in emulator" in lines[0], done.stderr

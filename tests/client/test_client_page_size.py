"""Page size: asked for with the ``page_size`` form field, but served as the server decides.

Mixpanel documents ``page_size`` only in its answers; clients (Airbyte's) send it as a request
parameter. Whatever was asked, the answer's ``page_size`` is the truth for the session, so an
export must end on a page shorter than *that* (or an empty page) and yield every profile once.
The emulator's ``page_size`` is what it serves; ``honor_page_size_param`` makes it serve the asked
size up to that cap. Every test here holds whichever the emulator does.
"""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest
from mpclient_support import settings_for, stat

from mp_magic.budget import QueryBudget
from mp_magic.client import MixpanelAPIClient
from mp_magic.exceptions import QueryValidationError

pytest.importorskip("mp_magic.emulator")


class RecordingTransport(httpx.HTTPTransport):
    """Real HTTP, remembering each request's form so the test can see what went on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(httpx.QueryParams(request.read().decode())))
        return super().handle_request(request)


def test_page_size_is_sent_as_a_form_field(emulator_factory: Any) -> None:
    emu = emulator_factory(profiles=50)
    transport = RecordingTransport()
    with MixpanelAPIClient(settings_for(emu), budget=QueryBudget(), transport=transport) as client:
        assert client.route == "custom transport"  # its routing is the transport's own
        client.query_engage_page(0, page_size=20)
        client.query_engage_page_with_body(0, page_size=30)
        list(client.export_profiles(page_size=40))
        client.query_engage_page(0)
    sizes = [form.get("page_size") for form in transport.forms]
    assert sizes[:3] == ["20", "30", "40"]
    assert sizes[-1] is None  # not asked, not sent


@pytest.mark.parametrize("honoured", [False, True], ids=["ignored", "honoured-up-to-cap"])
@pytest.mark.parametrize("asked", [100, 700, 5000])
def test_export_yields_every_profile_once_whatever_the_server_serves(
    honoured: bool, asked: int, emulator_factory: Any, client_factory: Any
) -> None:
    emu = emulator_factory(
        profiles=2300, page_size=300, honor_page_size_param=honoured, max_page_size=300
    )
    client = client_factory(emu)
    served_sizes: list[int] = []
    first = client.query_engage_page(0, page_size=asked)
    served = first["page_size"]
    assert served in (300, min(asked, 300))  # the cap, or the asked size under it
    assert len(first["results"]) == served
    emu.reset_stats()

    got = list(client.export_profiles(page_size=asked, on_batch=served_sizes.append))
    assert got == emu.expected_profiles({})  # every profile, once, in order
    full, rest = divmod(2300, served)
    assert stat(emu, "requests") == full + 1  # the short (or empty) page ends it
    assert served_sizes[-1] == 2300
    assert len(served_sizes) == full + 1
    assert math.ceil(2300 / served) == full + (1 if rest else 0)


def test_the_raw_path_reports_what_was_served(emulator_factory: Any, client_factory: Any) -> None:
    emu = emulator_factory(profiles=500, page_size=200)
    client = client_factory(emu)
    head, _ = client.query_engage_page_with_body(0, page_size=1000)
    assert head.page_size == 200  # the answer, not the request
    assert head.count == 200
    assert head.total == 500


@pytest.mark.parametrize("bad", [0, -5, True, 2.5, "100"])
def test_a_bad_page_size_is_refused_before_any_request(
    bad: Any, client: MixpanelAPIClient, emu: Any
) -> None:
    for call in (
        lambda: client.query_engage_page(0, page_size=bad),
        lambda: client.query_engage_page_with_body(0, page_size=bad),
        lambda: client.export_profiles(page_size=bad),  # eagerly, not at the first next()
    ):
        with pytest.raises(QueryValidationError) as info:
            call()
        assert info.value.parameter == "page_size"
        assert "page_size" in str(info.value)
    assert stat(emu, "requests") == 0

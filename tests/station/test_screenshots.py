"""Screenshots of the line view and the stop list at 1280×800 (a 10-inch tablet).

``PLANTSTREAM_WRITE_SHOTS=1 pytest tests/station/test_screenshots.py`` rewrites
``docs/img/station-line.png`` and ``docs/img/station-stops.png`` (shown in the README and
docs/station.md); without it the pictures go to a temporary folder and are only checked.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.station.conftest import PINS, Served, shots_dir, sign_in

pytestmark = pytest.mark.integration


def test_line_view_and_stop_list_screenshots(served_station: Served, page, tmp_path: Path) -> None:
    s = served_station
    out = shots_dir() if os.environ.get("PLANTSTREAM_WRITE_SHOTS") else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    sign_in(page, s.url, "op-ana", PINS["op-ana"])
    page.wait_for_function("document.querySelector('#machines').getAttribute('data-updated') !== null")
    page.screenshot(path=str(out / "station-line.png"))
    page.goto(f"{s.url}/machine/press-01")
    page.screenshot(path=str(out / "station-stops.png"))
    page.goto(f"{s.url}/machine/press-01/stop/{s.seeded.long_stop}")
    page.screenshot(path=str(out / "station-stop.png"))
    for name in ("station-line.png", "station-stops.png", "station-stop.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") == 1280
        assert int.from_bytes(data[20:24], "big") == 800

"""The station's pages in headless Chromium against a real broker and chDB (the test owns chDB).

What reaches Kafka is read back from the broker: the Measurements of the operator-entry
contract and the audit record. The restatement by the OEE flow itself is checked end to end
against ``plantstream run`` in ``test_station_run.py``.
"""

from __future__ import annotations

import re

import orjson
import pytest

from plantstream.connectors import kafka
from plantstream.flows.operator_entries import TOPIC as ENTRIES
from tests.station.conftest import BADGE_ANA, PINS, Served, sign_in

pytestmark = pytest.mark.integration


def sent(served: Served) -> tuple[list[dict], list[dict]]:
    ms = [orjson.loads(v) for v in served.records(kafka.MEASUREMENTS)]
    entries = [orjson.loads(v) for v in served.records(ENTRIES)]
    return ms, entries


def test_sign_in_line_view_and_a_reason_for_an_unexplained_stop(served_station: Served, page) -> None:
    s = served_station
    sign_in(page, s.url, "op-ana", PINS["op-ana"])
    assert page.url.endswith("/line/line-1")  # Ana may use one line: straight to it
    cards = page.locator(".card.machine")
    assert cards.count() == 2
    assert "fault" in page.locator('[data-machine="press-02"]').inner_text()
    assert "Stopped" in page.locator('[data-machine="press-02"] .stop').inner_text()
    oee = page.locator('[data-machine="press-01"] .oee')
    assert "%" in oee.inner_text() and re.search(r"\b(good|warn|bad)\b", oee.get_attribute("class") or "")
    # the live feed replaces the machines without a reload
    page.wait_for_function("document.querySelector('#machines').getAttribute('data-updated') !== null")

    page.click('[data-machine="press-01"]')
    first = page.locator(".stopitem").first
    assert "unexplained" in (first.get_attribute("class") or "")  # unexplained stops first
    page.click(f'.stopitem[data-start="{s.seeded.unexplained}"]')
    assert page.locator("#stop-reason").inner_text() == "unassigned"
    # the tree is searchable: typing hides what does not match
    page.fill("#reason-search", "mater")
    assert page.locator('button.choice[value="jam"]').is_hidden()
    before = s.end_offsets()
    page.click('button.choice[value="waiting_material"]')
    assert "Saved: reason waiting_material" in page.locator("#flash").inner_text()
    after = s.end_offsets()
    assert after[kafka.MEASUREMENTS] == before[kafka.MEASUREMENTS] + 1
    assert after[ENTRIES] == before[ENTRIES] + 1
    ms, entries = sent(s)
    stop_end = s.seeded.unexplained + 4 * 60_000
    assert ms == [
        {
            "ts": stop_end + 1,
            "machine": "press-01",
            "metric": "reason_code",
            "value": "waiting_material",
            "site": "plant-a",
            "line": "line-1",
            "unit": "",
            "source": "station",
            "quality": "good",
        }
    ]
    [e] = entries
    assert (
        e["operator_id"],
        e["role"],
        e["action"],
        e["machine"],
        e["stop_start"],
        e["before"],
        e["after"],
    ) == ("op-ana", "operator", "reason", "press-01", s.seeded.unexplained, "unassigned", "waiting_material")


def test_badge_sign_in_wrong_pin_and_session_end(served_station: Served, page) -> None:
    s = served_station
    sign_in(page, s.url, "op-ana", "0000")
    assert "not recognised" in page.locator("#error").inner_text()
    page.goto(s.url + "/signin")
    page.fill("#secret", BADGE_ANA)
    page.click("#signin")
    assert page.url.endswith("/line/line-1")
    page.click("text=Sign out")
    assert page.url.endswith("/signin")
    page.goto(s.url + "/machine/press-01")
    assert page.url.endswith("/signin")

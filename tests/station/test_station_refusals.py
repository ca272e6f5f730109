"""Bad input is refused with a message and sends nothing (Kafka end offsets unchanged); splits,
corrections and scrap send what the operator-entry contract says; without Kafka the station is
read-only with a banner."""

from __future__ import annotations

import re
from typing import Any

import httpx
import orjson
import pytest

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.flows.operator_entries import TOPIC as ENTRIES
from tests.station.conftest import PINS, Served, sign_in

pytestmark = pytest.mark.integration


def client_for(s: Served, operator: str) -> tuple[httpx.Client, str]:
    """An HTTP client signed in as ``operator``, and its CSRF token."""
    c = httpx.Client(base_url=s.url, follow_redirects=True, timeout=20)
    token = csrf(c.get("/signin").text)
    r = c.post("/signin", data={"csrf": token, "operator": operator, "secret": PINS[operator]})
    assert r.status_code == 200 and "Sign out" in r.text, r.text[:500]
    return c, csrf(r.text)


def csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:300]
    return m.group(1)


def refused(r: httpx.Response, status: int, text: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:400])
    assert "Not accepted" in r.text and text in r.text, r.text[:800]


def test_bad_input_is_refused_with_a_message_and_nothing_is_sent(served_station: Served) -> None:
    s = served_station
    c, token = client_for(s, "op-ana")
    stop = f"/machine/press-01/stop/{s.seeded.unexplained}"
    before = s.end_offsets()
    refused(c.post(stop + "/reason", data={"csrf": token, "code": "coffee_break"}), 400, "unknown reason")
    refused(c.post(stop + "/reason", data={"code": "jam"}), 403, "CSRF token")  # forged: no token
    refused(c.post(stop + "/reason", data={"csrf": "forged", "code": "jam"}), 403, "CSRF token")
    refused(
        c.post(
            f"/machine/cnc-01/stop/{s.seeded.now - 2 * 3_600_000}/reason", data={"csrf": token, "code": "jam"}
        ),
        403,
        "belongs to line line-2",
    )
    refused(
        c.post("/machine/press-99/stop/1/reason", data={"csrf": token, "code": "jam"}), 404, "unknown machine"
    )
    refused(
        c.post(
            f"/machine/press-01/stop/{s.seeded.unexplained + 1}/reason", data={"csrf": token, "code": "jam"}
        ),
        404,
        "has no stop that started",
    )
    for qty in ("0", "-3", "2.5", "abc", "1e9"):
        refused(
            c.post("/machine/press-01/scrap", data={"csrf": token, "quantity": qty, "reason": "burr"}),
            400,
            "whole number of parts",
        )
    refused(
        c.post("/machine/press-01/scrap", data={"csrf": token, "quantity": "3", "reason": "gremlins"}),
        400,
        "unknown scrap reason",
    )
    refused(c.post(stop + "/split", data={"csrf": token, "at": "99:00", "code": "jam"}), 400, "time of day")
    # a stop of another line's machine cannot even be shown
    assert c.get("/line/line-2").status_code == 403
    # another site's form (a cross-site POST carries no session cookie: SameSite=strict) signs nobody in
    other = httpx.Client(base_url=s.url, timeout=20)
    refused(other.post("/signin", data={"operator": "op-ana", "secret": PINS["op-ana"]}), 403, "CSRF token")
    assert s.end_offsets() == before


def test_sign_in_and_entries_are_rate_limited(served_station: Served) -> None:
    s = served_station
    c = httpx.Client(base_url=s.url, follow_redirects=True, timeout=20)
    token = csrf(c.get("/signin").text)
    codes = [
        c.post("/signin", data={"csrf": token, "operator": "op-ana", "secret": "0000"}).status_code
        for _ in range(21)
    ]
    assert codes[:20] == [401] * 20 and codes[20] == 429


def test_split_then_a_supervisor_corrects_it(served_station: Served) -> None:
    s = served_station
    start = s.seeded.long_stop  # 20 minutes, closed, no reason
    ana, token = client_for(s, "op-ana")
    at = s.station.clock(start + 8 * 60_000)
    r = ana.post(
        f"/machine/press-01/stop/{start}/split", data={"csrf": token, "at": at, "code": "die_change"}
    )
    assert "the stop is split" in r.text
    r = ana.post(f"/machine/press-01/stop/{start}/reason", data={"csrf": token, "code": "jam"})
    assert "Saved: reason jam" in r.text
    # Ben may not change Ana's entries; Cleo (supervisor) may
    ben, btoken = client_for(s, "op-ben")
    refused(
        ben.post(f"/machine/press-01/stop/{start}/reason", data={"csrf": btoken, "code": "no_operator"}),
        403,
        "only a supervisor may correct it",
    )
    cleo, ctoken = client_for(s, "sup-cleo")
    r = cleo.post(f"/machine/press-01/stop/{start}/reason", data={"csrf": ctoken, "code": "no_operator"})
    assert "Saved: reason no_operator" in r.text
    ms = [orjson.loads(v) for v in s.records(kafka.MEASUREMENTS)]
    end = start + 20 * 60_000
    assert [(m["metric"], m["ts"], m["value"]) for m in ms] == [
        ("reason_split", start + 8 * 60_000, "die_change"),
        ("reason_code", end + 2, "jam"),  # one station entry (the split) before it
        ("reason_code", end + 3, "no_operator"),  # later in event time than what it corrects
    ]
    entries = [orjson.loads(v) for v in s.records(ENTRIES)]
    assert [(e["operator_id"], e["action"], e["split_at"]) for e in entries] == [
        ("op-ana", "split", start + 8 * 60_000),
        ("op-ana", "reason", None),
        ("sup-cleo", "correct", None),
    ]


def test_scrap_sends_reason_rejects_and_the_previous_reason(served_station: Served) -> None:
    s = served_station
    c, token = client_for(s, "op-ana")
    r = c.post("/machine/press-01/scrap", data={"csrf": token, "quantity": "7", "reason": "crack"})
    assert "Saved: 7 rejects, reason crack" in r.text
    ms = [orjson.loads(v) for v in s.records(kafka.MEASUREMENTS)]
    assert [(m["metric"], m["value"]) for m in ms] == [
        ("scrap_reason", "crack"),
        ("reject_parts", 7),
        ("scrap_reason", "unassigned"),
    ]
    assert ms[1]["ts"] == ms[0]["ts"] + 1 == ms[2]["ts"] - 1
    # at the machine's latest event time (machine_status.last_seen), not the tablet's clock
    assert ms[0]["ts"] == s.seeded.now
    [e] = [orjson.loads(v) for v in s.records(ENTRIES)]
    assert (e["action"], e["quantity"], e["work_order"], e["after"]) == ("scrap", 7.0, "WO-7", "crack")
    # a second, equal entry goes after the first: never taken for a redelivery
    r = c.post("/machine/press-01/scrap", data={"csrf": token, "quantity": "7", "reason": "crack"})
    assert "Saved: 7 rejects, reason crack" in r.text
    again = [orjson.loads(v) for v in s.records(kafka.MEASUREMENTS)][3:]
    assert [m["ts"] for m in again] == [ms[2]["ts"] + 1, ms[2]["ts"] + 2, ms[2]["ts"] + 3]


def test_read_only_with_a_banner_while_kafka_is_unreachable(
    served_station: Served, broker: Any, page
) -> None:
    s = served_station
    sign_in(page, s.url, "op-ana", PINS["op-ana"])
    page.goto(f"{s.url}/machine/press-01/stop/{s.seeded.unexplained}")
    assert page.locator("#readonly").count() == 0
    broker.stop()
    page.wait_for_timeout(4000)  # the probe notices within a few seconds
    page.reload()
    assert "Read-only" in page.locator("#readonly").inner_text()
    assert page.locator('button.choice[value="jam"]').is_disabled()
    c, token = client_for(s, "op-ana")
    refused(
        c.post(f"/machine/press-01/stop/{s.seeded.unexplained}/reason", data={"csrf": token, "code": "jam"}),
        503,
        "read-only",
    )
    # still ready (the tablets keep the banner, not an ingress error page), and says it is read-only
    ready = httpx.get(s.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["read_only"] is True and ready.json()["kafka"] is False


def test_an_open_stop_s_reason_goes_at_the_machine_s_event_time_not_the_wall_clock(
    served_station: Served, ch: Any
) -> None:
    """A replayed or simulated line runs behind the wall clock: the entry must not move it."""
    s = served_station
    start = s.seeded.open_stop  # press-02, open
    row = ch.query(
        "SELECT * FROM downtime_events FINAL WHERE machine = 'press-02' AND `end` IS NULL"
    ).named_results()
    [open_row] = list(row)
    # the flow last saw press-02 five minutes into the stop (an hour behind the wall clock, say)
    chc.insert_rows(ch, "downtime_events", [{**open_row, "duration_s": 300.0, "version": open_row["version"] + 1}])
    ana, token = client_for(s, "op-ana")
    stop = f"/machine/press-02/stop/{start}"
    assert "Saved: reason jam" in ana.post(stop + "/reason", data={"csrf": token, "code": "jam"}).text
    assert "Saved: reason no_operator" in ana.post(
        stop + "/reason", data={"csrf": token, "code": "no_operator"}
    ).text
    ms = [orjson.loads(v) for v in s.records(kafka.MEASUREMENTS)]
    assert [(m["metric"], m["ts"], m["value"]) for m in ms] == [
        ("reason_code", start + 300_000, "jam"),  # the machine's latest event time
        ("reason_code", start + 300_001, "no_operator"),  # after the previous entry, still not the clock
    ]
    # the line moves on (the open row now shows 7 minutes): the next entry follows it
    chc.insert_rows(ch, "downtime_events", [{**open_row, "duration_s": 420.0, "version": open_row["version"] + 2}])
    cleo, ctoken = client_for(s, "sup-cleo")
    assert "Saved: reason die_change" in cleo.post(
        stop + "/reason", data={"csrf": ctoken, "code": "die_change"}
    ).text
    ms = [orjson.loads(v) for v in s.records(kafka.MEASUREMENTS)]
    assert (ms[-1]["ts"], ms[-1]["value"]) == (start + 420_000, "die_change")
    entries = [orjson.loads(v) for v in s.records(ENTRIES)]
    assert [(e["operator_id"], e["action"], e["sent"][0]["ts"]) for e in entries] == [
        ("op-ana", "reason", start + 300_000),
        ("op-ana", "correct", start + 300_001),
        ("sup-cleo", "correct", start + 420_000),
    ]

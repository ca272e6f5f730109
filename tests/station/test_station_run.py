"""Issue 17's must-show, through the user's path: a live ``plantstream run`` and its station.

The simulated PLC line over OPC UA (3 machines, 3 hours of the line played at 60× real time,
from three hours ago) → ``plantstream init --opcua`` → ``plant.yaml`` plus the plant's
reasons (``losses.reason_codes``) and ``station: {enabled: true, port: 0}`` with two operators
→ ``plantstream run --config plant.yaml --clickhouse-port 0`` (embedded broker, embedded chDB
served read-only over HTTP, the OPC UA connector, the flows and the operator station as
supervised children; the station's URL from ``state/endpoints.json``). Then, in headless
Chromium while the line runs:

- Ana (operator) signs in, opens the line view, picks an unexplained stop of a machine and
  assigns it a reason: within 5 s ``plantstream kpi downtime --format json --clickhouse URL``
  shows that stop with that reason and category and a higher version, and the machine's OEE
  is unchanged apart from the time that passed — the facts of every window up to a cut taken
  before the entry (the windows the stop covers among them) are identical, row for row, and so
  is ``kpi oee`` up to that cut.
- Cleo (supervisor) corrects Ana's reason: restated again within 5 s (higher version), both
  entries in ``operator_entries`` (read through the run's endpoint).
- Ana splits another stop: still one downtime event, two parts whose minutes sum to the
  stop's, within 5 s; Cleo corrects the second part; both entries in ``operator_entries``.

The 5 s are counted from the page saying "Saved" to the ``kpi`` command (its start-up
included) printing the restated stop; the figures are printed.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import pytest
from playwright.sync_api import expect

from plantstream.cli.endpoints import wait_http
from plantstream.connectors.embedded import free_port
from plantstream.station.auth import hash_secret
from tests.run.test_run_opcua import EXE, _env, cli, init_config
from tests.station.conftest import sign_in

pytestmark = pytest.mark.integration

SPEED = 60
SIM_HOURS = 3
PIN = {"op-ana": "4711", "sup-cleo": "9999"}
RESTATED_WITHIN_S = 5.0
REASONS = {
    "waiting_material": ("waiting_material", "material"),
    "no_operator": ("no_operator", "operator"),
    "die_change": ("die_change", "changeover"),
    "jam": ("jam", "mechanical"),
}


@dataclass
class LiveRun:
    tmp: Path
    run: subprocess.Popen[bytes]
    log: Path
    station: str
    clickhouse: str
    client: Any

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        res = self.client.query(sql, parameters=params)
        return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]

    def alive(self) -> None:
        assert self.run.poll() is None, self.log.read_text()[-4000:]


def _plant_yaml(tmp: Path, station_extra: str = "") -> None:
    """``init``'s plant.yaml plus the operators' reasons and the station with two operators
    (``station_extra``: more lines of the station section)."""
    text = (tmp / "plant.yaml").read_text()
    reasons = "".join(
        f"    {code}: {{reason: {r}, category: {c}}}\n" for code, (r, c) in REASONS.items()
    )
    assert "\nlosses:\n" in text
    text = text.replace("\nlosses:\n", f"\nlosses:\n  reason_codes:\n{reasons}", 1)
    text += (
        f"station:\n  enabled: true\n  port: 0\n  refresh_s: 1\n{station_extra}  operators:\n"
        f'    - {{id: op-ana, name: Ana, pin_hash: "{hash_secret(PIN["op-ana"])}"}}\n'
        f'    - {{id: sup-cleo, name: Cleo, role: supervisor, pin_hash: "{hash_secret(PIN["sup-cleo"])}"}}\n'
    )
    (tmp / "plant.yaml").write_text(text)
    assert "valid" in cli(tmp, "config", "check", "plant.yaml")


@contextlib.contextmanager
def live_run(tmp: Path, *, speed: float = SPEED, hours: float = SIM_HOURS, machines: int = 3,
             station_extra: str = "") -> Iterator[LiveRun]:
    """The PLC simulator (``hours`` of the line up to now, played at ``speed``) and ``plantstream
    run`` with the station on it, until the block ends (then SIGTERM, SIGINT)."""
    port = free_port()
    start = (datetime.now(UTC) - timedelta(hours=hours)).replace(second=0, microsecond=0)
    sim = subprocess.Popen(
        [EXE, "simulate", "plc", "--seed", "3", "--machines", str(machines), "--port", str(port), "--speed",
         str(speed), "--start", start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--duration", str(hours), "--linger", "900",
         "--wait-for-client"],
        cwd=tmp, env=_env(), stdout=subprocess.DEVNULL, stderr=(tmp / "sim.log").open("wb"),
    )
    run: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and sim.poll() is None, (tmp / "sim.log").read_text()
                time.sleep(0.2)
        init_config(tmp, f"opc.tcp://127.0.0.1:{port}/plantstream/plc")
        _plant_yaml(tmp, station_extra)
        log = tmp / "run.log"
        run = subprocess.Popen(
            [EXE, "run", "--config", "plant.yaml", "--no-live", "--log-every", "10", "--state-dir", "state",
             "--clickhouse-port", "0"],
            cwd=tmp, env=_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT,
        )
        ep_file = tmp / "state" / "endpoints.json"
        deadline = time.monotonic() + 120
        while not ep_file.exists():
            assert time.monotonic() < deadline and run.poll() is None, log.read_text()[-3000:]
            time.sleep(0.3)
        ep = json.loads(ep_file.read_text())
        url, station = ep["clickhouse"]["url"], ep["station"]
        assert station and station.startswith("http://127.0.0.1:"), ep
        assert wait_http(url, 120), log.read_text()[-3000:]
        client = clickhouse_connect.get_client(host="127.0.0.1", port=int(url.rsplit(":", 1)[1]))
        lr = LiveRun(tmp, run, log, station, url, client)
        deadline = time.monotonic() + 120
        while f"operator station on {station}" not in log.read_text() or "station ready" not in log.read_text():
            lr.alive()
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        try:
            yield lr
        finally:
            client.close()
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            try:
                run.wait(timeout=90)
            except subprocess.TimeoutExpired:
                run.kill()
                run.wait(timeout=30)
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sim.kill()
            sim.wait(timeout=30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    with live_run(tmp_path_factory.mktemp("station_run")) as lr:
        yield lr


def pick_stop(lr: LiveRun, *, min_s: float, longest: bool, timeout: float = 200) -> dict[str, Any]:
    """A closed stop without a reason, at least ``min_s`` long (the longest or the shortest),
    that is not its machine's last (the simulator's own ``reason_code`` samples name later stops)."""
    sql = (
        "SELECT machine, toUnixTimestamp64Milli(start) AS start_ms, toUnixTimestamp64Milli(`end`) AS end_ms, "
        "duration_s, version FROM downtime_events_latest AS d WHERE reason = 'unassigned' AND `end` IS NOT NULL "
        "AND duration_s >= {min_s:Float64} AND start < (SELECT max(start) FROM downtime_events_latest AS n "
        f"WHERE n.machine = d.machine) ORDER BY duration_s {'DESC' if longest else 'ASC'} LIMIT 1"
    )
    deadline = time.monotonic() + timeout
    while True:
        lr.alive()
        found = lr.rows(sql, min_s=min_s)
        if found:
            return found[0]
        assert time.monotonic() < deadline, "the line had no unexplained stop to pick"
        time.sleep(2)


def ms_of(iso: str) -> int:
    """Epoch ms of a time as ``kpi --format json`` prints it (UTC, with or without an offset)."""
    t = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return round((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)


def kpi_stop(lr: LiveRun, machine: str, start_ms: int) -> list[dict[str, Any]]:
    """``plantstream kpi downtime --format json --clickhouse URL`` rows of the stop ``(machine, start)``."""
    rows = orjson.loads(
        cli(lr.tmp, "kpi", "downtime", "--format", "json", "--clickhouse", lr.clickhouse, "--machine", machine,
            "--from", str(start_ms), "--to", str(start_ms + 1), timeout=60)
    )
    assert isinstance(rows, list)
    return rows


def until_restated(
    lr: LiveRun, machine: str, start_ms: int, ok: Callable[[dict[str, Any]], bool], saved_at: float
) -> tuple[dict[str, Any], float]:
    """Poll ``kpi downtime`` until the stop satisfies ``ok``; returns it and the seconds since Saved."""
    while True:
        rows = kpi_stop(lr, machine, start_ms)
        took = time.monotonic() - saved_at
        assert len(rows) == 1, rows  # a restatement, never a second stop
        if ok(rows[0]):
            return rows[0], took
        assert took < 30, (rows, lr.log.read_text()[-2000:])
        time.sleep(0.2)


def oee_up_to(lr: LiveRun, machine: str, cut_ms: int) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """``kpi oee --wide`` of the machine over the windows starting before ``cut_ms``, and those
    windows' facts as stored (every column, the version included)."""
    kpi = orjson.loads(
        cli(lr.tmp, "kpi", "oee", "--format", "json", "--wide", "--clickhouse", lr.clickhouse, "--machine", machine,
            "--to", str(cut_ms), timeout=60)
    )
    facts = lr.client.query(
        "SELECT * FROM oee_facts FINAL WHERE machine = {m:String} AND window_start < fromUnixTimestamp64Milli({c:Int64}) "
        "ORDER BY window_start, part_number, work_order, shift",
        parameters={"m": machine, "c": cut_ms},
    ).result_rows
    return kpi, [tuple(r) for r in facts]


def entries_of(lr: LiveRun, machine: str, start_ms: int, n: int) -> list[dict[str, Any]]:
    """The stop's rows of ``operator_entries`` (through the run's endpoint), once there are ``n``."""
    deadline = time.monotonic() + 30
    while True:
        rows = lr.rows(
            "SELECT operator_id, role, action, toUnixTimestamp64Milli(split_at) AS split_at, before, after, sent "
            "FROM operator_entries FINAL WHERE machine = {m:String} AND stop_start = fromUnixTimestamp64Milli({s:Int64}) "
            "ORDER BY ts",
            m=machine, s=start_ms,
        )
        if len(rows) >= n:
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(0.5)


def open_stop_page(page: Any, lr: LiveRun, operator: str, machine: str, start_ms: int, *, unexplained: bool) -> None:
    """Sign in, the line view, the machine's stop list, the stop — by tapping, as on the tablet."""
    sign_in(page, lr.station, operator, PIN[operator])
    assert "/line/" in page.url
    page.wait_for_selector(f'.card.machine[data-machine="{machine}"]')
    page.click(f'[data-machine="{machine}"]')
    item = page.locator(f'.stopitem[data-start="{start_ms}"]')
    assert ("unexplained" in (item.get_attribute("class") or "")) is unexplained
    item.click()
    page.wait_for_selector("#stop-reason")


def new_page(chromium: Any) -> Any:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    return pg


@pytest.mark.timeout(900)
def test_a_reason_then_a_supervisor_correction_restate_the_stop_within_5_s(live: LiveRun, chromium: Any) -> None:
    lr = live
    stop = pick_stop(lr, min_s=1.0, longest=False)
    machine, start, end = stop["machine"], int(stop["start_ms"]), int(stop["end_ms"])
    [before] = kpi_stop(lr, machine, start)
    assert (before["reason"], before["category"]) == ("unassigned", "unassigned")
    # the cut: windows older than the line's event time less 5 minutes are final (allowed lateness 60 s)
    newest = lr.rows(
        "SELECT toUnixTimestamp64Milli(max(window_start)) AS w FROM oee_facts WHERE machine = {m:String}", m=machine
    )[0]["w"]
    cut = max(int(newest) - 5 * 60_000, end + 60_000)
    oee_before = oee_up_to(lr, machine, cut)
    assert oee_before[1] and len(oee_before[0]) == 1 and oee_before[0][0]["planned_min"] > 0

    ana = new_page(chromium)
    try:
        open_stop_page(ana, lr, "op-ana", machine, start, unexplained=True)
        assert ana.locator("#stop-reason").inner_text() == "unassigned"
        ana.click('button.choice[value="jam"]')
        assert "Saved: reason jam" in ana.locator("#flash").inner_text()
        saved = time.monotonic()
        row, took = until_restated(lr, machine, start, lambda r: r["reason"] == "jam", saved)
        print(f"reason: kpi downtime showed the restated stop {took:.2f}s after Saved")
        assert took <= RESTATED_WITHIN_S
        assert row["category"] == "mechanical" and row["version"] > before["version"]
        assert (row["duration_s"], row["end"], row["state"]) == (before["duration_s"], before["end"], before["state"])
        # the page itself shows the restated stop (it re-reads the stop every 2 s)
        expect(ana.locator("#stop-reason")).to_have_text("jam", timeout=10_000)
        expect(ana.locator("#stop-category")).to_have_text("mechanical")
    finally:
        ana.context.close()
    # OEE unchanged apart from the time that passed: identical up to the cut, fact for fact
    assert oee_up_to(lr, machine, cut) == oee_before

    cleo = new_page(chromium)
    try:
        open_stop_page(cleo, lr, "sup-cleo", machine, start, unexplained=False)
        cleo.click('button.choice[value="no_operator"]')
        assert "Saved: reason no_operator" in cleo.locator("#flash").inner_text()
        saved = time.monotonic()
        row2, took = until_restated(lr, machine, start, lambda r: r["reason"] == "no_operator", saved)
        print(f"correction: kpi downtime showed it {took:.2f}s after Saved")
        assert took <= RESTATED_WITHIN_S
        assert row2["category"] == "operator" and row2["version"] > row["version"]
    finally:
        cleo.context.close()
    entries = entries_of(lr, machine, start, 2)
    assert [(e["operator_id"], e["role"], e["action"], e["before"], e["after"]) for e in entries] == [
        ("op-ana", "operator", "reason", "unassigned", "jam"),
        ("sup-cleo", "supervisor", "correct", "jam", "no_operator"),
    ]
    assert [(m["metric"], m["ts"]) for e in entries for m in orjson.loads(e["sent"])] == [
        ("reason_code", end + 1),
        ("reason_code", end + 2),
    ]
    assert oee_up_to(lr, machine, cut) == oee_before


@pytest.mark.timeout(600)
def test_a_split_stop_and_a_supervisor_correction_of_its_second_part(live: LiveRun, chromium: Any) -> None:
    lr = live
    stop = pick_stop(lr, min_s=60.0, longest=True)
    machine, start, end = stop["machine"], int(stop["start_ms"]), int(stop["end_ms"])
    [before] = kpi_stop(lr, machine, start)
    split_at = ((start + end) // 2 // 1000) * 1000  # a whole second strictly inside the stop
    assert start < split_at < end
    at_text = datetime.fromtimestamp(split_at / 1000, UTC).strftime("%H:%M:%S")  # the plant's time zone: UTC

    ana = new_page(chromium)
    try:
        open_stop_page(ana, lr, "op-ana", machine, start, unexplained=True)
        ana.click("#split summary")
        ana.fill("#split-at", at_text)
        ana.select_option("#split-code", "die_change")
        ana.click("#split-form button[type=submit]")
        assert "the stop is split" in ana.locator("#flash").inner_text()
        saved = time.monotonic()
        row, took = until_restated(lr, machine, start, lambda r: len(r["segments"]) == 2, saved)
        print(f"split: kpi downtime showed the two parts {took:.2f}s after Saved")
        assert took <= RESTATED_WITHIN_S
        assert row["version"] > before["version"] and row["duration_s"] == before["duration_s"]
        first, second = row["segments"]
        assert (first["reason"], second["reason"], second["category"]) == ("unassigned", "die_change", "changeover")
        assert ms_of(second["from"]) == split_at
        assert first["duration_s"] + second["duration_s"] == pytest.approx(row["duration_s"], abs=1e-3)
        assert first["duration_s"] == pytest.approx((split_at - start) / 1000, abs=1e-3)
    finally:
        ana.context.close()

    cleo = new_page(chromium)
    try:
        open_stop_page(cleo, lr, "sup-cleo", machine, start, unexplained=True)
        cleo.click("details.segment summary")
        cleo.select_option(".segment-form select", "no_operator")
        cleo.click(".segment-form button[type=submit]")
        assert "that part of the stop is now no_operator" in cleo.locator("#flash").inner_text()
        saved = time.monotonic()
        row2, took = until_restated(
            lr, machine, start, lambda r: [p["reason"] for p in r["segments"]][1:] == ["no_operator"], saved
        )
        print(f"part correction: kpi downtime showed it {took:.2f}s after Saved")
        assert took <= RESTATED_WITHIN_S
        assert row2["version"] > row["version"] and len(row2["segments"]) == 2
        assert row2["segments"][1]["category"] == "operator"
        assert sum(p["duration_s"] for p in row2["segments"]) == pytest.approx(row2["duration_s"], abs=1e-3)
    finally:
        cleo.context.close()
    entries = entries_of(lr, machine, start, 2)
    assert [(e["operator_id"], e["action"], e["split_at"], e["after"]) for e in entries] == [
        ("op-ana", "split", split_at, "die_change"),
        ("sup-cleo", "correct", split_at, "no_operator"),
    ]
    assert [(m["metric"], m["ts"]) for e in entries for m in orjson.loads(e["sent"])] == [
        ("reason_split", split_at),
        ("reason_split", split_at + 2),
    ]
    # still one downtime event for the stop, through the endpoint too
    assert lr.rows(
        "SELECT count() AS n FROM downtime_events_latest WHERE machine = {m:String} "
        "AND start = fromUnixTimestamp64Milli({s:Int64})", m=machine, s=start
    ) == [{"n": 1}]

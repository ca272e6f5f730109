"""Every Grafana dashboard panel's SQL runs against our schema over simulator data.

The dashboards (``helm/plantstream/dashboards/*.json``) are checked for stable uids, a
``${datasource}`` variable used by every panel and query (no hard-coded datasource ids), and
then every query — panels and template variables — is run in chDB with the
grafana-clickhouse-datasource macros expanded the way the plugin expands them, over a simulated
PLC line (3 machines, 3 hours) and a line of the Contoso bakery (5 machines, the fryer included,
3 hours, through the MQTT payload parser and the bakery tag dictionary) that went through the
real flows with the demo's plant config. Key panels are checked against the simulators' ground
truth, and every OEE panel must colour OEE green >= 90 %, yellow 80-90 %, red < 80 % (KPI.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

import bytewax.operators as op  # noqa: F401  (bytewax must import before the flows)
import orjson
import pytest
from bytewax.testing import TestingSource, run_main

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kpi
from plantstream.connectors.kafka import RawMessage
from plantstream.connectors.mqtt import MqttConnector
from plantstream.flows.anomaly import anomaly
from plantstream.flows.archive import archive
from plantstream.flows.demo import demo_config
from plantstream.flows.main import build_dataflow
from plantstream.flows.oee import oee
from plantstream.flows.scrap import scrap
from plantstream.flows.status import status
from plantstream.schemas.config import EXAMPLE_CONFIG, load_config
from plantstream.schemas.measurement import Measurement
from plantstream.simulators.bakery import OIL_TARGET_F, BakerySim, bakery_config
from plantstream.simulators.plc import GroundTruth, simulate

DASHBOARDS = Path(__file__).resolve().parents[2] / "helm" / "plantstream" / "dashboards"
UIDS = {"shop-floor": "plantstream-shop-floor", "supervisor": "plantstream-supervisor",
        "executive": "plantstream-executive", "maintenance": "plantstream-maintenance"}
DS_UID = "${datasource}"
START = 1_763_791_200_000  # 2025-11-22T06:00:00Z
END = START + 3 * 3600 * 1000
BAKERY_MACHINES = 5  # one bakery line: mixer, divider, proofer, fryer, glazer
OEE_THRESHOLDS = {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                {"color": "yellow", "value": 0.8},
                                                {"color": "green", "value": 0.9}]}
ALL: dict[str, list[str] | None] = {"site": None, "line": None, "machine": None}


def load(name: str) -> dict[str, Any]:
    return orjson.loads((DASHBOARDS / f"{name}.json").read_bytes())


def queries(board: dict[str, Any]) -> list[tuple[str, str]]:
    out = [(f"variable {v['name']}", v["query"]) for v in board["templating"]["list"] if v["type"] == "query"]
    out += [(p["title"], t["rawSql"]) for p in board["panels"] for t in p.get("targets", [])]
    return out


# -- the plugin's macros ---------------------------------------------------------------------------


def _split_args(text: str, start: int) -> tuple[list[str], int]:
    """Arguments of a macro call whose '(' is at ``start``; returns them and the index after ')'."""
    depth, args, cur = 0, [], []
    i = start
    while i < len(text):
        c = text[i]
        if c == "(":
            depth += 1
            if depth > 1:
                cur.append(c)
        elif c == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
            cur.append(c)
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
        else:
            cur.append(c)
        i += 1
    raise AssertionError(f"unbalanced macro call in {text[start:start + 80]!r}")


def expand(sql: str, selected: Mapping[str, list[str] | None], from_ms: int = START, to_ms: int = END,
           interval_s: int = 60) -> str:
    """Expand the macros as grafana-clickhouse-datasource does (pkg/macros, conditionalAll)."""
    while (i := sql.find("$__conditionalAll(")) >= 0:
        args, end = _split_args(sql, i + len("$__conditionalAll"))
        var = args[-1].lstrip("$").strip("{}")
        cond = ",".join(args[:-1])
        sql = sql[:i] + ("1=1" if selected.get(var) is None else cond) + sql[end:]

    def values(m: re.Match[str]) -> str:
        chosen = selected.get(m.group(1))
        assert chosen is not None, f"variable {m.group(1)} used outside $__conditionalAll"
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in chosen)

    sql = re.sub(r"\$\{(\w+):singlequote\}", values, sql)
    f_s, t_s = from_ms // 1000, to_ms // 1000
    for name, fn in (
        ("$__timeFilter_ms", lambda c: f"{c} >= fromUnixTimestamp64Milli({from_ms}) AND "
                                       f"{c} <= fromUnixTimestamp64Milli({to_ms})"),
        ("$__timeFilter", lambda c: f"{c} >= toDateTime({f_s}) AND {c} <= toDateTime({t_s})"),
        ("$__dateFilter", lambda c: f"{c} >= toDate(toDateTime({f_s})) AND {c} <= toDate(toDateTime({t_s}))"),
        ("$__timeInterval_ms", lambda c: f"toStartOfInterval(toDateTime64({c}, 3), INTERVAL "
                                         f"{interval_s * 1000} millisecond)"),
        ("$__timeInterval", lambda c: f"toStartOfInterval(toDateTime({c}), INTERVAL {interval_s} second)"),
    ):
        while (i := sql.find(name + "(")) >= 0:
            args, end = _split_args(sql, i + len(name))
            sql = sql[:i] + fn(args[0]) + sql[end:]
    sql = sql.replace("$__fromTime_ms", f"fromUnixTimestamp64Milli({from_ms})")
    sql = sql.replace("$__toTime_ms", f"fromUnixTimestamp64Milli({to_ms})")
    sql = sql.replace("$__fromTime", f"toDateTime({f_s})").replace("$__toTime", f"toDateTime({t_s})")
    sql = sql.replace("$__interval_s", str(interval_s))
    assert "$" not in sql, f"unexpanded macro or variable left: {sql}"
    return sql


def test_expand_follows_the_plugin() -> None:
    sql = "SELECT 1 FROM t WHERE $__timeFilter(ts) AND $__conditionalAll(m IN (${machine:singlequote}), $machine)"
    assert expand(sql, {"machine": None}) == (
        f"SELECT 1 FROM t WHERE ts >= toDateTime({START // 1000}) AND ts <= toDateTime({END // 1000}) AND 1=1")
    assert expand(sql, {"machine": ["a", "b"]}).endswith("AND m IN ('a','b')")


# -- structure ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(UIDS))
def test_dashboard_structure(name: str) -> None:
    board = load(name)
    assert board["uid"] == UIDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "grafana-clickhouse-datasource"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": DS_UID}
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert p["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": DS_UID}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == DS_UID and t["editorType"] == "sql", p["title"]
    text = (DASHBOARDS / f"{name}.json").read_text()
    assert not re.search(r'"datasource"\s*:\s*(\d+|"[^$"][^"]*")', text), "hard-coded datasource"
    assert not re.search(r"\b17\d{11}\b", text), "a literal timestamp instead of a time macro"


# -- every query over simulator data --------------------------------------------------------------


@dataclass
class Plant:
    db: str
    truth: GroundTruth  # the PLC line
    bakery: dict[str, Any]  # BakerySim.ground_truth()

    @property
    def machines(self) -> list[str]:
        return sorted([*self.truth.machines, *self.bakery["counts"]])

    def states(self) -> list[Any]:
        return [*self.truth.states, *self.bakery["states"]]

    def counts(self) -> dict[str, dict[str, Any]]:
        return {**self.truth.counts, **self.bakery["counts"]}


def bakery_measurements(sim: BakerySim, end_ms: int) -> list[Measurement]:
    """The bakery's MQTT payloads as the MQTT connector turns them into Measurements."""
    connector = MqttConnector(bakery_config(BAKERY_MACHINES), {})
    return [m for ts, topic, payload in sim.messages(end_ms)
            for m in connector.convert(topic, payload, ts)[0]]


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, ch_dsn: str) -> Plant:
    base = load_config(EXAMPLE_CONFIG, {})
    config = demo_config(base, machines=3, bakery_machines=BAKERY_MACHINES)
    measurements, truth = simulate(11, 3, START, END, config=base)
    sim = BakerySim(seed=2, start_ms=START, machines=BAKERY_MACHINES)
    measurements = sorted([*measurements, *bakery_measurements(sim, END)], key=lambda m: m.ts)
    db = "t_dashboards"
    client = chc.connect(ch_dsn, database=db)
    client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
    client.close()
    client = chc.connect(ch_dsn, database=db)
    chc.migrate(client)
    client.close()
    raw = [RawMessage(m.machine.encode(), m.to_json(), "plantstream.measurements", 0, i, m.ts)
           for i, m in enumerate(measurements)]
    flow = build_dataflow(config, TestingSource(raw, batch_size=2000),
                          chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=db)),
                          flows={"archive": archive, "oee": oee, "status": status, "anomaly": anomaly,
                                 "scrap": scrap})
    run_main(flow)
    return Plant(db, truth, sim.ground_truth(END))


def panel_sql(board: str) -> dict[str, str]:
    return {p["title"]: p["targets"][0]["rawSql"] for p in load(board)["panels"]}


def run(plant: Plant, ch_dsn: str, sql: str, selected: Mapping[str, list[str] | None] | None = None) -> Any:
    """A panel's SQL, macros expanded (every variable at All unless ``selected``), over the plant."""
    client = chc.connect(ch_dsn, database=plant.db)
    try:
        return client.query(expand(sql, ALL if selected is None else selected))
    finally:
        client.close()


def dict_rows(res: Any) -> list[dict[str, Any]]:
    return [dict(zip(res.column_names, r, strict=True)) for r in res.result_rows]


# -- OEE colours ----------------------------------------------------------------------------------


def oee_thresholds(panel: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, thresholds) of every threshold set that colours an OEE value in ``panel``."""
    fc = panel["fieldConfig"]
    found = [(f"override {o['matcher']['options']}", prop["value"]) for o in fc["overrides"]
             if o["matcher"]["id"] == "byName" and o["matcher"]["options"] == "oee"
             for prop in o["properties"] if prop["id"] == "thresholds"]
    if re.match(r"OEE\b", panel["title"]) and "thresholds" in fc["defaults"]:
        found.append(("defaults", fc["defaults"]["thresholds"]))  # an OEE stat, gauge or bargauge
    return found


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_oee_panel_is_coloured_red_below_80_yellow_below_90_green(name: str) -> None:
    """KPI.md: green >= 90 %, yellow 80-90 %, red < 80 % — on every panel that shows OEE."""
    for panel in load(name)["panels"]:
        sql = " ".join(t["rawSql"] for t in panel["targets"])
        if not (re.search(r"\bOEE\b", panel["title"]) or re.search(r"\bAS oee\b", sql)):
            continue
        found = oee_thresholds(panel)
        assert found, f"{panel['title']}: OEE shown without the OEE colours"
        for where, thresholds in found:
            assert thresholds == OEE_THRESHOLDS, (panel["title"], where)
        if panel["type"] == "table":  # the cell is coloured, not just given thresholds
            props = {prop["id"]: prop["value"] for o in panel["fieldConfig"]["overrides"]
                     if o["matcher"]["options"] == "oee" for prop in o["properties"]}
            assert props["custom.cellOptions"]["type"] == "color-background", panel["title"]
        elif panel["type"] in ("stat", "gauge", "bargauge"):
            assert panel["fieldConfig"]["defaults"]["color"] == {"mode": "thresholds"}, panel["title"]
    if name == "shop-floor":  # the bar per machine shows OEE only, one bar per machine
        bars = next(p for p in load(name)["panels"] if p["title"] == "OEE by machine")
        assert bars["type"] == "bargauge"
        assert bars["options"]["reduceOptions"] == {"values": True, "calcs": ["lastNotNull"], "fields": "/^oee$/"}


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_query_runs_over_simulator_data(name: str, plant: Plant, ch_dsn: str) -> None:
    plc_machines = sorted(plant.truth.machines)
    client = chc.connect(ch_dsn, database=plant.db)
    empty = []
    try:
        selections: list[dict[str, list[str] | None]] = [
            dict(ALL),
            {"site": ["plant-a"], "line": ["line-1"], "machine": plc_machines[:2]},
            {"site": ["plant-a", "seattle"], "line": ["line-1", "seattle-line-1"],
             "machine": [*plc_machines[:2], "seattle-fryer-1"]}]
        for selection in selections:
            for title, sql in queries(load(name)):
                rows = client.query(expand(sql, selection)).result_rows
                if not rows:
                    empty.append((title, selection["machine"]))
    finally:
        client.close()
    # Open stops and anomalies may legitimately be empty at the end of a run, and the PLC line
    # has no fryer; nothing else.
    fryer = "Fryer oil temperature vs target and oil level"
    assert [e for e in empty if e[0] not in {"Open stops", "Anomalies"}
            and e != (fryer, plc_machines[:2])] == []


@pytest.mark.integration
def test_shop_floor_panels_match_the_ground_truth(plant: Plant, ch_dsn: str) -> None:
    panels = panel_sql("shop-floor")
    client = chc.connect(ch_dsn, database=plant.db)
    try:
        grid = client.query(expand(panels["Machine status"], ALL))
        states = {r[0]: r[2] for r in grid.result_rows}
        good: dict[str, int] = dict(client.query(expand(  # type: ignore[arg-type]
            "SELECT machine, sum(good) FROM oee_facts_latest WHERE $__timeFilter(window_start) "
            "GROUP BY machine", ALL)).result_rows)
        series = client.query(expand(panels["Good parts"], ALL)).result_rows
    finally:
        client.close()
    final = {m: f["machine_state"] for m, f in plant.truth.final.items()}
    final |= {m: f["machine_state"] for m, f in plant.bakery["final"].items()}
    assert states == final
    assert good == {m: c["good"] for m, c in plant.counts().items()}
    per_machine: dict[str, int] = {}
    for _, machine, n in series:
        per_machine[machine] = per_machine.get(machine, 0) + n
    assert per_machine == {m: c["good"] for m, c in plant.counts().items()}


@pytest.mark.integration
def test_availability_and_quality_per_machine_match_the_ground_truth(plant: Plant, ch_dsn: str) -> None:
    """The A/P/Q panel: availability = true run / planned minutes within 0.1 %, quality exact.

    Run time includes micro-stops, planned time is running + idle + fault + setup (KPI.md).
    The range ends 10 minutes before the end of the run: a stop still open when the input
    ends has its last window unwritten, which is the flow's business, not the dashboard's.
    """
    sql = panel_sql("shop-floor")["Availability, performance, quality and OEE by machine"]
    to_ms = END - 600_000
    client = chc.connect(ch_dsn, database=plant.db)
    try:
        cut = client.query(expand(sql, ALL, to_ms=to_ms))
        full = client.query(expand(sql, ALL))
    finally:
        client.close()
    availability = {r[0]: r[cut.column_names.index("availability")] for r in cut.result_rows}
    quality = {r[0]: r[full.column_names.index("quality")] for r in full.result_rows}
    assert sorted(availability) == sorted(quality) == plant.machines
    end = to_ms + 60_000  # $__timeFilter includes the window that starts at the end of the range
    for machine in plant.machines:
        run = planned = 0
        for s in plant.states():
            lo, hi = max(s.start_ms, START), min(s.end_ms, end)
            if s.machine != machine or hi <= lo:
                continue
            if s.state in ("running", "idle", "fault", "setup"):
                planned += hi - lo
            if s.state == "running" or (s.state == "idle" and s.microstop):
                run += hi - lo
        assert availability[machine] == pytest.approx(run / planned, rel=1e-3), machine
        c = plant.counts()[machine]
        assert quality[machine] == pytest.approx(c["good"] / c["total"], rel=1e-9), machine


@pytest.mark.integration
def test_current_product_and_shift_match_the_ground_truth(plant: Plant, ch_dsn: str) -> None:
    """Each machine's last true work order and part (the bakery: its product), in the day shift."""
    got = {r["machine"]: r for r in dict_rows(run(plant, ch_dsn, panel_sql("shop-floor")["Current product and shift"]))}
    assert sorted(got) == plant.machines
    last = {w.machine: w for w in sorted(plant.truth.work_orders, key=lambda w: w.start_ms)}
    for machine, row in got.items():
        assert row["shift"] == "day", machine  # 06:00-09:00 is in the example config's day shift
        if machine in last:
            assert (row["part_number"], row["work_order"]) == (last[machine].part_number,
                                                               last[machine].work_order)
        else:  # the bakery line bakes pastries all morning (seed 2; the product changes after 10:00),
            # its first work order of the run
            assert (row["part_number"], row["work_order"]) == ("pastries", f"WO-{machine.upper()}-0001")


@pytest.mark.integration
def test_fryer_panel_follows_the_bakery_ground_truth(plant: Plant, ch_dsn: str) -> None:
    """Target 375 °F in °C on every point, the oil level in range, and hot oil in every true drift."""
    rows = dict_rows(run(plant, ch_dsn, panel_sql("shop-floor")["Fryer oil temperature vs target and oil level"]))
    target_c = (OIL_TARGET_F - 32) * 5 / 9
    assert len(rows) == (END - START) // 60_000  # one point a minute (interval 60 s)
    assert {r["machine"] for r in rows} == {"seattle-fryer-1"}
    assert all(r["oil_temperature_target_c"] == pytest.approx(target_c) for r in rows)
    assert all(55 <= r["oil_level_pct"] <= 100 for r in rows)
    drifts = [a for a in plant.bakery["anomalies"] if a.type == "thermostat_drift"]
    assert drifts, "the run must contain a thermostat drift"
    for d in drifts:
        during = [r["oil_temperature_c"] for r in rows
                  if d.start_ms <= r["time"].replace(tzinfo=UTC).timestamp() * 1000 < d.end_ms]
        assert max(during) - target_c == pytest.approx(d.peak * 5 / 9, abs=1.5), d


@pytest.mark.integration
def test_supervisor_drill_down_selects_the_machine_and_opens_its_stop_log(plant: Plant, ch_dsn: str) -> None:
    board = load("supervisor")
    by_title = {p["title"]: p for p in board["panels"]}
    table = by_title["OEE by machine and shift (click a machine for its stops)"]
    links = next(prop["value"] for o in table["fieldConfig"]["overrides"]
                 if o["matcher"] == {"id": "byName", "options": "machine"}
                 for prop in o["properties"] if prop["id"] == "links")
    assert links
    for link in links:
        url = link["url"]
        assert url.startswith(f"/d/{UIDS['supervisor']}/")
        for part in ("var-machine=${__data.fields.machine}", "${__url_time_range}", "${datasource:queryparam}",
                     "${site:queryparam}", "${line:queryparam}"):
            assert part in url, (link["title"], part)
    assert f"viewPanel={by_title['Stop log']['id']}" in links[0]["url"]

    machine = "seattle-fryer-1"
    client = chc.connect(ch_dsn, database=plant.db)
    try:
        one = client.query(expand(by_title["Stop log"]["targets"][0]["rawSql"], {**ALL, "machine": [machine]}))
        every = client.query(expand(by_title["Stop log"]["targets"][0]["rawSql"], ALL))
        categories = client.query(expand(by_title["Downtime Pareto (minutes by category)"]["targets"][0]["rawSql"],
                                         ALL)).result_rows
    finally:
        client.close()
    col = one.column_names.index("machine")
    assert one.result_rows and {r[col] for r in one.result_rows} == {machine}
    assert one.result_rows == [r for r in every.result_rows if r[col] == machine]
    minutes = [r[1] for r in categories]
    assert minutes == sorted(minutes, reverse=True) and len({r[0] for r in categories}) == len(categories)


@pytest.mark.integration
def test_plants_shifts_products_table_matches_the_ground_truth(plant: Plant, ch_dsn: str) -> None:
    rows = dict_rows(run(plant, ch_dsn, panel_sql("executive")["Plants × shifts × products"]))
    counts = plant.counts()
    assert sum(r["good_parts"] for r in rows) == sum(c["good"] for c in counts.values())
    assert sum(r["scrap_parts"] for r in rows) == sum(c["reject"] for c in counts.values())
    # the bakery line makes pastries all morning (no changeover before the 10:00 sanitation)
    pastries = [r for r in rows if r["part_number"] == "pastries"]
    assert sum(r["good_parts"] for r in pastries) == sum(c["good"] for c in plant.bakery["counts"].values())
    for r in rows:
        assert r["oee"] == pytest.approx(r["availability"] * r["performance"] * r["quality"])
        assert r["scrap_rate"] == pytest.approx(r["scrap_parts"] / (r["good_parts"] + r["scrap_parts"]))


@pytest.mark.integration
def test_scrap_pareto_matches_the_ground_truth(plant: Plant, ch_dsn: str) -> None:
    rows = run(plant, ch_dsn, panel_sql("supervisor")["Scrap Pareto (parts and cost by reason)"]).result_rows
    expected: dict[str, int] = {}
    for c in plant.counts().values():
        for reason, n in c["rejects_by_reason"].items():
            expected[reason] = expected.get(reason, 0) + n
    assert {r[0]: r[2] for r in rows} == expected
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)  # a Pareto: largest first


# -- one definition of the ratios, one KPI query ---------------------------------------------------

RATIO_FORMULA = re.compile(
    r"(run_\w*\)?\s*/\s*(sum\()?planned_)|(ideal_\w*\)?\s*/\s*(sum\()?run_)|(good\)?\s*/\s*(sum\()?total)"
    r"|(availability\s*\*\s*performance)|\ba \* p \* q\b")


@pytest.mark.parametrize("name", sorted(UIDS))
def test_no_panel_writes_a_ratio_formula_of_its_own(name: str) -> None:
    """A, P, Q, OEE and TEEP come from the ClickHouse KPI functions (migration 050), never a formula."""
    for title, sql in queries(load(name)):
        assert not RATIO_FORMULA.search(sql), f"{name} / {title}: use kpi_availability … kpi_teep"


@pytest.mark.integration
def test_dashboard_ratios_equal_the_kpi_query_of_the_cli_and_the_report(plant: Plant, ch_dsn: str) -> None:
    """The shop-floor A/P/Q/OEE panel, the executive site table and ``connectors.kpi.oee_rows`` agree.

    ``$__timeFilter`` includes the window that starts at the end of the range; the KPI filter is
    half-open, so it reads up to one window more.
    """
    shop = panel_sql("shop-floor")["Availability, performance, quality and OEE by machine"]
    sites = next(sql for title, sql in queries(load("executive")) if "AS teep" in sql and "GROUP BY site" in sql)
    client = chc.connect(ch_dsn, database=plant.db)
    try:
        panel = {r["machine"]: r for r in dict_rows(client.query(expand(shop, ALL)))}
        site_panel = {r["site"]: r for r in dict_rows(client.query(expand(sites, ALL)))}
        flt = kpi.Filter(start_ms=START, end_ms=END + 60_000)
        cli = {r["machine"]: r for r in kpi.oee_rows(client, "machine", flt)}
        cli_sites = {r["site"]: r for r in kpi.oee_rows(client, "site", flt)}
    finally:
        client.close()
    assert sorted(panel) == sorted(cli) == plant.machines
    for machine, r in panel.items():
        for key in ("availability", "performance", "quality", "oee"):
            assert r[key] == pytest.approx(cli[machine][key], rel=1e-9), (machine, key)
    assert sorted(site_panel) == sorted(cli_sites)
    for site, r in site_panel.items():
        for key in ("availability", "performance", "quality", "oee", "teep"):
            assert r[key] == pytest.approx(cli_sites[site][key], rel=1e-9), (site, key)
        assert r["mtbf_s"] == pytest.approx(cli_sites[site]["mtbf_min"] * 60, rel=1e-9)

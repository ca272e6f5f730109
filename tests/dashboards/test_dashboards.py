"""Every Grafana dashboard panel's SQL runs against our schema over simulator data.

The dashboards (``helm/plantstream/dashboards/*.json``) are checked for stable uids, a
``${datasource}`` variable used by every panel and query (no hard-coded datasource ids), and
then every query — panels and template variables — is run in chDB with the
grafana-clickhouse-datasource macros expanded the way the plugin expands them, over a simulated
PLC line (3 machines, 3 hours) that went through the real flows. Key panels are checked against
the simulator's ground truth.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import bytewax.operators as op  # noqa: F401  (bytewax must import before the flows)
import orjson
import pytest
from bytewax.testing import TestingSource, run_main

from connectors import clickhouse as chc
from connectors.kafka import RawMessage
from connectors.simulators.plc import GroundTruth, simulate
from flows.anomaly import anomaly
from flows.archive import archive
from flows.main import build_dataflow
from flows.oee import oee
from flows.scrap import scrap
from flows.status import status
from schemas.config import EXAMPLE_CONFIG, load_config

DASHBOARDS = Path(__file__).resolve().parents[2] / "helm" / "plantstream" / "dashboards"
UIDS = {"shop-floor": "plantstream-shop-floor", "supervisor": "plantstream-supervisor",
        "executive": "plantstream-executive", "maintenance": "plantstream-maintenance"}
DS_UID = "${datasource}"
START = 1_763_791_200_000  # 2025-11-22T06:00:00Z
END = START + 3 * 3600 * 1000


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


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory, ch_dsn: str) -> tuple[str, GroundTruth]:
    config = load_config(EXAMPLE_CONFIG, {})
    measurements, truth = simulate(11, 3, START, END, config=config)
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
    return db, truth


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_query_runs_over_simulator_data(name: str, plant: tuple[str, GroundTruth],
                                                   ch_dsn: str) -> None:
    db, truth = plant
    machines = sorted(truth.machines)
    client = chc.connect(ch_dsn, database=db)
    empty = []
    try:
        selections: list[dict[str, list[str] | None]] = [
            {"site": None, "line": None, "machine": None},
            {"site": ["plant-a"], "line": ["line-1"], "machine": machines[:2]}]
        for selection in selections:
            for title, sql in queries(load(name)):
                rows = client.query(expand(sql, selection)).result_rows
                if not rows:
                    empty.append((title, selection["machine"]))
    finally:
        client.close()
    # Open stops and anomalies may legitimately be empty at the end of a run; nothing else.
    allowed = {"Open stops", "Anomalies"}
    assert [e for e in empty if e[0] not in allowed] == []


@pytest.mark.integration
def test_shop_floor_panels_match_the_ground_truth(plant: tuple[str, GroundTruth], ch_dsn: str) -> None:
    db, truth = plant
    board = load("shop-floor")
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}
    all_: dict[str, list[str] | None] = {"site": None, "line": None, "machine": None}
    client = chc.connect(ch_dsn, database=db)
    try:
        grid = client.query(expand(panels["Machine status"], all_))
        states = {r[0]: r[2] for r in grid.result_rows}
        good: dict[str, int] = dict(client.query(expand(  # type: ignore[arg-type]
            "SELECT machine, sum(good) FROM oee_facts_latest WHERE $__timeFilter(window_start) "
            "GROUP BY machine", all_)).result_rows)
        series = client.query(expand(panels["Good parts"], all_)).result_rows
    finally:
        client.close()
    assert states == {m: f["machine_state"] for m, f in truth.final.items()}
    assert good == {m: c["good"] for m, c in truth.counts.items()}
    per_machine: dict[str, int] = {}
    for _, machine, n in series:
        per_machine[machine] = per_machine.get(machine, 0) + n
    assert per_machine == {m: c["good"] for m, c in truth.counts.items()}


@pytest.mark.integration
def test_scrap_pareto_matches_the_ground_truth(plant: tuple[str, GroundTruth], ch_dsn: str) -> None:
    db, truth = plant
    panels = {p["title"]: p["targets"][0]["rawSql"] for p in load("supervisor")["panels"]}
    client = chc.connect(ch_dsn, database=db)
    try:
        rows = client.query(expand(panels["Scrap Pareto (parts and cost by reason)"],
                                   {"site": None, "line": None, "machine": None})).result_rows
    finally:
        client.close()
    expected: dict[str, int] = {}
    for c in truth.counts.values():
        for reason, n in c["rejects_by_reason"].items():
            expected[reason] = expected.get(reason, 0) + n
    assert {r[0]: r[2] for r in rows} == expected
    assert [r[2] for r in rows] == sorted((r[2] for r in rows), reverse=True)  # a Pareto: largest first

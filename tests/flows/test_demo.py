"""The README's demo, as a user runs it: `plantstream demo`, then `plantstream query` with no
other arguments reads what the demo left in the embedded ClickHouse of the working directory,
and `plantstream kpi scrap --by reason` prices the scrap with the demo plant's work orders."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest


@pytest.mark.integration
def test_demo_leaves_rows_that_a_plain_query_reports(tmp_path: Path) -> None:
    exe = [sys.executable, "-m", "plantstream"]
    env_free = {k: v for k, v in os.environ.items()
                if not k.startswith("PLANTSTREAM")}
    demo = subprocess.run([*exe, "demo", "--duration", "12"], cwd=tmp_path, env=env_free,
                          capture_output=True, timeout=240)
    assert demo.returncode == 0, demo.stderr.decode()[-2000:]
    assert b"x less" in demo.stdout  # the cloud sink's bytes-saved ratio is printed

    out = subprocess.run([*exe, "query", "select count() as n from measurements", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    assert orjson.loads(out.stdout)[0]["n"] > 1000

    # Both simulated plants arrived through their real protocols, and the flows ran on them.
    out = subprocess.run([*exe, "query", "select source, count() > 0 as seen from measurements "
                          "group by source order by source", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    sources = {r["source"] for r in orjson.loads(out.stdout)}
    assert {"opcua", "mqtt"} <= sources, sources
    out = subprocess.run([*exe, "query", "select count() as n from oee_facts", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    assert orjson.loads(out.stdout)[0]["n"] > 0
    # every simulated machine is a configured one: a line and an ideal cycle time, so a machine
    # that made parts has a performance (unknown machines would show 0 % and no line)
    out = subprocess.run([*exe, "query", "select machine, any(line) as line, sum(total) as parts, "
                          "sum(ideal_s) as ideal_s from oee_facts final group by machine", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    machines = orjson.loads(out.stdout)
    assert len(machines) >= 10, machines  # the PLC line and the bakery's three plants
    bad = [m for m in machines if not m["line"] or (m["parts"] > 0 and m["ideal_s"] <= 0)]
    assert not bad, bad

    # The demo plant carries its work-order reference data: the scrap of both plants is costed
    # (quantity x material cost per unit + labor at the labor rate), not 0.00.
    out = subprocess.run([*exe, "query", "select work_order, quantity, material_cost, labor_cost, cost, costed "
                          "from scrap_events final where work_order != ''", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    events = orjson.loads(out.stdout)
    plants = {"plc" if e["work_order"].split("-")[1] in ("PRESS", "CNC", "MOLDER") else "bakery"
              for e in events}
    assert plants == {"plc", "bakery"}, events
    by_type = {"PRESS": 1.85, "CNC": 4.20, "MOLDER": 0.65, "MIXER": 0.12, "DIVIDER": 0.18, "PROOFER": 0.22,
               "FRYER": 0.35, "GLAZER": 0.48}
    for e in events:
        assert e["costed"] == 1, e
        unit = next(v for k, v in by_type.items() if f"-{k}-" in e["work_order"])
        assert e["material_cost"] == pytest.approx(e["quantity"] * unit), e
        assert e["labor_cost"] > 0 and e["cost"] == pytest.approx(e["material_cost"] + e["labor_cost"]), e
    out = subprocess.run([*exe, "kpi", "scrap", "--by", "reason", "--format", "json"],
                         cwd=tmp_path, env=env_free, capture_output=True, timeout=120, check=True)
    reasons = orjson.loads(out.stdout)
    assert reasons and all(r["cost"] > 0 and r["all_costed"] == 1 for r in reasons), reasons
    assert sum(r["cost"] for r in reasons) == pytest.approx(sum(e["cost"] for e in events))

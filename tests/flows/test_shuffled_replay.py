"""`plantstream replay` of a shuffled file: the event-time ledger places every valid sample.

A file of 10,000 valid samples of 20 machines (the PLC simulator: states, cumulative good and
reject counters, scrap reasons, fault and reason codes, part numbers, work orders and a few
condition signals), shuffled with a fixed seed and mixed with 100 malformed lines, goes through
the user's path — ``plantstream replay FILE --config plant.yaml`` in a subprocess — into chDB.
Every sample is within the restatement horizon, so only the malformed lines are dead-lettered,
OEE's quality counts equal scrap's, and the final OEE facts, scrap events and downtime events
equal those of the same file replayed in event-time order.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from plantstream.connectors import clickhouse as chc
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000  # 2025-11-22T06:00Z
MACHINES = 20
VALID = 10_000
CONFIG: dict[str, Any] = {
    "site": "plant-a",
    "microstop_threshold_s": 120,
    "lateness": {"allowed_lateness_s": 60, "restatement_horizon_s": 86_400},
    "losses": {
        "fault_codes": {str(k): {"reason": r, "category": c} for k, (r, c) in plc.FAULT_CODES.items()},
        "reason_codes": {k: {"reason": k, "category": c} for k, c in plc.OPERATOR_REASONS.items()},
    },
}


def valid_samples(n: int = VALID) -> list[bytes]:
    """The first ``n`` samples (event-time order) of a 20-machine PLC line, as JSON lines.

    Every 10th ``good_count`` of a machine is kept (a cumulative counter read less often is
    still the same counter) and ``cycle_time_ms`` is left out, so 10,000 samples span a few
    hours: states, counters, rejects and reasons, context and a sensor sample every 10 min.
    """
    line = plc.PlcLine(seed=13, machines=MACHINES, start_ms=T0, config=build_config(CONFIG, {}),
                       sample_ms=600_000)
    seen: dict[str, int] = {}
    out: list[bytes] = []
    for m in line.run(T0 + 12 * 3_600_000):
        if m.metric == "cycle_time_ms":
            continue
        if m.metric == "good_count":
            k = seen[m.machine] = seen.get(m.machine, -1) + 1
            if k % 10:
                continue
        out.append(m.to_json())
        if len(out) == n:
            break
    assert len(out) == n, "the simulated line must give enough samples"
    return out


def malformed_lines(n: int = 100) -> list[bytes]:
    """``n`` lines the decoder must dead-letter, of every kind a file may hold."""
    ts = T0 + 600_000
    kinds = [
        b"this is not json",
        b'{"ts": 1763791800000, "machine": "press-01", "metric": "good_count"',
        b'{"ts": 1763791800000, "metric": "good_count", "value": 5}',  # no machine
        b'{"machine": "press-01", "metric": "good_count", "value": 5}',  # no ts
        orjson.dumps({"ts": ts, "machine": "press-01", "metric": "good_count", "value": "many"}),
        orjson.dumps({"ts": ts, "machine": "cnc-01", "metric": "reject_count", "value": True}),
        orjson.dumps({"ts": "yesterday", "machine": "press-01", "metric": "machine_state", "value": 1}),
        orjson.dumps({"ts": ts, "machine": "press-01", "metric": "machine_state", "value": [1]}),
        orjson.dumps({"ts": ts, "machine": "", "metric": "good_count", "value": 1}),
        b"[1, 2, 3]",
    ]
    return [kinds[i % len(kinds)] for i in range(n)]


def write_files(tmp: Path) -> tuple[Path, Path]:
    """(shuffled file, the same lines in event-time order), each with the malformed lines."""
    good = valid_samples()
    bad = malformed_lines()
    ordered = tmp / "ordered.jsonl"
    ordered.write_bytes(b"\n".join(good + bad) + b"\n")
    lines = good + bad
    random.Random(2024).shuffle(lines)
    shuffled = tmp / "shuffled.jsonl"
    shuffled.write_bytes(b"\n".join(lines) + b"\n")
    return shuffled, ordered


def cli_replay(path: Path, cfg: Path, dsn: str, cwd: Path) -> dict[str, Any]:
    """``plantstream replay FILE --config CFG --clickhouse DSN --format json`` in a subprocess."""
    out = subprocess.run([sys.executable, "-m", "plantstream", "replay", str(path), "--config", str(cfg),
                          "--clickhouse", dsn, "--format", "json"],
                         cwd=cwd, capture_output=True, timeout=900, env=dict(os.environ), check=False)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    summary: dict[str, Any] = orjson.loads(out.stdout)
    return summary


def query(dsn: str, db: str, sql: str) -> list[tuple[Any, ...]]:
    client = chc.connect(dsn, database=db)
    try:
        return [tuple(r) for r in client.query(sql).result_rows]
    finally:
        client.close()


FACTS = ("SELECT * EXCEPT (stored_at, version) FROM oee_facts_latest "
         "ORDER BY machine, window_start, shift, part_number, work_order")
DOWNTIME = ("SELECT * EXCEPT (stored_at, version) FROM downtime_events_latest ORDER BY machine, start")
SCRAP = ("SELECT * EXCEPT (stored_at, version) FROM scrap_events_latest WHERE quantity > 0 "
         "ORDER BY machine, ts")
OEE_QUALITY = ("SELECT machine, sum(good), sum(reject) FROM oee_facts_latest "
               "GROUP BY machine ORDER BY machine")
SCRAP_QUALITY = ("SELECT r.machine, r.good, r.reject, e.quantity FROM "
                 "(SELECT key AS machine, sum(good) AS good, sum(reject) AS reject FROM scrap_rate_latest "
                 " WHERE scope = 'machine' GROUP BY key) AS r "
                 "LEFT JOIN (SELECT machine, sum(quantity) AS quantity FROM scrap_events_latest "
                 " GROUP BY machine) AS e ON e.machine = r.machine ORDER BY r.machine")


@pytest.mark.integration
def test_a_shuffled_file_dead_letters_only_its_malformed_lines_and_equals_the_ordered_replay(
    tmp_path: Path
) -> None:
    shuffled, ordered = write_files(tmp_path)
    dsn = f"chdb://{tmp_path / 'ch'}"
    results: dict[str, dict[str, Any]] = {}
    for name, path in (("shuffled", shuffled), ("ordered", ordered)):
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG | {"clickhouse": {"database": f"replay_{name}"}}))
        summary = cli_replay(path, cfg, dsn, tmp_path)
        assert summary["records_in"] == VALID + 100
        results[name] = {"summary": summary}
    for name in results:
        db = f"replay_{name}"
        results[name] |= {
            "dead": query(dsn, db, "SELECT count(), countIf(reason = 'late') FROM deadletter FINAL")[0],
            # one notice per machine outside the plant config's lines, not a dead letter
            "notices": query(dsn, db, "SELECT count() FROM machine_notices FINAL WHERE kind = 'unconfigured'")[0],
            "facts": query(dsn, db, FACTS), "downtime": query(dsn, db, DOWNTIME),
            "scrap": query(dsn, db, SCRAP), "oee_q": query(dsn, db, OEE_QUALITY),
            "scrap_q": query(dsn, db, SCRAP_QUALITY)}
    sh, od = results["shuffled"], results["ordered"]
    # only the malformed lines are dead-lettered, none of the 10,000 valid samples
    assert sh["dead"] == (100, 0), sh["summary"]
    assert od["dead"] == (100, 0), od["summary"]
    assert sh["notices"] == od["notices"] == (MACHINES,)  # none is in CONFIG: reported once each
    # OEE's quality counts equal scrap's, machine by machine (good and reject counts, and the
    # rejects again as scrap events)
    assert len(sh["oee_q"]) == MACHINES
    assert sum(r[2] for r in sh["oee_q"]) > 100  # the file holds real rejects
    assert [(m, g, r, r) for m, g, r in sh["oee_q"]] == sh["scrap_q"]
    # the final rows of the shuffled replay are those of the ordered one
    assert len(od["facts"]) > 1000 and len(od["downtime"]) > 20 and len(od["scrap"]) > 50
    assert sh["facts"] == od["facts"]
    assert sh["downtime"] == od["downtime"]
    assert sh["scrap"] == od["scrap"]
    assert sh["oee_q"] == od["oee_q"]

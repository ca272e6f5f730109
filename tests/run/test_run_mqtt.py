"""``plantstream init --mqtt`` + ``plantstream run`` against the Contoso bakery over Mosquitto, end to end.

A fresh directory and a Mosquitto (started as the MQTT tests start it). The bakery simulator
publishes while ``plantstream init --mqtt HOST:PORT --topic '#' --listen 5`` samples the broker
and writes ``plant.yaml``; ``plantstream config check`` validates it; then ``plantstream run
--config plant.yaml`` (embedded Tansu broker, embedded chDB, the MQTT connector and the flows
as child processes) must write, for every bakery machine, what the bakery's ground truth says:

- every state change in ``measurements`` (time and state), as ``tests/mqtt/test_pipeline.py``
  checks Kafka;
- OEE facts: minutes per loss bucket within 0.1 % and the exact good and reject counts;
- one downtime event per true stop, with its start, state and lost-time reason (the bakery's
  ``lost_time_reason`` text is the reason; its category needs a ``losses.reason_codes`` map,
  which nothing on the wire tells ``init``);
- scrap per machine and reason equal to the true rejects by reason
  (``tests/alerts/test_bakery.py``).

MQTT has no "wait for a subscriber": what is published while nobody is subscribed is gone. So
the bakery plays twice: a first simulator (an hour earlier, same seed) publishes while ``init``
listens and is stopped; the run starts, and once its MQTT connector holds its subscription the
second simulator plays the measured shift (2 hours at 240×, 30 s) from its first message. The
run sees the line from its start, as the OPC UA test's simulator holds its clock until a client
subscribes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantstream.simulators.bakery import BakerySim, publish
from tests.mqtt.conftest import start_mosquitto
from tests.run.truth import assert_oee_row_equals_truth, expected_minutes

pytestmark = pytest.mark.integration

EXE = str(Path(sys.executable).parent / "plantstream")
SEED = 4
MACHINES = 5
SIM_HOURS = 2
SPEED = 240


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("PLANTSTREAM", "BYTEWAX_"))}


def cli(tmp: Path, *args: str, timeout: float = 120) -> str:
    res = subprocess.run(
        [EXE, *args], cwd=tmp, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert res.returncode == 0, f"plantstream {' '.join(args)}:\n{res.stdout[-2000:]}\n{res.stderr[-4000:]}"
    return res.stdout + res.stderr


def query(tmp: Path, dsn: str, *args: str) -> list[dict[str, Any]]:
    res = subprocess.run(
        [EXE, *args, "--clickhouse", dsn, "--format", "json"],
        cwd=tmp,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    rows = orjson.loads(res.stdout)
    assert isinstance(rows, list)
    return rows


def ms_of(iso: str | None) -> int | None:
    return None if iso is None else round(datetime.fromisoformat(iso).timestamp() * 1000)


def state_ms(states: list[Any], machine: str, lo: int, hi: int) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for s in states:
        if s.machine == machine and min(s.end_ms, hi) > max(s.start_ms, lo):
            out[s.state] += min(s.end_ms, hi) - max(s.start_ms, lo)
    return out


def check_against_truth(tmp: Path, dsn: str, truth: dict[str, Any], machines: list[str]) -> None:
    """Measurements, OEE facts, downtime and scrap events of the run == the bakery's ground truth."""
    start_ms, end_ms = truth["meta"]["start_ms"], truth["meta"]["end_ms"]
    states = truth["states"]
    # every state change with its time, as the MQTT pipeline test checks Kafka
    got_states: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for r in query(
        tmp,
        dsn,
        "query",
        "SELECT machine, toUnixTimestamp64Milli(ts) AS t, value_str FROM measurements "
        "WHERE metric = 'machine_state' ORDER BY machine, t",
    ):
        got_states[r["machine"]].append((int(r["t"]), r["value_str"]))
    assert sorted(got_states) == sorted(machines)
    for machine in machines:
        true = [(s.start_ms, s.state) for s in states if s.machine == machine]
        # the run stores a state sample per message; collapse repeats to the changes
        changes = [
            x for i, x in enumerate(got_states[machine]) if i == 0 or got_states[machine][i - 1][1] != x[1]
        ]
        assert changes == true, machine

    last = {
        r["machine"]: int(r["last"])
        for r in query(
            tmp,
            dsn,
            "query",
            "SELECT machine, toUnixTimestamp64Milli(max(ts)) AS last FROM measurements GROUP BY machine",
        )
    }
    oee = {r["machine"]: r for r in query(tmp, dsn, "kpi", "oee", "--by", "machine")}
    assert set(oee) == set(machines) == set(last)
    for machine in machines:
        end = last[machine]
        assert end > end_ms - 60_000, (machine, end)  # the run saw the shift to its end
        expected = expected_minutes(states, state_ms(states, machine, start_ms, end), machine, start_ms, end)
        assert_oee_row_equals_truth(oee[machine], expected, truth["counts"][machine], machine)

    events = query(tmp, dsn, "kpi", "downtime")
    mine = sorted(
        (
            e["machine"],
            ms_of(e["start"]),
            e["state"],
            e["reason"],
            int(e["small_stop"]) if e["end"] is not None else None,
        )
        for e in events
    )
    true_events = sorted(
        (s.machine, s.start_ms, s.state, s.reason, int(s.microstop) if s.end_ms < last[s.machine] else None)
        for s in states
        if s.state in ("idle", "fault", "setup") and s.start_ms < last[s.machine]
    )
    assert len(true_events) >= 10 and mine == true_events

    scrap = query(
        tmp,
        dsn,
        "query",
        "SELECT machine, reason, sum(quantity) AS quantity FROM scrap_events_latest GROUP BY machine, reason",
    )
    got_scrap: dict[str, dict[str, int]] = defaultdict(dict)
    for r in scrap:
        got_scrap[r["machine"]][r["reason"]] = int(r["quantity"])
    assert dict(got_scrap) == {
        m: c["rejects_by_reason"] for m, c in truth["counts"].items() if c["rejects_by_reason"]
    }
    print(
        f"{len(machines)} machines: {len(true_events)} downtime events, "
        f"good {sum(c['good'] for c in truth['counts'].values())}, "
        f"reject {sum(c['reject'] for c in truth['counts'].values())} in "
        f"{sum(len(r) for r in got_scrap.values())} (machine, reason) scrap groups"
    )


def subscribed(logs: Path) -> bool:
    """The run's MQTT connector holds its subscription (``connect mqtt`` says so once it has the SUBACK)."""
    return any("Ctrl-C to stop" in p.read_text(errors="replace") for p in logs.glob("source-*.log"))


def init_from_the_bakery(tmp_path: Path, host: str, port: int, start_ms: int) -> str:
    """``plantstream init --mqtt`` while a first bakery (an hour before ``start_ms``) publishes, then
    ``config check``; returns the written ``plant.yaml``."""
    # 1. init samples the broker while the bakery publishes (an hour of it in 6 s)
    init = subprocess.Popen(
        [
            EXE,
            "init",
            "--mqtt",
            f"{host}:{port}",
            "--topic",
            "#",
            "--listen",
            "8",
            "-o",
            "plant.yaml",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert init.stderr is not None
    assert "listening to" in init.stderr.readline()
    time.sleep(1.5)  # subscribed: what is published from here on reaches init
    preview = BakerySim(seed=SEED, start_ms=start_ms - 3_600_000, machines=MACHINES)
    publish(
        preview,
        host,
        port,
        end_ms=preview.start_ms + 3_600_000,
        speed=600.0,
        client_id="bakery-preview",
    )
    out, err = init.communicate(timeout=60)
    out += err
    assert init.returncode == 0, out
    print(out)
    text = (tmp_path / "plant.yaml").read_text()
    print(text)
    out = cli(tmp_path, "config", "check", "plant.yaml")
    print(out)
    assert "valid" in out and "machine_state" in out
    # fields sent only on a change (state, reasons, product) are mapped too
    for field, metric in [
        ("state", "machine_state"),
        ("lost_time_reason", "reason_code"),
        ("waste_reason", "scrap_reason"),
        ("waste_count", "reject_count"),
        ("product", "part_number"),
        ("work_order", "work_order"),
    ]:
        assert f'#{field}": {{"machine": "{{machine}}", "metric": "{metric}"' in text, field
    return text


@pytest.mark.paho  # the bakery simulator (paho) publishes from the test process
def test_init_mqtt_then_run_matches_the_bakery_ground_truth(tmp_path: Path) -> None:
    mq = start_mosquitto(tmp_path / "mosquitto")
    try:
        start = (datetime.now(UTC) - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
        start_ms = int(start.timestamp() * 1000)
        init_from_the_bakery(tmp_path, mq.host, mq.port, start_ms)

        # 2. run, and once its connector holds the subscription, the measured shift
        log = (tmp_path / "run.log").open("wb")
        run = subprocess.Popen(
            [
                EXE,
                "run",
                "--config",
                "plant.yaml",
                "--duration",
                "75",
                "--no-live",
                "--log-every",
                "10",
                "--state-dir",
                "state",
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=log,
            stderr=log,
        )
        try:
            deadline = time.monotonic() + 120
            while not subscribed(tmp_path / "state" / "logs"):
                assert time.monotonic() < deadline and run.poll() is None, (tmp_path / "run.log").read_text()
                time.sleep(0.3)
            sim = BakerySim(seed=SEED, start_ms=start_ms, machines=MACHINES)
            n = publish(
                sim,
                mq.host,
                mq.port,
                end_ms=start_ms + SIM_HOURS * 3_600_000,
                speed=SPEED,
                client_id="bakery-sim",
            )
            print(f"published {n} messages")
            run.wait(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
            log.close()
        assert run.returncode == 0, (tmp_path / "run.log").read_text()[-4000:]
    finally:
        mq.stop()
    truth = sim.ground_truth()
    check_against_truth(tmp_path, f"chdb://{tmp_path / 'state' / 'clickhouse'}", truth, sim.machine_ids)
    assert not (tmp_path / "state" / "run.lock").exists()

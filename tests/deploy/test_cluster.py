"""A Bytewax cluster computes what one process computes.

The flows run over one replayed shift in a 4-partition topic two ways — the production entry
point ``python -m bytewax.run "plantstream.flows.main:get_flow()"`` as one process, then as a two-process
cluster on loopback (``-i0/-i1 -a host:p0;host:p1``, with a shared recovery directory as the
Helm chart mounts it) — and every ClickHouse table (final state) must be identical. Every
registered flow runs (``PLANTSTREAM_FLOWS`` unset: all) and every table of the migrated
database is compared, naming the table that differs: a new flow and its tables are covered
without touching this test.

The single process writes to chDB itself. chDB cannot run inside a cluster process (it
corrupts its heap when used from Bytewax worker threads), so the cluster's ClickHouse inserts are
captured block by block (``tests/deploy/entry.py``) and loaded into chDB afterwards; the test
also checks that exactly one of the two processes wrote to ClickHouse — the sink's single
partition lives on one worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from plantstream.connectors.embedded import TansuBroker, free_port
from plantstream.flows.registry import available
from plantstream.flows.replay import produce_lines
from plantstream.simulators.synthetic import synthetic_stream

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SHIFT_START_MS = 1_763_272_800_000  # Monday 2025-11-16 06:00 UTC
SHIFT_HOURS = 8
STEP_MS = 30_000
MACHINES = 3
MALFORMED = [b"not json", b'{"ts": 1, "machine": "m-01"}', b"[1, 2]",
             b'{"ts": "yesterday", "machine": "m-02", "metric": "good_count", "value": 1}']


def shift_lines() -> tuple[list[bytes], int]:
    """One shift of synthetic measurements plus malformed lines; returns (lines, valid count)."""
    end = SHIFT_START_MS + SHIFT_HOURS * 3600 * 1000
    lines: list[bytes] = []
    for m in synthetic_stream(SHIFT_START_MS, machines=MACHINES, step_ms=STEP_MS):
        if m.ts >= end:
            break
        lines.append(m.to_json())
    valid = len(lines)
    # Malformed lines spread through the shift, as a flaky gateway would send them.
    for i, bad in enumerate(MALFORMED * 5):
        lines.insert((i * 997) % len(lines), bad)
    return lines, valid


def plant_config(bootstrap: str) -> dict[str, Any]:
    return {
        "site": "plant-a",
        "timezone": "UTC",
        "shifts": [{"name": "day", "start": "06:00", "end": "14:00",
                    "breaks": [{"start": "10:00", "minutes": 30}]}],
        "lines": [{"id": "line-1", "machines": [
            {"id": f"m-{i + 1:02d}", "type": "press", "ideal_cycle_time_ms": STEP_MS}
            for i in range(MACHINES)]}],
        "kafka": {"bootstrap_servers": bootstrap, "partitions": 4},
        "clickhouse": {"database": "plant", "batch_rows": 5000},
    }


def chtool(cmd: str, dsn: str, capture: Path | None = None) -> str:
    env = {**os.environ, "PLANTSTREAM_TEST_CAPTURE": str(capture)} if capture else None
    res = subprocess.run([sys.executable, "-m", "tests.deploy.chtool", cmd, dsn, "plant"], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, f"chtool {cmd} {dsn} failed:\n{res.stderr[-3000:]}"
    return res.stdout


def flow_env(config_path: Path, dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PLANTSTREAM", "BYTEWAX_"))}
    env.update({"PLANTSTREAM_CONFIG": str(config_path), "PLANTSTREAM_STOP": "end",
                "PLANTSTREAM__CLICKHOUSE__URL": dsn, "PYTHONUNBUFFERED": "1"})
    return env


def run_processes(commands: list[tuple[list[str], dict[str, str]]], workdir: Path) -> list[int]:
    """Start the processes together, wait for all, return their pids; fail with stderr on error."""
    procs = []
    for i, (args, env) in enumerate(commands):
        err = (workdir / f"proc{i}.err").open("wb")
        procs.append((subprocess.Popen([sys.executable, "-m", "bytewax.run", *args], cwd=ROOT, env=env,
                                       stdout=subprocess.DEVNULL, stderr=err), err))
    try:
        for p, _ in procs:
            p.wait(timeout=240)
    finally:
        for p, err in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            err.close()
    for i, (p, _) in enumerate(procs):
        log = (workdir / f"proc{i}.err").read_text(errors="replace")
        assert p.returncode == 0, f"process {i} exited {p.returncode}:\n{log[-4000:]}"
    return [p.pid for p, _ in procs]


def counts(dump: dict[str, list[list[Any]]]) -> dict[str, int]:
    return {t: len(rows) for t, rows in dump.items()}


def test_two_process_cluster_matches_one_process(broker: TansuBroker, tmp_path: Path) -> None:
    lines, valid = shift_lines()
    conf = {"bootstrap.servers": broker.bootstrap}
    assert produce_lines(conf, lines) == len(lines)
    config_path = tmp_path / "plant.yaml"
    config_path.write_text(yaml.safe_dump(plant_config(broker.bootstrap)))

    # One process.
    single = f"chdb://{tmp_path / 'ch-single'}"
    chtool("migrate", single)
    run_processes([(["-w", "1", "plantstream.flows.main:get_flow()"], flow_env(config_path, single))], tmp_path)
    one = json.loads(chtool("dump", single))

    # Two processes on loopback, one worker each, sharing a recovery directory of 2 partitions
    # as the chart's pods share theirs. Their ClickHouse writes are captured (see entry.py).
    capture = tmp_path / "capture"
    capture.mkdir()
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    init = subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert init.returncode == 0, init.stderr
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    env = {**flow_env(config_path, "chdb:///nonexistent"), "PLANTSTREAM_TEST_CAPTURE": str(capture)}
    pids = run_processes([
        (["-i", str(i), "-a", addresses, "-r", str(recovery), "-s", "5", "-b", "0",
          "tests.deploy.entry:get_flow()"], env)
        for i in range(2)
    ], tmp_path)

    # The ClickHouse sink partition lives on exactly one of the two processes.
    writers = sorted(int(p.stem) for p in capture.glob("*.blocks"))
    assert len(writers) == 1 and writers[0] in pids, f"ClickHouse written by pids {writers} of {pids}"
    cluster = f"chdb://{tmp_path / 'ch-cluster'}"
    two = json.loads(chtool("load-dump", cluster, capture=capture))

    # Ground truth from the generator, so an empty or truncated run cannot pass as "equal".
    assert len(one["measurements"]) == valid
    assert len(one["deadletter"]) >= len(MALFORMED) * 5
    flows = sorted(available())
    print("flows:", flows, "rows per table:", counts(one))
    assert counts(two) == counts(one)
    for table in one:
        assert two[table] == one[table], f"table {table} differs between 1 and 2 processes (flows {flows})"

"""``plantstream simulate plc`` / ``connect opcua`` and the demo hook ``start_plc_pipeline``."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors.embedded import EmbeddedRuntime, free_port
from plantstream.schemas.config import build_config
from plantstream.schemas.measurement import decode
from plantstream.simulators.opcua_server import start_plc_pipeline
from plantstream.simulators.plc import load_ground_truth
from tests.opcua.helpers import START, measurements, per_machine_states, truth_states

pytestmark = pytest.mark.integration


def test_simulate_plc_replay_file_matches_its_truth(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["simulate", "plc", "--seed", "4", "--machines", "2", "--start",
                                   "2025-11-22T06:00:00Z", "--duration", "2", "--replay-file",
                                   str(tmp_path / "plc.jsonl"), "--truth", str(tmp_path / "truth.jsonl")])
    assert res.exit_code == 0, res.output
    ms = [decode(raw) for raw in (tmp_path / "plc.jsonl").read_bytes().splitlines()]
    truth = load_ground_truth(tmp_path / "truth.jsonl")
    assert truth.end_ms == START + 2 * 3_600_000
    assert per_machine_states(ms) == truth_states(truth)  # type: ignore[arg-type]


def test_simulate_plc_server_and_connect_opcua_cli(tmp_path: Path, kafka_conf: dict[str, Any]) -> None:
    port = free_port()
    truth_path = tmp_path / "truth.jsonl"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "plantstream"), "simulate", "plc", "--seed", "6", "--machines", "2", "--speed", "3600",
         "--duration", "1", "--linger", "120", "--port", str(port), "--truth", str(truth_path)],
        cwd=Path(__file__).parents[2], stderr=subprocess.PIPE, text=True)
    try:
        cfg = tmp_path / "plant.yaml"
        cfg.write_text(f"opcua:\n  state_file: {tmp_path / 'state.json'}\nproducer:\n  spool_dir: {tmp_path / 'spool'}\n")
        deadline = time.monotonic() + 60
        while True:  # wait for the server process to listen
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "simulator did not start"
                time.sleep(0.1)
        res = CliRunner().invoke(app, ["connect", "opcua", "--config", str(cfg), "--preset", "plc",
                                       "--endpoint", f"opc.tcp://127.0.0.1:{port}/plantstream/plc",
                                       "--bootstrap", kafka_conf["bootstrap.servers"], "--duration", "8"])
        assert res.exit_code == 0, res.output
        server.send_signal(signal.SIGINT)  # stops serving and writes the ground truth
        server.wait(timeout=60)
    finally:
        server.kill()
    assert server.returncode == 0, server.stderr.read() if server.stderr else ""
    truth = load_ground_truth(truth_path)
    ms = measurements(kafka_conf)
    for machine, final in truth.final.items():
        good = [m.value for m in ms if m.machine == machine and m.metric == "good_count"]
        assert good and good[-1] == final["good_count"]


def test_start_plc_pipeline_for_the_demo(tmp_path: Path, kafka_conf: dict[str, Any], ch_dsn: str) -> None:
    cfg = build_config({"site": "plant-a", "kafka": {"bootstrap_servers": kafka_conf["bootstrap.servers"]}}, {})
    with EmbeddedRuntime(cfg, dsn=ch_dsn, workdir=tmp_path, migrate=False) as rt:
        stop = start_plc_pipeline(rt, seed=9, speed=600, machines=2, start_ms=START, workdir=tmp_path)
        time.sleep(2.5)  # the pipeline runs in its own thread at 600× real time: ~25 simulated minutes
        line = stop()
    truth = load_ground_truth(tmp_path / "plc-truth.jsonl")
    assert truth.end_ms == line.now > START + 5 * 60_000
    ms = measurements(kafka_conf)
    assert per_machine_states(ms) == truth_states(truth)
    for machine, final in truth.final.items():
        assert [m.value for m in ms if m.machine == machine and m.metric == "good_count"][-1] == final["good_count"]

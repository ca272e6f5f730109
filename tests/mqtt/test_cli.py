"""``plantstream simulate bakery`` end to end: an embedded broker, a fixed seed, a ground-truth file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors.embedded import free_port
from plantstream.simulators.bakery import BakerySim

pytestmark = pytest.mark.integration


def test_simulate_bakery_writes_the_ground_truth(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    result = CliRunner().invoke(app, [
        "simulate", "bakery", "--embedded-broker", "--port", str(free_port()), "--seed", "9",
        "--machines", "3", "--speed", "0", "--duration", "600", "--start", "2025-11-22T06:00:00Z",
        "--ground-truth", str(truth)])
    assert result.exit_code == 0, result.output
    lines = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert lines[0]["kind"] == "meta" and lines[0]["seed"] == 9
    assert lines[0]["machines"] == ["seattle-mixer-1", "seattle-divider-1", "seattle-proofer-1"]
    # the same seed gives the same truth without MQTT in between
    sim = BakerySim(seed=9, start_ms=1763791200000, machines=3)
    n = sum(1 for _ in sim.messages(1763791200000 + 600_000))
    assert f"published {n} messages" in result.output.replace("\n", " ")
    finals = {row["machine"]: row for row in lines if row["kind"] == "final"}
    assert {m: f["good_count"] for m, f in finals.items()} == {
        m: c["good"] for m, c in sim.ground_truth()["counts"].items()}


def test_connect_mqtt_without_kafka_is_a_clear_error() -> None:
    result = CliRunner().invoke(app, ["connect", "mqtt"])
    assert result.exit_code == 2
    assert "--bootstrap" in result.output


def test_connect_mqtt_stops_at_once_on_sigterm_while_the_broker_does_not_answer(
        tmp_path: Path, kafka_conf: dict[str, object]) -> None:
    """A broker that takes the TCP connection and never sends CONNACK (a 3.1.1-only broker asked
    for MQTT 5 does that): SIGTERM during the wait for it stops the connector in about a second,
    with exit status 0, as ``plantstream run`` expects of its children (it kills after 5 s)."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    mute = socket.create_server(("127.0.0.1", 0))
    port = mute.getsockname()[1]
    cfg = tmp_path / "plant.yaml"
    cfg.write_text(f"mqtt: {{host: 127.0.0.1, port: {port}, connect_timeout_s: 60}}\n"
                   f"producer: {{spool_dir: {tmp_path / 'spool'}}}\n")
    exe = str(Path(sys.executable).parent / "plantstream")
    proc = subprocess.Popen([exe, "connect", "mqtt", "--config", str(cfg), "--bootstrap",
                             str(kafka_conf["bootstrap.servers"])], stderr=subprocess.PIPE, text=True)
    try:
        conn, _ = mute.accept()  # the connector is waiting for its CONNACK now
        time.sleep(1.0)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        took = time.monotonic() - t0
        assert took < 4.0, took
        conn.close()
    finally:
        proc.kill()
        mute.close()

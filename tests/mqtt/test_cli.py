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

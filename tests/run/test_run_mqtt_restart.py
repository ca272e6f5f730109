"""``plantstream run`` on the MQTT path (the bakery over Mosquitto): ``kill -9`` of the flows and
SIGTERM, as ``tests/run/test_run_opcua.py`` checks them for OPC UA.

``plantstream init --mqtt`` writes ``plant.yaml`` (as in ``test_run_mqtt.py``); ``plantstream run``
starts without ``--duration``; once its MQTT connector holds the subscription the bakery plays
2 hours at 240× (30 s). Half-way the flows child is killed with SIGKILL: the supervisor says so
and restarts it, the flows resume from their recovery store while the connector keeps producing.
After the playback and a catch-up, SIGTERM stops everything within 10 s with exit code 0, no
child left. The results then equal the bakery's ground truth exactly as an uninterrupted run's
do (every state change, loss minutes, counts, downtime events with reasons, scrap by reason):
no duplicates, no gaps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from plantstream.simulators.bakery import BakerySim, publish
from tests.mqtt.conftest import start_mosquitto
from tests.run.test_run_mqtt import (
    EXE,
    MACHINES,
    SEED,
    SIM_HOURS,
    SPEED,
    _env,
    check_against_truth,
    init_from_the_bakery,
    subscribed,
)
from tests.run.test_run_opcua import _children
from tests.run.truth import sigterm_and_time

pytestmark = pytest.mark.integration


@pytest.mark.paho  # the bakery simulator (paho) publishes from the test process
@pytest.mark.timeout(420)
def test_kill_9_of_the_flows_on_the_mqtt_path_is_restarted_and_sigterm_stops_within_10s(
    tmp_path: Path,
) -> None:
    mq = start_mosquitto(tmp_path / "mosquitto")
    log = (tmp_path / "run.log").open("wb")
    try:
        start = (datetime.now(UTC) - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
        start_ms = int(start.timestamp() * 1000)
        init_from_the_bakery(tmp_path, mq.host, mq.port, start_ms)
        run = subprocess.Popen(
            [EXE, "run", "--config", "plant.yaml", "--no-live", "--log-every", "5", "--state-dir", "state"],
            cwd=tmp_path, env=_env(), stdout=log, stderr=log,
        )
        player = None
        try:
            deadline = time.monotonic() + 120
            while not subscribed(tmp_path / "state" / "logs"):
                assert time.monotonic() < deadline and run.poll() is None, (tmp_path / "run.log").read_text()
                time.sleep(0.3)
            flows = next(p for p, c in _children(run.pid).items() if "bytewax.run" in c)
            sim = BakerySim(seed=SEED, start_ms=start_ms, machines=MACHINES)
            sent: list[int] = []
            player = threading.Thread(
                target=lambda: sent.append(publish(sim, mq.host, mq.port, end_ms=start_ms + SIM_HOURS * 3_600_000,
                                                   speed=SPEED, client_id="bakery-sim")),
                daemon=True,
            )
            player.start()
            time.sleep(12)  # mid-way through the 30 s of playback
            os.kill(flows, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while not [p for p, c in _children(run.pid).items() if "bytewax.run" in c and p != flows]:
                assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()
                time.sleep(0.5)
            player.join(timeout=120)
            assert sent and sent[0] > 0, "the bakery did not finish publishing"
            print(f"published {sent[0]} messages")
            stopped_s = sigterm_and_time(run, 30)  # the restarted flows catch up
        finally:
            if run.poll() is None:
                run.kill()
    finally:
        log.close()
        mq.stop()
    text = (tmp_path / "run.log").read_text()
    print(text[-3000:])
    assert run.returncode == 0, text[-3000:]
    assert "flows (pid" in text and "killed by signal SIGKILL" in text and "restarted flows" in text
    assert stopped_s < 10.0, stopped_s
    print(f"SIGTERM stopped the run in {stopped_s:.1f}s")
    assert not _children(run.pid)
    check_against_truth(tmp_path, f"chdb://{tmp_path / 'state' / 'clickhouse'}", sim.ground_truth(),
                        sim.machine_ids)
    assert not (tmp_path / "state" / "run.lock").exists()

"""``plantstream init --mqtt`` + ``plantstream run`` against a Sparkplug B edge node, end to end.

A fresh directory and a Mosquitto. The edge node (``tests/run/sparkplug_bakery.py``: the Contoso
bakery's line as one Sparkplug B edge node, one device per machine, births then data by alias)
is already publishing when ``plantstream init --mqtt HOST:PORT --topic 'spBv1.0/#' --listen 8``
starts: its births are gone, so ``init`` must ask it for a rebirth (``NCMD`` ``Node
Control/Rebirth``), get the ``NBIRTH``/``DBIRTH`` and propose one machine per device, with the
metrics named and typed by the births. ``plantstream config check`` validates ``plant.yaml``;
``plantstream run --config plant.yaml`` (embedded Tansu broker, embedded chDB, the MQTT
connector as a Sparkplug B host application, the flows) must then write what the bakery's
ground truth says, checked as ``tests/run/test_run_mqtt.py`` checks the bakery's JSON topics:
every state change, OEE loss minutes within 0.1 % with exact good and reject counts, one
downtime event per true stop with its lost-time reason, scrap per machine and reason.

As in the bakery test, the line plays twice: a first edge node session (an hour earlier, same
seed) while ``init`` listens; then, once the run's connector holds its subscription, a second
session (births, then the measured 2 hours at 240×, 30 s) — the run sees the node's birth.
The second session ends with a clean disconnect after the run stopped: an ``NDEATH`` received
during the run would (rightly) switch every machine ``off`` at the time it arrived, hours after
the simulated shift.
"""

from __future__ import annotations

import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from plantstream.simulators.bakery import BakerySim
from tests.mqtt.conftest import start_mosquitto
from tests.run.sparkplug_bakery import BakeryEdgeNode
from tests.run.test_run_mqtt import EXE, _env, check_against_truth, cli, subscribed

pytestmark = pytest.mark.integration

SEED = 5
MACHINES = 5
SIM_HOURS = 2
SPEED = 240


@pytest.mark.paho  # the edge node (paho) publishes from the test process
@pytest.mark.timeout(420)
def test_init_sparkplug_then_run_matches_the_ground_truth(tmp_path: Path) -> None:
    mq = start_mosquitto(tmp_path / "mosquitto")
    try:
        start = (datetime.now(UTC) - timedelta(hours=4)).replace(minute=0, second=0, microsecond=0)
        start_ms = int(start.timestamp() * 1000)
        # 1. the edge node is on the air before init listens: init must ask it for its births
        preview = BakeryEdgeNode(BakerySim(seed=SEED, start_ms=start_ms - 7_200_000, machines=MACHINES),
                                 mq.host, mq.port, bdseq=0, client_id="bakery-edge-preview")
        stop = threading.Event()
        player = threading.Thread(
            target=preview.play, args=(start_ms,), kwargs={"speed": 300.0, "stop": stop}, daemon=True
        )
        player.start()
        time.sleep(1.0)
        assert preview.born and preview.published > MACHINES + 1
        try:
            out = cli(tmp_path, "init", "--mqtt", f"{mq.host}:{mq.port}", "--topic", "spBv1.0/#",
                      "--listen", "8", "-o", "plant.yaml")
        finally:
            stop.set()
            player.join(timeout=30)
            preview.close(death=True)
        print(out)
        assert preview.rebirths_received == 1, "init did not ask the edge node for its births"
        text = (tmp_path / "plant.yaml").read_text()
        print(text)
        assert "asked contoso/seattle-line-1 for a rebirth" in text
        assert '{"topic": "spBv1.0/#", "format": "sparkplug"}' in text
        sim_machines = BakerySim(seed=SEED, machines=MACHINES).machine_ids
        for machine in sim_machines:
            assert f'{{id: "{machine}"}}' in text, machine
        dev = "spBv1.0/contoso/{line}/{machine}#"
        for name, metric in [("State", "machine_state"), ("Counts/Good", "good_count"),
                             ("Counts/Waste", "reject_count"), ("Lost Time Reason", "reason_code"),
                             ("Waste Reason", "scrap_reason"), ("Product", "part_number"),
                             ("Work Order", "work_order"), ("Oil Temp F", "oil_temperature_c")]:
            assert f'"{dev}{name}": {{"machine": "{{machine}}", "metric": "{metric}"' in text, name
        out = cli(tmp_path, "config", "check", "plant.yaml")
        print(out)
        assert "valid" in out and "machine_state" in out

        # 2. run; once its connector holds the subscription, a new session of the node plays the shift
        log = (tmp_path / "run.log").open("wb")
        run = subprocess.Popen(
            [EXE, "run", "--config", "plant.yaml", "--duration", "75", "--no-live", "--log-every", "10",
             "--state-dir", "state"],
            cwd=tmp_path, env=_env(), stdout=log, stderr=log,
        )
        node = None
        try:
            deadline = time.monotonic() + 120
            while not subscribed(tmp_path / "state" / "logs"):
                assert time.monotonic() < deadline and run.poll() is None, (tmp_path / "run.log").read_text()
                time.sleep(0.3)
            sim = BakerySim(seed=SEED, start_ms=start_ms, machines=MACHINES)
            node = BakeryEdgeNode(sim, mq.host, mq.port, bdseq=1, client_id="bakery-edge")
            t0 = time.monotonic()
            n = node.play(start_ms + SIM_HOURS * 3_600_000, speed=SPEED)
            assert node.flush(60), (node.acked, node.published)
            print(f"published {n} Sparkplug B messages in {time.monotonic() - t0:.0f}s")
            run.wait(timeout=300)
        finally:
            if run.poll() is None:
                run.kill()
            log.close()
            if node is not None:
                node.close()  # clean: no NDEATH, see the module docstring
        text = (tmp_path / "run.log").read_text()
        assert run.returncode == 0, text[-4000:]
        assert node.rebirths_received == 0, "the run saw the births: it had no reason to ask again"
    finally:
        mq.stop()
    check_against_truth(tmp_path, f"chdb://{tmp_path / 'state' / 'clickhouse'}", sim.ground_truth(),
                        sim.machine_ids)
    assert not (tmp_path / "state" / "run.lock").exists()

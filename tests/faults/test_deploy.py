"""Deployment faults: a spool limit the volume cannot hold stops the connector at start.

The check reads the real free space of the spool directory's filesystem (``statvfs``); the
limits below are set relative to it, so the test holds on any disk.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from plantstream.connectors.producer import SpoolingProducer, check_spool_space
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.tags_config import ProducerConfig

GIB = 1 << 30
SCRIPT = Path(sys.executable).parent / "plantstream"


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def test_a_spool_limit_beyond_the_free_space_stops_the_producer_at_start(tmp_path: Path) -> None:
    too_big = free_bytes(tmp_path) + 64 * GIB
    producer = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"},
                                ProducerConfig(spool_dir=str(tmp_path), spool_max_bytes=too_big), name="mqtt")
    with pytest.raises(ConnectorError) as info:
        producer.start()
    text = str(info.value)
    assert f"producer.spool_max_bytes is {too_big} bytes" in text
    assert f"spool {tmp_path / 'mqtt'}" in text
    assert "PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES" in text and "connectors.mqtt.persistence.size" in text
    # Nothing is held: the same spool starts with a limit that fits.
    ok = SpoolingProducer({"bootstrap.servers": "127.0.0.1:1"},
                          ProducerConfig(spool_dir=str(tmp_path), spool_max_bytes=16 << 20), name="mqtt").start()
    ok.close(timeout_s=0.1)


def test_what_is_already_spooled_counts_as_room(tmp_path: Path) -> None:
    spool = tmp_path / "opcua"
    spool.mkdir()
    (spool / f"{10**12:020d}.spool").write_bytes(b"\0" * (1 << 20))  # a segment left by an earlier run
    free = free_bytes(spool)
    # The limit is the room the spool can use: free space plus its own segments.
    assert check_spool_space(spool, free + (1 << 19), "opcua") > 0
    with pytest.raises(ConnectorError, match=r"1\.0 MiB already spooled: lower producer.spool_max_bytes"):
        check_spool_space(spool, free + 64 * GIB, "opcua")


def test_the_connector_command_fails_at_start_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "plant.yaml"
    config.write_text("site: plant-a\nmqtt:\n  host: 127.0.0.1\n  port: 1\n")
    env = {**os.environ, "PLANTSTREAM__PRODUCER__SPOOL_DIR": str(tmp_path / "spool"),
           "PLANTSTREAM__PRODUCER__SPOOL_MAX_BYTES": str(free_bytes(tmp_path) + 64 * GIB)}
    res = subprocess.run([str(SCRIPT), "connect", "mqtt", "--config", str(config), "--bootstrap", "127.0.0.1:1"],
                         capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "producer.spool_max_bytes" in errors[0], res.stderr

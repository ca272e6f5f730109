"""The peer benchmark: the same windowed OEE facts in Quix Streams, on the same broker and data.

Quix Streams pins its own confluent-kafka, so it lives in ``.venv-peer`` (``make .venv-peer``),
never in plantstream's ``.venv``; :func:`run_peer` runs ``tests/bench/peer_quix.py`` there as a
subprocess and returns its JSON line. What the peer computes is described in that script.

Standalone: ``.venv/bin/python -m tests.bench.peer [--messages N] [--machines M]`` starts the
embedded broker, produces N simulated PLC measurements to a fresh topic and prints the peer's
result.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("peer_quix.py")
PEER_VENV = ROOT / ".venv-peer"
QUIXSTREAMS_VERSION = "3.28.1"
"""Keep in step with ``PEER_QUIXSTREAMS`` in the Makefile."""
T0 = 1_763_791_200_000


class PeerBenchmarkError(RuntimeError):
    """The peer benchmark could not be installed, failed or gave no result."""


def _marker(venv: Path) -> Path:
    return venv / f".quixstreams-{QUIXSTREAMS_VERSION}"


def ensure_peer_venv(venv: Path = PEER_VENV) -> Path:
    """Create ``venv`` with the pinned Quix Streams unless it is there; return its python.

    Does what ``make .venv-peer`` does (same marker file), without needing make.
    """
    python = venv / "bin" / "python"
    if _marker(venv).exists() and python.exists():
        return python
    base = shutil.which("python3.11") or sys.executable
    steps = [
        [base, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"],
        [str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIXSTREAMS_VERSION}"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            msg = f"cannot set up {venv}: {' '.join(step)} exited {done.returncode}:\n{done.stderr[-2000:]}"
            raise PeerBenchmarkError(msg)
    _marker(venv).touch()
    return python


def run_peer(bootstrap: str, topic: str, messages: int, timeout_s: float = 600,
             window_s: float = 60.0) -> dict[str, Any]:
    """Run the Quix Streams peer over the first ``messages`` records of ``topic``.

    Returns the script's JSON: ``peer_events_per_s``, ``messages``, ``seconds``,
    ``windows_emitted``, ``quixstreams`` (the version). Raises :class:`PeerBenchmarkError` when
    the peer venv cannot be made, the script fails or times out, or it prints no result.
    """
    python = ensure_peer_venv()
    cmd = [str(python), str(SCRIPT), "--bootstrap", bootstrap, "--topic", topic,
           "--messages", str(messages), "--window-s", str(window_s)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        msg = f"peer benchmark did not finish within {timeout_s} s:\n{err[-2000:]}"
        raise PeerBenchmarkError(msg) from exc
    lines = done.stdout.strip().splitlines()
    result: dict[str, Any] | None = None
    if lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if done.returncode != 0 or not isinstance(result, dict) or "peer_events_per_s" not in result:
        why = result.get("error") if isinstance(result, dict) else None
        msg = (f"peer benchmark failed (exit {done.returncode}){': ' + why if why else ''}\n"
               f"stdout: {done.stdout[-1000:]}\nstderr: {done.stderr[-2000:]}")
        raise PeerBenchmarkError(msg)
    return result


def produce_measurements(conf: dict[str, Any], topic: str, messages: int, machines: int = 100) -> None:
    """Produce ``messages`` simulated PLC measurements (1 s samples), keyed by machine."""
    from confluent_kafka import Producer

    from plantstream.simulators.plc import PlcLine

    producer = Producer({**conf, "linger.ms": 50, "compression.type": "lz4"})
    line = PlcLine(seed=1, machines=machines, start_ms=T0, sample_ms=1000)
    for sent, m in enumerate(line.run(T0 + 10**9), start=1):
        while True:
            try:
                producer.produce(topic, m.to_json(), m.machine.encode())
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
        if sent >= messages:
            break
    left = producer.flush(60)
    if left:
        msg = f"{left} measurements not delivered to {topic}"
        raise PeerBenchmarkError(msg)


def main() -> None:
    from plantstream.connectors import kafka
    from plantstream.connectors.embedded import kafka_only

    parser = argparse.ArgumentParser(description="Quix Streams peer benchmark on the embedded broker")
    parser.add_argument("--messages", type=int, default=300_000)
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--window-s", type=float, default=60.0)
    args = parser.parse_args()
    ensure_peer_venv()
    with tempfile.TemporaryDirectory() as tmp, kafka_only(partitions=1, workdir=tmp) as broker:
        conf = {"bootstrap.servers": broker.bootstrap}
        topic = f"peer.measurements.{int(time.time())}"
        kafka.create_topics(conf, {topic: 1})
        started = time.perf_counter()
        produce_measurements(conf, topic, args.messages, args.machines)
        produced_s = time.perf_counter() - started
        result = run_peer(broker.bootstrap, topic, args.messages, window_s=args.window_s)
    print(json.dumps({**result, "machines": args.machines, "produce_s": round(produced_s, 1)}))


if __name__ == "__main__":
    main()

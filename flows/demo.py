"""``plantstream demo``: the embedded runtime with a live generated stream, until stopped."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from bytewax.testing import run_main
from confluent_kafka import Producer

from connectors import clickhouse as ch
from connectors import kafka
from connectors.embedded import EmbeddedRuntime
from connectors.simulators.synthetic import synthetic_stream
from flows.main import build_dataflow, clickhouse_factory
from flows.registry import select
from schemas.config import PlantConfig
from schemas.measurement import now_ms


@dataclass
class DemoSummary:
    produced: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dsn: str = ""


def _generate(conf: dict[str, Any], stop: threading.Event, counter: list[int],
              machines: int, speed: float) -> None:
    """Produce the synthetic stream in (sped-up) real time until ``stop`` is set."""
    producer = Producer(kafka.producer_config(conf))
    step_ms = 1000
    start = now_ms()
    wall0 = time.monotonic()
    for m in synthetic_stream(start, machines=machines, step_ms=step_ms):
        if stop.is_set():
            break
        due = wall0 + (m.ts - start) / 1000 / speed
        delay = due - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        producer.produce(kafka.MEASUREMENTS, m.to_json(), m.machine.encode())
        counter[0] += 1
        producer.poll(0)
    producer.flush()


def run_demo(config: PlantConfig, *, duration: float | None, dsn: str | None = None,
             workdir: str | Path = ".plantstream", machines: int = 6, speed: float = 10.0,
             on_start: Callable[[EmbeddedRuntime], None] | None = None) -> DemoSummary:
    """Run the embedded runtime, a generated plant and every flow; stop after ``duration``
    seconds or at Ctrl-C, draining what was produced before stopping."""
    started = time.perf_counter()
    local = config.model_copy(update={"kafka": config.kafka.model_copy(update={"bootstrap_servers": None})})
    stop_generating = threading.Event()
    stop_reading = threading.Event()
    produced = [0]
    with EmbeddedRuntime(local, dsn=dsn, workdir=workdir) as rt:
        if on_start is not None:
            on_start(rt)
        gen = threading.Thread(target=_generate, name="demo-generator", daemon=True,
                               args=(rt.kafka_conf, stop_generating, produced, machines, speed))
        gen.start()

        def stopper() -> None:
            stop_generating.wait(duration)
            stop_generating.set()
            gen.join()
            stop_reading.set()

        threading.Thread(target=stopper, name="demo-stopper", daemon=True).start()

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            stop_generating.set()

        previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
        try:
            sink = ch.ClickHouseSink(clickhouse_factory(local, rt.dsn),
                                     batch_rows=local.clickhouse.batch_rows)
            dataflow = build_dataflow(local, kafka.KafkaInput(rt.kafka_conf, stop=stop_reading),
                                      sink, flows=select(None),
                                      kafka_sink=kafka.KafkaOutput(rt.kafka_conf))
            run_main(dataflow, epoch_interval=timedelta(seconds=2))
        finally:
            stop_generating.set()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
    return DemoSummary(produced[0], dict(sink.stats.rows), time.perf_counter() - started, rt.dsn)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

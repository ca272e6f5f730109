"""``plantstream demo``: the embedded runtime with both simulated plants, until stopped.

The simulated plants are :mod:`plantstream.simulators` (the ``plantstream-simulators``
distribution, a demo dependency: the production image does not carry it). The demo plant also
carries its work-order reference data (part, material cost per unit, labor rate), as an MES
would, so the scrap events of the demo are costed (:func:`demo_workorders`).
"""

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

import orjson
from bytewax.testing import run_main

from plantstream.connectors import clickhouse as ch
from plantstream.connectors import kafka
from plantstream.connectors.embedded import EmbeddedRuntime
from plantstream.flows.main import build_dataflow, check_start, clickhouse_factory, create_topics
from plantstream.flows.registry import select
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError

SIMULATORS_MISSING = ("plantstream demo needs the simulated plants: pip install plantstream-simulators "
                      "(from the checkout: pip install ./simulators, or make demo)")

MATERIAL_COST: dict[str, float] = {"press": 1.85, "cnc": 4.20, "molder": 0.65,
                                   "mixer": 0.12, "divider": 0.18, "proofer": 0.22, "fryer": 0.35,
                                   "glazer": 0.48}
"""Material cost per unit scrapped, by machine type (PLC parts; the bakery's goods, worth more
the further down the line they are lost); other types ``1.0``."""
LABOR_RATE = 38.0
"""Labor cost per hour of the demo plant's operators."""
DEMO_ORDERS = 500
"""Work orders announced per simulated machine (a PLC order lasts 1–3 simulated hours, a bakery
product run at least a shift)."""


def _simulators() -> Any:
    try:
        from plantstream import simulators
    except ModuleNotFoundError:
        raise ConfigError(SIMULATORS_MISSING) from None
    return simulators


@dataclass
class DemoSummary:
    produced: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    dsn: str = ""
    cloud: str = ""
    outbox: list[dict[str, Any]] = field(default_factory=list)


def demo_config(config: PlantConfig, *, machines: int = 3, bakery_machines: int = 15) -> PlantConfig:
    """``config`` plus every simulated machine with its line and ideal cycle times (OEE needs them),
    and no ``clock.max_ahead_s`` (the simulators run faster than the wall clock, from now).

    The PLC line's first machines come from ``config.lines``; the ones it generates beyond them
    join the first line. The bakery's lines come from its own plant config.

    >>> from plantstream.schemas.config import load_config, EXAMPLE_CONFIG
    >>> cfg = demo_config(load_config(EXAMPLE_CONFIG))
    >>> info = cfg.machine("molder-01")
    >>> info.line, info.config.ideal_cycle_time_ms is not None
    ('line-1', True)
    >>> cfg.machine("miami-fryer-1").line
    'miami-line-1'
    """
    _simulators()
    from plantstream.simulators.bakery import bakery_config
    from plantstream.simulators.plc import PlcLine

    known = {m.id for ln in config.lines for m in ln.machines}
    added: dict[str, list[dict[str, Any]]] = {}
    for s in PlcLine(machines=machines, config=config).specs:
        if s.id not in known:
            added.setdefault(s.line, []).append({
                "id": s.id, "type": s.type, "ideal_cycle_time_ms": s.ideal_ms["P-100"],
                "ideal_cycle_time_ms_by_part": s.ideal_ms})
    for ln in bakery_config(bakery_machines).lines:
        added.setdefault(ln.id, []).extend(m.model_dump() for m in ln.machines if m.id not in known)
    data = config.model_dump()
    lines = [{**ln, "machines": [*ln["machines"], *added.pop(ln["id"], [])]} for ln in data["lines"]]
    lines += [{"id": lid, "machines": ms} for lid, ms in added.items()]
    # simulated time runs ahead of the wall clock (speed × real time from now): no ahead check
    clock = {**data["clock"], "max_ahead_s": None}
    return PlantConfig.model_validate({**data, "lines": lines, "clock": clock})


def demo_workorders(config: PlantConfig, *, machines: int = 3, bakery_machines: int = 15,
                    orders: int = DEMO_ORDERS) -> list[dict[str, Any]]:
    """The demo plant's work-order reference data, as an MES would publish it to
    ``plantstream.workorders``: one record per work order the simulated machines will run (both
    simulators number them ``WO-<MACHINE>-0001`` … per machine), with the material cost per unit
    by machine type and the labor rate (labor is priced by the ideal cycle of the part the order
    runs).

    >>> from plantstream.schemas.config import load_config, EXAMPLE_CONFIG
    >>> refs = demo_workorders(load_config(EXAMPLE_CONFIG), orders=2)
    >>> refs[0]["work_order"], refs[0]["material_cost"] > 0, refs[0]["labor_rate"]
    ('WO-PRESS-01-0001', True, 38.0)
    >>> [r["work_order"] for r in refs if r["work_order"].startswith("WO-MIAMI-FRYER-1-")]
    ['WO-MIAMI-FRYER-1-0001', 'WO-MIAMI-FRYER-1-0002']
    """
    _simulators()
    from plantstream.simulators.bakery import bakery_config
    from plantstream.simulators.plc import PlcLine

    kinds = [(s.id, s.type) for s in PlcLine(machines=machines, config=config).specs]
    kinds += [(m.id, m.type) for ln in bakery_config(bakery_machines).lines for m in ln.machines]
    return [{"work_order": f"WO-{machine.upper()}-{seq:04d}", "material_cost": MATERIAL_COST.get(kind, 1.0),
             "labor_rate": LABOR_RATE, "currency": "EUR"}
            for machine, kind in kinds for seq in range(1, orders + 1)]


def with_workorders(config: PlantConfig, workdir: Path, *, machines: int = 3) -> PlantConfig:
    """``config`` whose scrap flow reads the demo plant's work orders (unless it names its own).

    The reference data is written to ``<workdir>/demo-workorders.jsonl`` (``scrap.workorders_file``,
    read when the flow starts: the embedded runtime has no Kafka cluster for the
    ``plantstream.workorders`` topic input)."""
    if config.scrap.workorders_file:
        return config
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "demo-workorders.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in demo_workorders(config, machines=machines)) + b"\n")
    return config.model_copy(update={"scrap": config.scrap.model_copy(update={"workorders_file": str(path)})})


def run_demo(config: PlantConfig, *, duration: float | None, dsn: str | None = None,
             workdir: str | Path = ".plantstream", machines: int = 3, speed: float = 60.0,
             seed: int = 7, on_start: Callable[[EmbeddedRuntime], None] | None = None) -> DemoSummary:
    """Run the embedded runtime, both simulated plants behind their real protocols, and every flow.

    The PLC line plays through an OPC UA server into the OPC UA connector; the Contoso bakery
    publishes over MQTT into the MQTT connector; both produce to Kafka, where every registered
    flow reads them. Stops after ``duration`` seconds or at Ctrl-C, draining what the
    connectors produced before stopping. Simulated time runs ``speed`` times faster than the
    clock, so a minute of demo is an hour of production.
    """
    from plantstream.connectors import eventhubs
    from plantstream.connectors.outbox import workers_from_config

    _simulators()
    from plantstream.simulators.bakery import start_bakery_pipeline
    from plantstream.simulators.opcua_server import start_plc_pipeline

    started = time.perf_counter()
    work = Path(workdir)
    local = with_workorders(demo_config(config, machines=machines), work, machines=machines)
    local = local.model_copy(update={"kafka": local.kafka.model_copy(update={"bootstrap_servers": None})})
    stop_requested = threading.Event()
    stop_reading = threading.Event()
    summary = DemoSummary()
    flows = select(None)
    with EmbeddedRuntime(local, dsn=dsn, workdir=work, mqtt=True) as rt:
        assert rt.mqtt is not None
        client = rt.clickhouse()  # migrated by the runtime
        try:
            check_start(local, flows, client)
        finally:
            client.close()
        create_topics(rt.kafka_conf, flows, local.kafka.partitions)
        if on_start is not None:
            on_start(rt)
        stop_plc = start_plc_pipeline(local, rt.kafka_conf, seed=seed, speed=speed,
                                      machines=machines, workdir=work)
        stop_bakery = start_bakery_pipeline(rt.kafka_conf, rt.mqtt.host, rt.mqtt.port, seed=seed,
                                            speed=speed, workdir=work)

        def stopper() -> None:
            stop_requested.wait(duration)
            try:
                stop_plc()
                stop_bakery()
            finally:
                stop_reading.set()

        threading.Thread(target=stopper, name="demo-stopper", daemon=True).start()

        def on_sigint(signum: int, frame: FrameType | None) -> None:
            stop_requested.set()

        previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
        meter = eventhubs.BandwidthMeter()
        workers = [w.start() for w in workers_from_config(
            local, rt.kafka_conf, cloud=eventhubs.demo_target(rt.kafka_conf, local.eventhubs), meter=meter)]
        try:
            sink = ch.ClickHouseSink(clickhouse_factory(local, rt.dsn),
                                     batch_rows=local.clickhouse.batch_rows)
            dataflow = build_dataflow(local, kafka.KafkaInput(rt.kafka_conf, stop=stop_reading),
                                      sink, flows=flows,
                                      kafka_sink=kafka.KafkaOutput(rt.kafka_conf),
                                      cloud_meter=meter)
            run_main(dataflow, epoch_interval=timedelta(seconds=2))
        finally:
            stop_requested.set()
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            for w in workers:  # deliver what the run produced (bounded), before the broker goes
                w.stop(drain_s=local.outbox.drain_s)
        summary.produced = meter.raw_records
        summary.rows = dict(sink.stats.rows)
        summary.cloud = meter.summary()
        summary.outbox = [w.status() for w in workers]
    summary.seconds = time.perf_counter() - started
    summary.dsn = rt.dsn
    return summary


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()

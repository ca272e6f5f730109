"""``plantstream connect mqtt`` and ``plantstream simulate bakery``."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from plantstream.cli.common import (
    ConfigOpt,
    HealthPortOpt,
    SourceOpt,
    StateDirOpt,
    config_from,
    error_line,
    for_source,
    simulator_start,
    stderr,
)
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import PlantStreamError

log = logging.getLogger(__name__)


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _with_bakery_tags(cfg: PlantConfig) -> PlantConfig:
    from plantstream.simulators.bakery import bakery_config

    bakery = bakery_config(15)
    data = cfg.model_dump()
    data["tags"] = {**{k: v.model_dump() for k, v in bakery.tags.items()}, **data["tags"]}
    data["lines"] = data["lines"] or [line.model_dump() for line in bakery.lines]
    if [s.topic for s in cfg.mqtt.subscriptions] == ["kepware/#"]:  # the default: use the bakery's
        data["mqtt"]["subscriptions"] = [s.model_dump() for s in bakery.mqtt.subscriptions]
    return PlantConfig.model_validate(data)


def connect_mqtt(
    config: ConfigOpt = None,
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap", help="Kafka bootstrap servers (default: the config's kafka.bootstrap_servers).",
    )] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Add a built-in tag dictionary: 'bakery' (the Contoso bakery simulator).")] = None,
    duration: Annotated[float, typer.Option(
        "--duration", help="Stop after N seconds (0 = until Ctrl-C).")] = 0.0,
    source: SourceOpt = None,
    state_dir: StateDirOpt = None,
    health_port: HealthPortOpt = None,
) -> None:
    """Bridge the MQTT broker of the plant config into Kafka (QoS 1, acked after Kafka confirms)."""
    from plantstream.connectors.mqtt import MqttConnector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = for_source(config_from(config), "mqtt", source, state_dir, health_port)
        if preset == "bakery":
            cfg = _with_bakery_tags(cfg)
        elif preset is not None:
            msg = f"--preset {preset!r} is unknown; the built-in preset is 'bakery'"
            raise PlantStreamError(msg)
        kafka_conf = cfg.kafka.client_config()
        if bootstrap:
            kafka_conf["bootstrap.servers"] = bootstrap
        if "bootstrap.servers" not in kafka_conf:
            msg = ("no Kafka to write to: set kafka.bootstrap_servers in the config or pass "
                   "--bootstrap HOST:PORT")
            raise PlantStreamError(msg)
        stop = _stop_on_signals()
        if duration > 0:
            threading.Timer(duration, stop.set).start()
        connector = MqttConnector(cfg, kafka_conf).start(stop)
        stderr().print(f"MQTT {cfg.mqtt.host}:{cfg.mqtt.port} → Kafka {kafka_conf['bootstrap.servers']} "
                          f"({len(connector.mapper)} tag entries); Ctrl-C to stop")
        try:
            connector.run_until(stop)
        finally:
            connector.stop()
        stderr().print(f"stopped: {connector.stats}")
    except PlantStreamError as exc:
        error_line(str(exc))
        raise typer.Exit(2) from None


def simulate_bakery(
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same plant.")] = 1,
    speed: Annotated[float, typer.Option(
        "--speed", help="Event time per wall time (0 = as fast as possible).")] = 1.0,
    machines: Annotated[int, typer.Option("--machines", help="Machines (5 per plant line).")] = 15,
    host: Annotated[str, typer.Option("--host", help="MQTT broker host.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="MQTT broker port.")] = 1883,
    duration: Annotated[float, typer.Option(
        "--duration", help="Simulated seconds to run (0 = until Ctrl-C).")] = 0.0,
    start: Annotated[str | None, typer.Option(
        "--start", help="Event time of the start, RFC 3339 (default: live — faster than real time, the "
        "last 8 hours played fast up to now, then real time).")] = None,
    ground_truth: Annotated[Path, typer.Option(
        "--ground-truth", help="Where to write the ground-truth JSONL.")] = Path("bakery-ground-truth.jsonl"),
    embedded_broker: Annotated[bool, typer.Option(
        "--embedded-broker", help="Start an in-process MQTT broker (amqtt) on --port.")] = False,
) -> None:
    """Publish the Contoso bakery (mixer, divider, proofer, fryer, glazer; 3 plants) over MQTT."""
    from plantstream.connectors.embedded import AmqttBroker
    from plantstream.simulators.bakery import BakerySim, publish

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start_ms, live = simulator_start(start, speed)
    if start_ms is None:
        error_line(f"--start {start!r} is not an RFC 3339 time such as "
                          "2025-11-22T06:00:00Z")
        raise typer.Exit(2)
    broker = AmqttBroker(port=port, host=host).start() if embedded_broker else None
    sim = BakerySim(seed=seed, start_ms=start_ms, machines=machines)
    stop = _stop_on_signals()
    end_ms = sim.start_ms + int(duration * 1000) if duration > 0 else None
    stderr().print(f"bakery: {machines} machines, seed {seed}, speed {speed:g}× → mqtt://{host}:{port} "
                      "topics contoso/{plant}/{line}/{machine}")
    try:
        n = publish(sim, host, port, end_ms=end_ms, speed=speed, stop=stop, live=live)
    except OSError as exc:
        error_line(f"cannot reach the MQTT broker {host}:{port}: {exc}; "
                          "start one or pass --embedded-broker")
        raise typer.Exit(2) from None
    finally:
        if broker is not None:
            broker.stop()
    path = sim.write_ground_truth(ground_truth)
    stderr().print(f"published {n} messages; ground truth in {path}")

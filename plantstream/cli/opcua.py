"""``plantstream connect opcua`` and ``plantstream simulate plc``.

- ``connect opcua``: bridge the OPC UA server of the plant config (``opcua:``) into Kafka.
- ``simulate plc``: serve a simulated PLC line over OPC UA (KEPServerEX-style
  ``Channel1.<machine>.<Tag>`` nodes) at ``--speed`` × real time and write its ground truth; or,
  with ``--replay-file``, write the Measurements as JSONL for ``plantstream replay`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated

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

DEFAULT_PORT = 4840


def _with_plc_tags(cfg: PlantConfig) -> PlantConfig:
    from plantstream.simulators.opcua_server import plc_tag_dictionary

    data = cfg.model_dump(mode="json")
    data["tags"] = {**plc_tag_dictionary(), **data.get("tags", {})}
    return PlantConfig.model_validate(data)


def _stop_event(loop: asyncio.AbstractEventLoop) -> asyncio.Event:
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def connect_opcua(
    config: ConfigOpt = None,
    bootstrap: Annotated[str | None, typer.Option(
        "--bootstrap",
        help="Kafka bootstrap servers (default: the config's kafka.bootstrap_servers).")] = None,
    endpoint: Annotated[str | None, typer.Option(
        "--endpoint", help="OPC UA endpoint (default: the config's opcua.endpoint).")] = None,
    preset: Annotated[str | None, typer.Option(
        "--preset", help="Add a built-in tag dictionary: 'plc' (the PLC line simulator).")] = None,
    duration: Annotated[float, typer.Option(
        "--duration", help="Stop after N seconds (0 = until Ctrl-C).")] = 0.0,
    source: SourceOpt = None,
    state_dir: StateDirOpt = None,
    health_port: HealthPortOpt = None,
) -> None:
    """Subscribe to the OPC UA server's tags and produce Measurements to Kafka (Ctrl-C stops)."""
    from plantstream.connectors.opcua import OpcUaConnector

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = for_source(config_from(config), "opcua", source, state_dir, health_port)
        if preset == "plc":
            from plantstream.simulators.opcua_server import PLC_IGNORE

            cfg = _with_plc_tags(cfg)
            update: dict[str, object] = {"ignore": (*cfg.opcua.ignore, *PLC_IGNORE)}
            if not cfg.opcua.browse and not cfg.opcua.nodes:
                update["browse"] = ("0:Objects/2:Channel1",)
            cfg = cfg.model_copy(update={"opcua": cfg.opcua.model_copy(update=update)})
        elif preset is not None:
            msg = f"--preset {preset!r} is unknown; the built-in preset is 'plc'"
            raise PlantStreamError(msg)
        if endpoint:
            cfg = cfg.model_copy(update={"opcua": cfg.opcua.model_copy(update={"endpoint": endpoint})})
        kafka_conf = cfg.kafka.client_config()
        if bootstrap:
            kafka_conf["bootstrap.servers"] = bootstrap
        if "bootstrap.servers" not in kafka_conf:
            msg = ("no Kafka to write to: set kafka.bootstrap_servers in the config or pass "
                   "--bootstrap HOST:PORT")
            raise PlantStreamError(msg)

        async def main() -> None:
            stop = _stop_event(asyncio.get_running_loop())
            if duration > 0:
                asyncio.get_running_loop().call_later(duration, stop.set)
            conn = OpcUaConnector(cfg, kafka_conf)
            stderr().print(f"OPC UA {cfg.opcua.endpoint} → Kafka {kafka_conf['bootstrap.servers']}; "
                              "Ctrl-C to stop")
            stats = await conn.run(stop)
            stderr().print(f"stopped: {stats}")

        asyncio.run(main())
    except PlantStreamError as exc:
        error_line(str(exc))
        raise typer.Exit(2) from None


def simulate_plc(
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same line.")] = 1,
    speed: Annotated[float, typer.Option(
        "--speed",
        help="Event time per wall time, e.g. 60 = an hour a minute (0 = as fast as possible).")] = 1.0,
    machines: Annotated[int, typer.Option("--machines", help="Machines on the line.")] = 3,
    config: ConfigOpt = None,
    host: Annotated[str, typer.Option("--host", help="Listen address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="OPC UA port.")] = DEFAULT_PORT,
    start: Annotated[str | None, typer.Option(
        "--start", help="Event time of the first sample, RFC 3339 (default: live — faster than real "
        "time, the last 8 hours played fast up to now, then real time).")] = None,
    duration: Annotated[float, typer.Option(
        "--duration", help="Simulated hours to run (0 = until Ctrl-C; needed with --speed 0).")] = 0.0,
    truth: Annotated[Path, typer.Option("--truth", help="Ground-truth JSONL written at the end.")] = Path(
        ".plantstream/plc-truth.jsonl"),
    linger: Annotated[float, typer.Option(
        "--linger",
        help="Seconds to keep serving after --duration, for clients to read the last values.")] = 3.0,
    replay_file: Annotated[Path | None, typer.Option(
        "--replay-file", help="Write the Measurements as JSONL instead of serving OPC UA.")] = None,
    wait_for_client: Annotated[bool, typer.Option(
        "--wait-for-client",
        help="Hold the simulated clock at --start until a client subscribes (for truth tests).")] = False,
) -> None:
    """Simulate a PLC line (states, counts, scrap, anomalies) and serve it over OPC UA."""
    from plantstream.simulators.opcua_server import PlcOpcUaServer
    from plantstream.simulators.plc import PlcLine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config_from(config)
        start_ms, live = simulator_start(start, speed)
        if start_ms is None:
            msg = f"--start {start!r} is not an RFC 3339 time such as 2025-11-22T06:00:00Z"
            raise PlantStreamError(msg)
        until_ms = start_ms + round(duration * 3_600_000) if duration > 0 else None
        try:
            line = PlcLine(seed=seed, machines=machines, start_ms=start_ms, config=cfg)
        except ValueError as exc:
            raise PlantStreamError(str(exc)) from None
        truth.parent.mkdir(parents=True, exist_ok=True)
        if replay_file is not None:
            if until_ms is None:
                msg = "--replay-file needs --duration HOURS"
                raise PlantStreamError(msg)
            n = line.write_replay_file(replay_file, until_ms)
            line.write_ground_truth(truth)
            stderr().print(f"wrote {n} measurements to {replay_file} and the ground truth to {truth}")
            return
        if speed == 0 and until_ms is None:
            msg = "--speed 0 (as fast as possible) needs --duration HOURS"
            raise PlantStreamError(msg)

        async def main() -> None:
            stop = _stop_event(asyncio.get_running_loop())
            try:
                srv = PlcOpcUaServer(line, host=host, port=port, speed=speed, live=live)
            except ValueError as exc:
                raise PlantStreamError(str(exc)) from None
            async with srv:
                stderr().print(
                    f"PLC line ({', '.join(line.machine_ids)}) on {srv.endpoint}, nodes "
                    f"ns={srv.ns};s=Channel1.<machine>.<Tag>, {speed:g}× real time; Ctrl-C to stop")
                if wait_for_client:
                    stderr().print("holding the simulated clock until a client subscribes")
                    await srv.wait_for_subscriber(grace_s=2.0, stop=stop)
                await srv.play(until_ms=until_ms, stop=stop)
                if not stop.is_set() and linger > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=linger)

        try:
            asyncio.run(main())
        finally:
            n = line.write_ground_truth(truth)
            stderr().print(f"ground truth ({n} records) in {truth}")
    except PlantStreamError as exc:
        error_line(str(exc))
        raise typer.Exit(2) from None

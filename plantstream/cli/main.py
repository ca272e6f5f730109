"""The ``plantstream`` command line, assembled in one place.

:func:`build_app` adds every command and command group to the root Typer application
explicitly — nothing registers itself by being imported, so a module that is not listed here is
not a command, and ``tests/cli`` fails when a module of this package is not wired in. The
commands live in their modules as plain functions:

=====================  =========================================================================
``replay`` ``query``   :mod:`~plantstream.cli.core` (with ``demo``, ``flows``, ``db migrate``)
``status``             :mod:`~plantstream.cli.status`
``kpi …``              :mod:`~plantstream.cli.oee` (``oee``, ``downtime``),
                       :mod:`~plantstream.cli.scrap` (``scrap``, ``alerts``),
                       :mod:`~plantstream.cli.anomaly` (``anomalies``; also ``eval anomaly``)
``connect`` ``simulate``  :mod:`~plantstream.cli.opcua` and :mod:`~plantstream.cli.mqtt`
``report daily``       :mod:`~plantstream.cli.report`
``cloud settings``     :mod:`~plantstream.cli.cloud`
``kafka create-topics``  :mod:`~plantstream.cli.kafka`
``run``                :mod:`~plantstream.cli.run` (the supervisor: :mod:`~plantstream.cli.supervisor`)
``init``               :mod:`~plantstream.cli.init` (with ``config check``)
=====================  =========================================================================

:func:`main` is the console script (``plantstream``, ``python -m plantstream``): a usage error
or a :class:`~plantstream.schemas.errors.PlantStreamError` prints one line, ``error: …``, on
standard error and exits with status 2; Ctrl-C exits with 130.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import typer

from plantstream.cli import (
    anomaly,
    cloud,
    core,
    init,
    kafka,
    mqtt,
    oee,
    opcua,
    report,
    scrap,
    station,
    status,
)
from plantstream.cli import run as edge
from plantstream.cli.common import error_line
from plantstream.schemas.errors import PlantStreamError

GROUPS = ("db", "kafka", "kpi", "eval", "connect", "simulate", "report", "cloud", "config", "station")
"""The command groups, in the order ``--help`` lists them (after the top-level commands)."""


def _group(help_text: str) -> typer.Typer:
    return typer.Typer(no_args_is_help=True, help=help_text, pretty_exceptions_enable=False)


def build_app() -> typer.Typer:
    """The root application with every command and group added explicitly."""
    app = typer.Typer(name="plantstream", no_args_is_help=True, add_completion=False,
                      pretty_exceptions_enable=False,
                      help="Streaming OEE, downtime, scrap and condition monitoring at the plant edge.")
    app.command("replay")(core.replay)
    app.command("query")(core.query)
    app.command("demo")(core.demo)
    app.command("flows")(core.list_flows)
    app.command("status")(status.status)
    app.command("run")(edge.run)
    app.command("init")(init.init)

    db = _group("ClickHouse schema.")
    db.command("migrate")(core.db_migrate)

    kafka_app = _group("Kafka topics.")
    kafka_app.command("create-topics")(kafka.create_topics)

    kpi = _group("KPIs from ClickHouse: OEE, downtime, scrap, alerts, anomalies.")
    kpi.command("oee")(oee.kpi_oee)
    kpi.command("downtime")(oee.kpi_downtime)
    kpi.command("scrap")(scrap.kpi_scrap)
    kpi.command("alerts")(scrap.kpi_alerts)
    kpi.command("anomalies")(anomaly.kpi_anomalies)

    evaluate = _group("Evaluate detectors on labelled data sets.")
    evaluate.command("anomaly")(anomaly.eval_anomaly)

    connect = _group("Bridge OT protocols (OPC UA, MQTT) into Kafka.")
    connect.command("opcua")(opcua.connect_opcua)
    connect.command("mqtt")(mqtt.connect_mqtt)

    simulate = _group("Run a simulated plant (PLC line, bakery line).")
    simulate.command("plc")(opcua.simulate_plc)
    simulate.command("bakery")(mqtt.simulate_bakery)

    reports = _group("Reports for managers (self-contained HTML).")
    reports.command("daily")(report.report_daily)

    cloud_app = _group("The cloud sink (Azure Event Hubs or any Kafka).")
    cloud_app.command("settings")(cloud.cloud_settings)

    config_app = _group("Plant config files.")
    config_app.command("check")(init.config_check)

    station_app = typer.Typer(invoke_without_command=True, pretty_exceptions_enable=False,
                              help="The operator station web app (docs/station.md).")
    station_app.callback()(station.serve)
    station_app.command("hash-pin")(station.hash_pin)

    groups = (db, kafka_app, kpi, evaluate, connect, simulate, reports, cloud_app, config_app, station_app)
    for name, group in zip(GROUPS, groups, strict=True):
        app.add_typer(group, name=name)
    return app


app = build_app()
"""The assembled application (``typer.testing.CliRunner().invoke(app, [...])`` in tests)."""


def run(args: Sequence[str] | None = None, prog_name: str = "plantstream") -> int:
    """Run the command line on ``args`` (default: ``sys.argv[1:]``); returns the exit status.

    Usage errors (unknown option or command, a bad value, a missing argument) and plantstream
    errors print as one line on standard error with status 2 — no traceback. Typer's own
    exceptions are caught through its public base class: Typer ships its own copy of click, so
    ``click.ClickException`` (when click is installed at all) is a different class.
    """
    try:
        status_code = app(args=list(sys.argv[1:] if args is None else args), prog_name=prog_name,
                          standalone_mode=False)
    except PlantStreamError as exc:
        error_line(str(exc))
        return 2
    except typer.Abort:
        return 130
    except typer.TyperException as exc:  # UsageError, BadParameter, NoSuchOption, MissingParameter …
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without a command: its help is shown
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        # our own messages name the option already; Typer's own ("Invalid value for '--limit': …") keep theirs
        text = exc.message if exc.message.startswith("--") else exc.format_message()
        error_line(f"{text}{hint}")
        return 2
    except KeyboardInterrupt:
        return 130
    return status_code if isinstance(status_code, int) else 0


def main() -> None:
    """Console-script entry point (``plantstream``, ``python -m plantstream``)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(run())


if __name__ == "__main__":
    main()

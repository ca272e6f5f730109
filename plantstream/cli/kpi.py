"""``plantstream kpi …``: KPI read-outs from ClickHouse.

Each feature adds its command to :data:`kpi_app` from its own ``flows/cli_*.py`` module
(``kpi oee``, ``kpi downtime``, ``kpi scrap``, ``kpi alerts``, ``kpi anomalies``).
"""

import typer

from plantstream.cli.main import app

kpi_app = typer.Typer(no_args_is_help=True,
                      help="KPIs from ClickHouse: OEE, downtime, scrap, alerts, anomalies.")
app.add_typer(kpi_app, name="kpi")

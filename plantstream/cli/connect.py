"""``plantstream connect …`` and ``plantstream simulate …``: OT data into Kafka.

The protocol modules add their commands to :data:`connect_app` and :data:`simulate_app`.
"""

import typer

from plantstream.cli.main import app

connect_app = typer.Typer(no_args_is_help=True, help="Bridge OT protocols (OPC UA, MQTT) into Kafka.")
simulate_app = typer.Typer(no_args_is_help=True, help="Run a simulated plant (PLC line, bakery line).")
app.add_typer(connect_app, name="connect")
app.add_typer(simulate_app, name="simulate")

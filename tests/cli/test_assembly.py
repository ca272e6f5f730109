"""The command line is assembled in one place, explicitly, and lists every command group."""

from __future__ import annotations

import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import typer

import plantstream.cli
from plantstream.cli.main import GROUPS, app

CLI_DIR = Path(plantstream.cli.__file__).parent
EXPECTED = {
    "replay": None, "query": None, "demo": None, "flows": None, "status": None, "run": None, "init": None,
    "db": {"migrate"},
    "kafka": {"create-topics"},
    "kpi": {"oee", "downtime", "scrap", "alerts", "anomalies"},
    "eval": {"anomaly"},
    "connect": {"opcua", "mqtt"},
    "simulate": {"plc", "bakery"},
    "report": {"daily"},
    "cloud": {"settings"},
    "config": {"check"},
    "station": {"hash-pin"},
}


def test_every_command_and_group_is_added_by_main() -> None:
    root = typer.main.get_command(app)
    commands = root.commands  # type: ignore[attr-defined]
    assert list(commands) == [*[n for n, sub in EXPECTED.items() if sub is None], *GROUPS]
    for name, sub in EXPECTED.items():
        if sub is not None:
            assert set(commands[name].commands) == sub, name


def test_no_module_registers_commands_by_being_imported() -> None:
    """Only ``main.py`` creates Typer apps or adds commands: importing a module registers nothing."""
    pattern = re.compile(r"typer\.Typer\(|\.add_typer\(|@\w+\.command\(|_app\.command\(|load_command_modules|pkgutil")
    offenders = [p.name for p in CLI_DIR.glob("*.py") if p.name != "main.py" and pattern.search(p.read_text())]
    assert offenders == []


def test_every_module_of_the_cli_package_is_wired_into_main() -> None:
    """A new module that main does not import is a test failure, not a command that silently is not there."""
    modules = {f"plantstream.cli.{m.name}" for m in pkgutil.iter_modules([str(CLI_DIR)])}
    out = subprocess.run([sys.executable, "-c", "import sys, plantstream.cli.main; "
                          "print('\\n'.join(m for m in sys.modules if m.startswith('plantstream.cli.')))"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert modules - set(out) == set()


def test_python_m_plantstream_help_lists_every_group() -> None:
    res = subprocess.run([sys.executable, "-m", "plantstream", "--help"], capture_output=True, text=True,
                         env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"}, check=False)
    assert res.returncode == 0, res.stderr
    listed = re.findall(r"^│ (\w+)\s", res.stdout, flags=re.M)
    assert listed == list(EXPECTED)


def test_flows_lists_each_declared_flow_with_its_own_description() -> None:
    from typer.testing import CliRunner

    from plantstream.flows.registry import available

    out = " ".join(CliRunner().invoke(app, ["flows"], env={"COLUMNS": "200"}).output.split())
    for name, declared in available().items():
        first = declared.doc.strip().splitlines()[0]
        assert f"{name} {' '.join(first.split())}" in out, (name, out)

"""Usage errors and plantstream errors are one line on standard error and exit with status 2."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from plantstream.cli.main import run
from plantstream.connectors import clickhouse as chc

SCRIPT = Path(sys.executable).parent / "plantstream"


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("args", "says"), [
    (["--bogus"], "No such option: --bogus"),
    (["kpi", "oee", "--by", "bogus"], "--by 'bogus': choose from machine, line, site, shift, day"),
    (["replay"], "Missing argument 'file'"),
    (["kpi", "nothing"], "No such command 'nothing'"),
    (["kpi", "oee", "--format", "xml"], "--format 'xml': choose table, json or csv"),
    (["kpi", "anomalies", "--limit", "many"], "'--limit'"),
    (["kpi", "oee", "--from", "yesterday"], "--from 'yesterday': give RFC 3339"),
    (["kpi", "scrap", "--by", "colour"], "--by 'colour': choose from machine, line, part, reason"),
])
def test_usage_errors_are_one_line_and_exit_2(args: list[str], says: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")  # a long message is still one line: never wrapped
    assert run(args) == 2
    captured = capsys.readouterr()
    assert says in _one_line_error(captured.err)
    assert captured.out == ""


def test_a_plantstream_error_is_one_line_printed_literally(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["kpi", "oee", "--clickhouse", "ftp://press-03[/bold]"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "'ftp://press-03[/bold]'" in line  # not read as rich markup


@pytest.mark.integration
def test_an_unmigrated_database_names_the_fix(ch_dsn: str, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"  # created on connect, never migrated
    monkeypatch.setenv("PLANTSTREAM__CLICKHOUSE__DATABASE", name)
    try:
        assert run(["kpi", "downtime", "--clickhouse", ch_dsn]) == 2
    finally:
        admin = chc.connect(ch_dsn)
        admin.command(f"DROP DATABASE IF EXISTS {name} SYNC")
        admin.close()
    assert "run `plantstream db migrate` first" in _one_line_error(capsys.readouterr().err)


def test_the_console_script_without_click_installed() -> None:
    """Typer ships its own click: a usage error must not need (or import) the click distribution."""
    probe = ("import importlib.abc, sys\n"
             "class Block(importlib.abc.MetaPathFinder):\n"
             "    def find_spec(self, name, path=None, target=None):\n"
             "        if name == 'click' or name.startswith('click.'):\n"
             "            raise ModuleNotFoundError('No module named click', name=name)\n"
             "sys.meta_path.insert(0, Block())\n"
             "sys.argv = ['plantstream', 'kpi', 'oee', '--by', 'bogus']\n"
             "from plantstream.cli.main import main\n"
             "main()\n")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert res.returncode == 2, res.stderr
    assert "--by 'bogus'" in _one_line_error(res.stderr)


def test_the_installed_script_and_python_m_exit_2_on_a_usage_error() -> None:
    for cmd in ([str(SCRIPT), "--bogus"], [sys.executable, "-m", "plantstream", "kpi", "oee", "--wat"]):
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert res.returncode == 2, (cmd, res.stderr)
        assert "No such option" in _one_line_error(res.stderr)
        assert res.stdout == ""


def test_a_command_that_exits_2_exits_2_from_the_console_script(capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``typer.Exit(2)`` inside a command is the script's status (it was lost: the script exited 0)."""
    monkeypatch.delenv("PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS", raising=False)
    assert run(["connect", "mqtt"]) == 2
    assert "--bootstrap" in _one_line_error(capsys.readouterr().err)

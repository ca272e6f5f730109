"""plantstream installs as one import name, from a built wheel and as an editable checkout.

The wheel test builds the distribution, installs it with its dependencies into a new virtualenv
and runs the command line from a folder outside the checkout, so nothing of the source tree can
be imported by accident.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("replay", "query", "demo", "flows", "status", "db", "kpi", "eval", "connect", "simulate",
          "report", "cloud")


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    res = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600, check=False,
                         env=env)
    assert res.returncode == 0, f"{args}: {res.stdout[-2000:]}{res.stderr[-3000:]}"
    return res.stdout


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


def _assert_lists_every_group(help_text: str) -> None:
    missing = [g for g in GROUPS if f" {g} " not in help_text]
    assert not missing, f"missing command groups {missing} in:\n{help_text}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], cwd=out)
    [whl] = out.glob("plantstream-*.whl")
    return whl


def test_wheel_holds_one_top_level_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        [top] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top).decode().split() == ["plantstream"]
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"plantstream"}
    for resource in ("plantstream/schemas/plant.example.yaml", "plantstream/schemas/clickhouse/010_oee_facts.sql",
                     "plantstream/flows/main.py", "plantstream/cli/main.py", "plantstream/__main__.py"):
        assert resource in names, resource


@pytest.mark.integration
def test_wheel_in_a_clean_venv_runs_every_command_group(wheel: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    _run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path,
         env=_clean_env())
    _assert_lists_every_group(_run([str(bin_dir / "plantstream"), "--help"], cwd=tmp_path, env=_clean_env()))
    _assert_lists_every_group(_run([str(bin_dir / "python"), "-m", "plantstream", "--help"], cwd=tmp_path,
                                   env=_clean_env()))
    where = _run([str(bin_dir / "python"), "-c",
                  "import plantstream.flows, plantstream.schemas.config as c;"
                  "print(plantstream.flows.__file__); print(c.EXAMPLE_CONFIG.is_file())"],
                 cwd=tmp_path, env=_clean_env()).split()
    assert where[0].startswith(str(env_dir)) and where[1] == "True"
    # the checkout's generic names are not importable from the installed distribution
    res = subprocess.run([str(bin_dir / "python"), "-c", "import flows"], cwd=tmp_path, capture_output=True,
                         text=True, env=_clean_env(), check=False)
    assert res.returncode != 0 and "No module named 'flows'" in res.stderr


def test_editable_install_runs_outside_the_checkout(tmp_path: Path) -> None:
    """The development install (``pip install -e``) maps the top-level folders onto ``plantstream.*``."""
    _assert_lists_every_group(_run([sys.executable, "-m", "plantstream", "--help"], cwd=tmp_path,
                                   env={**_clean_env(), "COLUMNS": "120"}))
    out = _run([sys.executable, "-c", "import plantstream.flows.oee as m; print(m.__file__)"], cwd=tmp_path,
               env=_clean_env())
    assert Path(out.strip()).resolve() == (ROOT / "flows" / "oee.py").resolve()


def test_every_logger_is_under_plantstream() -> None:
    import importlib
    import logging
    import pkgutil

    import plantstream

    names = [info.name for info in pkgutil.walk_packages(plantstream.__path__, "plantstream.")]
    loggers = [obj.name for n in names for obj in vars(importlib.import_module(n)).values()
               if isinstance(obj, logging.Logger)]
    assert len(loggers) > 5
    assert all(name.startswith("plantstream.") for name in loggers), loggers

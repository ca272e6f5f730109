"""plantstream installs as one import name, from a built wheel and as an editable checkout.

The wheel test builds the distribution, installs it with its dependencies into a new virtualenv
and runs the command line from a folder outside the checkout, so nothing of the source tree can
be imported by accident. The simulators are a distribution of their own, plantstream-simulators
(``simulators/``): the main wheel does not hold them, and installed beside it they add
``plantstream.simulators`` to the same import name.
"""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture(scope="module")
def simulators_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # built from a copy: an in-tree build would leave build/ inside the package folder
    src = tmp_path_factory.mktemp("simsrc") / "simulators"
    shutil.copytree(ROOT / "simulators", src, ignore=shutil.ignore_patterns("*.egg-info", "build", "__pycache__"))
    out = tmp_path_factory.mktemp("simdist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)], cwd=out)
    [whl] = out.glob("plantstream_simulators-*.whl")
    return whl


def test_the_main_wheel_holds_no_simulators_and_theirs_holds_only_them(wheel: Path,
                                                                       simulators_wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        assert not [n for n in z.namelist() if "simulators" in n]
    with zipfile.ZipFile(simulators_wheel) as z:
        names = z.namelist()
        [top] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert z.read(top).decode().split() == ["plantstream"]
        [meta] = [n for n in names if n.endswith(".dist-info/METADATA")]
        assert "Requires-Dist: plantstream==0.1.0" in z.read(meta).decode()
        code = sorted(n for n in names if not n.split("/")[0].endswith(".dist-info"))
    # plantstream/__init__.py stays the main distribution's: no file of this wheel outside its package
    assert code == ["plantstream/simulators/__init__.py", "plantstream/simulators/bakery.py",
                    "plantstream/simulators/opcua_server.py", "plantstream/simulators/plc.py",
                    "plantstream/simulators/synthetic.py"]


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
def test_wheel_in_a_clean_venv_runs_every_command_group(wheel: Path, simulators_wheel: Path,
                                                        tmp_path: Path) -> None:
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
    # the production install has no simulators ...
    res = subprocess.run([str(bin_dir / "python"), "-c", "import plantstream.simulators"], cwd=tmp_path,
                         capture_output=True, text=True, env=_clean_env(), check=False)
    assert res.returncode != 0 and "No module named 'plantstream.simulators'" in res.stderr
    # ... the demo's install adds their wheel: same import name, plantstream still the main package
    _run([str(bin_dir / "pip"), "install", "-q", "--disable-pip-version-check", str(simulators_wheel)],
         cwd=tmp_path, env=_clean_env())
    where = _run([str(bin_dir / "python"), "-c",
                  "import plantstream, plantstream.simulators.plc as p; print(plantstream.__file__);"
                  "print(p.__file__); print(plantstream.__version__)"], cwd=tmp_path, env=_clean_env()).split()
    assert where[0] == str(env_dir / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
                           / "site-packages" / "plantstream" / "__init__.py")
    assert where[1].startswith(str(env_dir)) and where[2] == "0.1.0"
    replay_file = tmp_path / "plc.jsonl"
    _run([str(bin_dir / "plantstream"), "simulate", "plc", "--seed", "3", "--machines", "2", "--start",
          "2025-11-22T06:00:00Z", "--duration", "0.25", "--replay-file", str(replay_file)],
         cwd=tmp_path, env=_clean_env())
    assert len(replay_file.read_bytes().splitlines()) > 100


def test_editable_install_runs_outside_the_checkout(tmp_path: Path) -> None:
    """The development install (``pip install -e``) maps the top-level folders onto ``plantstream.*``."""
    _assert_lists_every_group(_run([sys.executable, "-m", "plantstream", "--help"], cwd=tmp_path,
                                   env={**_clean_env(), "COLUMNS": "120"}))
    out = _run([sys.executable, "-c", "import plantstream.flows.oee as m; print(m.__file__)"], cwd=tmp_path,
               env=_clean_env())
    assert Path(out.strip()).resolve() == (ROOT / "flows" / "oee.py").resolve()
    # the simulators come from the checkout too (plantstream/simulators -> simulators/), while
    # plantstream itself stays the editable main distribution's regular package
    out = _run([sys.executable, "-c", "import plantstream, plantstream.simulators.plc as p;"
                "print(plantstream.__file__); print(p.__file__)"], cwd=tmp_path, env=_clean_env())
    init, plc = out.split()
    assert Path(init).resolve() == (ROOT / "plantstream" / "__init__.py").resolve()
    assert Path(plc).resolve() == (ROOT / "simulators" / "plc.py").resolve()


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

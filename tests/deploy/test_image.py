"""What the container image relies on (the image itself is not built here: no Docker engine).

The Dockerfile installs plantstream without the ``embedded`` extra (no chDB, no embedded Kafka or
MQTT broker) and without the plantstream-simulators distribution unless asked (nothing is
deleted after installing): every production entry point must still import. The chart runs pods with ``runAsNonRoot``, which Kubernetes can only verify
for a numeric user.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Import every production entry point while the packages the image leaves out cannot be found.
PROBE = r"""
import importlib.abc, sys
BLOCKED = ("chdb", "amqtt", "calfkit", "plantstream.simulators")
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"{name} is not in the production image", name=name)
        return None
sys.meta_path.insert(0, Block())
for mod in [m for m in list(sys.modules) if m.startswith(BLOCKED)]:
    del sys.modules[mod]
from plantstream.cli.main import app
import plantstream.flows.main
from plantstream.flows.registry import available
print(",".join(sorted(available())))
from typer.testing import CliRunner
for args in (["--help"], ["connect", "opcua", "--help"], ["connect", "mqtt", "--help"], ["db", "migrate", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
"""


def test_production_entry_points_import_without_embedded_extras_or_simulators() -> None:
    res = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "archive" in res.stdout.split(",")


def test_dockerfile_runs_as_a_numeric_non_root_user_without_embedded_extras() -> None:
    text = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] == "10001"
    assert re.search(r'^ARG EXTRAS=""$', text, re.MULTILINE)
    assert 'ENTRYPOINT ["plantstream"]' in text
    assert "PYTHONDONTWRITEBYTECODE=1" in text
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS build$", text, re.MULTILINE)  # multi-stage


def test_dockerfile_installs_the_simulators_only_when_asked() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "rm -rf" not in text  # nothing removed from the install
    assert re.search(r"^ARG SIMULATORS=false$", text, re.MULTILINE)
    assert re.search(r'if \[ "\$SIMULATORS" = "true" \]; then pip install --no-deps --no-build-isolation '
                     r"\./simulators; fi", text)
    assert "COPY simulators ./simulators" in text


def test_dockerfile_installs_exactly_the_locked_dependencies() -> None:
    """Every dependency from a hash-checked lock; plantstream itself with --no-deps."""
    text = (ROOT / "Dockerfile").read_text()
    assert "lock=requirements/runtime.txt; if [ -n \"$EXTRAS\" ]; then lock=requirements/lock.txt; fi" in text
    assert "pip install --require-hashes -r requirements/pip.txt" in text
    assert 'pip install --require-hashes -r "$lock"' in text
    installs = re.findall(r"pip install ([^\n\\]*)", text)
    # Every install either checks hashes or installs this checkout without dependencies.
    assert installs and all("--require-hashes" in i or "--no-deps" in i for i in installs), installs
    assert "COPY --from=build /opt/plantstream /opt/plantstream" in text
    assert re.search(r"PATH=/opt/plantstream/bin:\$PATH", text)

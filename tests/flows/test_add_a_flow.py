"""The README's "Adding a flow", as a data engineer does it: the example module and its migration
are taken from README.md, the module is added to ``plantstream.flows`` (a folder of the
package's search path, discovered like any module of ``flows/``) and replayed into chDB.

- without its migration the flow stops at start, before a line is read, with ONE line naming the
  migration to add (the CLI prints it and exits 2);
- with it, the flow writes its rows, a temperature arriving as ``"n/a"`` is dead-lettered in the
  flow's name, and the other flows keep every sample.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantstream import flows as flows_pkg
from plantstream.connectors import clickhouse as chc
from plantstream.flows.registry import available, select
from plantstream.flows.replay import replay
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_763_791_200_000


def readme_blocks() -> tuple[str, str]:
    """The example module and its migration, as the README shows them."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Adding a flow"):]
    section = section[:section.index("\n## ", 4)]
    module = re.search(r"```python\n(# flows/hot_spindles\.py\n.*?)```", section, re.DOTALL)
    migration = re.search(r"```sql\n(-- schemas/clickhouse/051_hot_spindles\.sql\n.*?)```", section, re.DOTALL)
    assert module and migration, "the README's add-a-flow example is missing"
    return module.group(1), migration.group(1)


@pytest.fixture
def flow_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on ``plantstream.flows``' search path holding the README's module."""
    folder = tmp_path / "my_flows"
    folder.mkdir()
    (folder / "hot_spindles.py").write_text(readme_blocks()[0], encoding="utf-8")
    monkeypatch.setattr(flows_pkg, "__path__", [*flows_pkg.__path__, str(folder)])
    yield folder
    sys.modules.pop("plantstream.flows.hot_spindles", None)


def config(threshold: float) -> PlantConfig:
    return PlantConfig.model_validate({
        "site": "plant-a",
        "lines": [{"id": "line-1", "machines": [{"id": "cnc-01"}, {"id": "cnc-02"}]}],
        "flows": {"hot_spindles": {"threshold_c": threshold}},
    })


def shift(path: Path) -> list[tuple[str, int, Any]]:
    """Temperatures of two spindles (every 10th one "n/a"), with their state and counts."""
    samples: list[tuple[str, int, Any]] = []
    lines = []
    for i in range(300):
        for k, machine in enumerate(("cnc-01", "cnc-02")):
            ts = T0 + i * 1000
            value: Any = "n/a" if i % 10 == 3 else round(40.0 + (i * 7 + k * 13) % 45 + 0.5, 1)
            samples.append((machine, ts, value))
            lines.append({"ts": ts, "machine": machine, "metric": "temperature_c", "value": value})
            if i % 60 == 0:
                lines.append({"ts": ts, "machine": machine, "metric": "machine_state", "value": "running"})
    path.write_bytes(b"\n".join(orjson.dumps(x) for x in lines) + b"\n")
    return samples


def test_the_readme_flow_is_discovered_from_its_declaration(flow_folder: Path) -> None:
    flows = available()
    assert "hot_spindles" in flows and "archive" in flows
    flow = flows["hot_spindles"]
    assert flow.doc.startswith("Spindle temperatures above")
    assert dict(flow.tables) == {"hot_spindles": "051_hot_spindles.sql"}
    assert flow.settings(config(61.5)).threshold_c == 61.5
    with pytest.raises(ConfigError, match=r"flows\.hot_spindles\.threshold_c"):
        flow.settings(PlantConfig.model_validate({"flows": {"hot_spindles": {"threshold_c": "hot"}}}))


def test_a_config_section_for_no_flow_names_the_field() -> None:
    from plantstream.flows.registry import check_config

    bad = PlantConfig.model_validate({"flows": {"hot_spindle": {"threshold_c": 60}}})
    with pytest.raises(ConfigError, match=r"'flows\.hot_spindle': no flow is named"):
        check_config(bad, select("archive"))


@pytest.mark.integration
def test_without_its_migration_the_flow_stops_at_start_naming_it(
        flow_folder: Path, tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    src = tmp_path / "shift.jsonl"
    shift(src)
    with pytest.raises(ConfigError) as info:
        replay(src, config(60.0), dsn=ch_dsn, database=ch_db, flows=select("archive,status,hot_spindles"),
               workdir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert "table 'hot_spindles'" in message and "schemas/clickhouse/051_hot_spindles.sql" in message
    # nothing ran: not a sample archived
    assert ch.query("select count() from measurements").result_rows == [(0,)]


@pytest.mark.integration
def test_the_cli_prints_one_line_and_exits_2(flow_folder: Path, tmp_path: Path) -> None:
    src = tmp_path / "shift.jsonl"
    shift(src)
    plant = tmp_path / "plant.yaml"
    plant.write_text("site: plant-a\nflows:\n  hot_spindles: {threshold_c: 60}\n")
    code = ("import sys; import plantstream.flows as f; f.__path__.append(sys.argv[1]); "
            "sys.argv = ['plantstream', *sys.argv[2:]]; "
            "from plantstream.cli.main import main; main()")
    out = subprocess.run([sys.executable, "-c", code, str(flow_folder), "replay", str(src), "--flows",
                          "archive,hot_spindles", "--config", str(plant), "--clickhouse",
                          f"chdb://{tmp_path / 'ch'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
                         env={**os.environ, "COLUMNS": "400"})  # no terminal wrapping
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # the one error line
    assert lines[0].startswith("error: flow 'hot_spindles'") and "051_hot_spindles.sql" in lines[0]
    assert "Traceback" not in out.stderr


@pytest.mark.integration
def test_the_readme_flow_runs_and_a_string_value_does_not_stop_the_plant(
        flow_folder: Path, tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    # the data engineer's migration, applied as `plantstream db migrate` applies the shipped ones
    migrations = tmp_path / "migrations"
    shutil.copytree(str(chc.MIGRATIONS_DIR), migrations)
    (migrations / "051_hot_spindles.sql").write_text(readme_blocks()[1], encoding="utf-8")
    assert chc.migrate(ch, migrations) == ["051_hot_spindles"]

    src = tmp_path / "shift.jsonl"
    samples = shift(src)
    threshold = 60.0  # lowered from the default 80
    summary = replay(src, config(threshold), dsn=ch_dsn, database=ch_db,
                     flows=select("archive,status,oee,hot_spindles"), workdir=tmp_path)

    expected = sorted((m, ts, v) for m, ts, v in samples if not isinstance(v, str) and v > threshold)
    assert expected  # the file has hot spindles
    got = ch.query("select machine, toUnixTimestamp64Milli(ts), value from hot_spindles final "
                   "order by machine, ts").result_rows
    assert sorted((m, ts, v) for m, ts, v in got) == expected
    # every "n/a" is dead-lettered in the flow's name; nothing else is
    text_values = [s for s in samples if isinstance(s[2], str)]
    reasons = ch.query("select reason, source from deadletter final").result_rows
    assert len(reasons) == len(text_values) == summary.deadlettered
    assert all("flow 'hot_spindles' reads temperature_c as a number" in r
               and s.startswith("flow:hot_spindles/cnc-0") for r, s in reasons)
    # the other flows kept every sample: the archive has the "n/a" ones too, the twin is current
    n_lines = len(src.read_bytes().splitlines())
    assert ch.query("select count() from measurements final").result_rows == [(n_lines,)]
    assert ch.query("select count() from measurements final where value_str = 'n/a'").result_rows == [
        (len(text_values),)]
    assert ch.query("select count() from machine_status final").result_rows == [(2,)]

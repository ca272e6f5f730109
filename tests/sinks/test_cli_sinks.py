"""``plantstream status`` answers "what is line 2 doing now"; ``plantstream cloud settings``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from plantstream.cli.main import app
from plantstream.connectors import clickhouse as chc
from plantstream.operators.status import MachineTwin, apply, twin_row
from plantstream.schemas.measurement import Measurement

T0 = 1_763_791_200_000


def test_status_command_shows_the_latest_twin_of_a_line(ch_dsn: str, ch_db: str, ch: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    rows = []
    for machine, line, state in (("press-01", "line-1", "running"), ("cnc-01", "line-2", "fault"),
                                 ("cnc-02", "line-2", "running")):
        twin = MachineTwin(machine)
        apply(twin, Measurement(T0, machine, "machine_state", "running", site="a", line=line))
        rows.append(twin_row(twin))
        apply(twin, Measurement(T0 + 5_000, machine, "machine_state", state, site="a", line=line))
        apply(twin, Measurement(T0 + 6_000, machine, "work_order", "WO-9", site="a", line=line))
        rows.append(twin_row(twin))
    chc.insert_rows(ch, "machine_status", rows)
    monkeypatch.setenv("PLANTSTREAM__CLICKHOUSE__DATABASE", ch_db)
    result = CliRunner().invoke(app, ["status", "--line", "line-2", "--clickhouse", ch_dsn,
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    got = orjson.loads(result.stdout)
    assert [(r["machine"], r["state"], r["downtime_open"], r["work_order"]) for r in got] == [
        ("cnc-01", "fault", True, "WO-9"), ("cnc-02", "running", False, "WO-9")]
    assert got[0]["downtime_since"] == got[0]["state_since"]
    assert got[0]["state_since"].startswith("2025-11-22T06:00:05")


def test_cloud_settings_masks_the_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    cs = ("Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=send;"
          "SharedAccessKey=SECRETKEY=;EntityPath=kpis")
    monkeypatch.setenv("PLANTSTREAM_EVENTHUBS_CONNECTION_STRING", cs)
    result = CliRunner().invoke(app, ["cloud", "settings"])
    assert result.exit_code == 0, result.output
    assert "contoso.servicebus.windows.net:9093" in result.output and "kpis" in result.output
    assert "SECRETKEY" not in result.output and "never raw measurements" in result.output
    # what is sent comes from the flows' declarations (the cloud policy), not a list of its own
    sends = next(line for line in result.output.splitlines() if line.startswith("sends "))
    assert "oee_facts" in sends and "downtime_events" in sends and "measurements" not in sends.split(";")[0]

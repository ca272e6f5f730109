"""`plantstream replay` end to end: embedded Tansu broker → Bytewax → chDB."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from plantstream.flows.archive import archive
from plantstream.flows.replay import replay
from plantstream.schemas.config import PlantConfig, build_config

START = 1763791200000  # 2025-11-22T06:00:00Z
MACHINES = ("press-01", "press-02", "cnc-01", "cnc-02")


def valid_lines(n: int) -> list[bytes]:
    """n distinct Measurements; every fourth uses an RFC 3339 timestamp."""
    out = []
    for i in range(n):
        ts: Any = START + i * 1000
        if i % 4 == 0:
            ts = datetime.fromtimestamp(ts / 1000, UTC).isoformat().replace("+00:00", "Z")
        metric, value = [("temperature_c", 60.0 + (i % 7) / 10), ("good_count", i),
                         ("machine_state", "running"), ("part_number", "P-100")][i % 4]
        out.append(orjson.dumps({"ts": ts, "machine": MACHINES[i % len(MACHINES)],
                                 "metric": metric, "value": value}))
    return out


def malformed_lines() -> list[tuple[bytes, str]]:
    """100 malformed lines of every kind, with the start of the reason each must get."""
    kinds: list[tuple[bytes, str]] = [
        (b"this is not json", "not JSON"),
        (b'{"ts": 1763791200000, "machine": "press-01", "metric": "good_count"', "not JSON"),
        (b'{"machine": "press-01", "metric": "good_count", "value": 1}', "missing field 'ts'"),
        (b'{"ts": 1763791200000, "metric": "good_count", "value": 1}', "missing field 'machine'"),
        (b'{"ts": "soon", "machine": "press-01", "metric": "x", "value": 1}', "field 'ts' must be"),
        (b'{"ts": 1763791200000, "machine": "press-01", "metric": "x", "value": {"a": 1}}',
         "field 'value' must be"),
        (b'{"ts": 1763791200000, "machine": "press-01", "metric": "x", "value": 1, "quality": "ok"}',
         "field 'quality' must be"),
        (b'{"ts": 99, "machine": "press-01", "metric": "x", "value": 1}', "field 'ts' out of range"),
        (b'{"ts": 9999999999999, "machine": "press-01", "metric": "x", "value": 1}', "field 'ts' out of range"),
        (orjson.dumps({"ts": START, "machine": "press-01", "metric": "x", "value": "y" * 70_000}), "oversized"),
    ]
    return [kinds[i % len(kinds)] for i in range(100)]


def write_file(path: Path) -> list[tuple[bytes, str]]:
    bad = malformed_lines()
    good = valid_lines(10_000)
    lines: list[bytes] = []
    for i, line in enumerate(good):
        lines.append(line)
        if i % 100 == 50:
            lines.append(bad[i // 100][0])
    path.write_bytes(b"\n".join(lines) + b"\n")
    return bad


@pytest.mark.integration
def test_replay_writes_every_valid_line_and_dead_letters_every_bad_one(
    tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any
) -> None:
    src = tmp_path / "shift.jsonl"
    bad = write_file(src)
    config = PlantConfig.model_validate({"site": "plant-a", "lines": [
        {"id": "line-1", "machines": [{"id": "press-01"}, {"id": "press-02"}]}]})

    summary = replay(src, config, dsn=ch_dsn, database=ch_db, flows={"archive": archive},
                     workdir=tmp_path)

    assert summary.records_in == 10_100
    assert summary.deadlettered == 100
    assert ch.query("select count() from measurements final").result_rows == [(10_000,)]
    assert ch.query("select count() from deadletter final").result_rows == [(100,)]
    # Site and line come from the plant config when the source did not send them.
    assert ch.query("select site, line, count() from measurements final where machine = 'press-01' "
                    "group by all").result_rows == [("plant-a", "line-1", 2_500)]
    # RFC 3339 timestamps were converted at the edge, to the same instants.
    assert ch.query("select min(toUnixTimestamp64Milli(ts)), max(toUnixTimestamp64Milli(ts)) "
                    "from measurements final").result_rows == [(START, START + 9_999_000)]
    reasons = sorted(r for (r,) in ch.query("select reason from deadletter final").result_rows)
    expected = sorted(reason for _, reason in bad)
    assert len(reasons) == len(expected)
    for got, want in zip(reasons, expected, strict=True):
        assert got.startswith(want), (got, want)
    # The original bytes are kept, byte for byte.
    raws = {r for (r,) in ch.query("select raw from deadletter final").result_rows}
    assert "this is not json" in raws


@pytest.mark.integration
def test_cli_replay_then_query_in_a_fresh_process(tmp_path: Path) -> None:
    """The pinned CLI surface, as a user runs it: replay, then query with the same DSN."""
    src = tmp_path / "small.jsonl"
    src.write_bytes(b"\n".join(valid_lines(200)) + b"\nnot json\n")
    dsn = f"chdb://{tmp_path / 'ch'}"
    env = {**os.environ, "PLANTSTREAM_CLICKHOUSE_URL": dsn}
    exe = [sys.executable, "-m", "plantstream"]
    out = subprocess.run([*exe, "replay", str(src), "--flows", "archive", "--format", "json"],
                         env=env, cwd=tmp_path, capture_output=True, timeout=180, check=True)
    summary = orjson.loads(out.stdout)
    assert summary["records_in"] == 201
    assert summary["deadlettered"] == 1
    assert summary["rows"]["measurements"] == 200
    out = subprocess.run([*exe, "query", "select count() as n from measurements", "--format", "json"],
                         env=env, cwd=tmp_path, capture_output=True, timeout=120, check=True)
    assert orjson.loads(out.stdout) == [{"n": 200}]


def test_a_bad_config_stops_the_cli_with_the_field_named(tmp_path: Path) -> None:
    bad = tmp_path / "plant.yaml"
    bad.write_text("site: a\ntimezone: Nowhere/City\n")
    out = subprocess.run([sys.executable, "-m", "plantstream", "replay", str(tmp_path / "x.jsonl"),
                          "--config", str(bad)], cwd=tmp_path, capture_output=True, timeout=60)
    assert out.returncode == 2
    assert b"timezone" in out.stderr and b"IANA" in out.stderr


def test_build_config_rejects_an_unknown_flow() -> None:
    from plantstream.flows.registry import select
    from plantstream.schemas.errors import ConfigError

    build_config({}, environ={})
    with pytest.raises(ConfigError, match="unknown flow"):
        select("archive,nope")

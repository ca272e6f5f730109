"""One execution path, whatever runs it: every registered flow, fed the PLC simulator through the
plant's dataflow (:func:`plantstream.flows.main.build_dataflow`, the machine engine), writes the
same rows with one worker, with two workers, and when it is aborted mid-stream and resumed from
its Bytewax recovery snapshots.

Rows are compared as ClickHouse keeps them: per table, by the natural key of its migration
(``ORDER BY``), the latest ``version`` where the table is versioned (ReplacingMergeTree(version));
a resumed run writes again what followed its last snapshot, which the tables make harmless.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

from plantstream.connectors.clickhouse import JsonRows
from plantstream.connectors.kafka import MEASUREMENTS, RawMessage
from plantstream.flows.engine import MachineFlow
from plantstream.flows.main import build_dataflow
from plantstream.flows.registry import FlowFn, available
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.simulators.plc import PlcLine

T0 = 1_763_791_200_000
BATCH = 400
FLOWS = available()


def config() -> PlantConfig:
    """Thresholds low enough that 40 minutes of four machines raise and clear alerts and anomalies."""
    return build_config({"site": "plant-a", "anomaly": {"warmup": 20}, "alerts": {
        "machine_down": {"minutes": 2}, "scrap_rate": {"threshold": 0.01, "clear_below": 0.005},
        "oee": {"warning": 0.9, "critical": 0.5, "min_planned_minutes": 5},
        "quality": {"threshold": 0.99, "min_parts": 20}}}, {})


@cache
def messages() -> tuple[RawMessage, ...]:
    """40 minutes of four PLC machines as the Kafka messages the flow reads, plus two bad lines."""
    line = PlcLine(seed=11, machines=4, start_ms=T0, config=config(), anomaly_warmup_s=15 * 60,
                   anomaly_mean_gap_s=10 * 60)
    values = [m.to_json() for m in line.run(T0 + 40 * 60_000)]
    values[len(values) // 3:len(values) // 3] = [b"not json", b'{"ts": 1, "machine": "m1"}']
    return tuple(RawMessage(None, v, MEASUREMENTS, 0, i, T0) for i, v in enumerate(values))


@cache
def entry_messages() -> tuple[RawMessage, ...]:
    """The operator station's audit records (as many as measurements, so a run aborted half-way
    through the measurements is half-way through them too), for flows that read their own topic."""
    from plantstream.flows.operator_entries import TOPIC

    values = [orjson.dumps({"entry_id": f"e{i}", "ts": T0 + i * 1000, "operator_id": f"op-{i % 3}",
                            "role": "operator", "action": "reason", "site": "plant-a", "line": "line-1",
                            "machine": f"press-0{i % 4 + 1}", "stop_start": T0 + (i // 10) * 60_000,
                            "before": "", "after": "jam", "sent": [{"metric": "reason_code", "ts": T0 + i}]})
              for i in range(len(messages()))]
    return tuple(RawMessage(None, v, TOPIC, 0, i, T0) for i, v in enumerate(values))


@cache
def table_keys() -> dict[str, tuple[tuple[str, ...], bool]]:
    """table → (natural key columns, versioned), from the ClickHouse migrations."""
    out: dict[str, tuple[tuple[str, ...], bool]] = {}
    for sql in resources.files("plantstream.schemas").joinpath("clickhouse").iterdir():
        if not sql.name.endswith(".sql"):
            continue
        text = sql.read_text()
        for m in re.finditer(r"CREATE TABLE IF NOT EXISTS (\w+)(.*?)ENGINE = (\w+)(\(version\))?(.*?)ORDER BY "
                             r"\(?([\w, ]+)\)?", text, re.S):
            out[m[1]] = (tuple(c.strip() for c in m[6].split(",")), bool(m[4]))
    return out


def _canon(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)


def table_rows(out: list[Any]) -> dict[str, list[dict[str, Any]]]:
    """The sink's items as rows per table (archive blocks parsed as ClickHouse would)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    for _, (table, item) in out:
        if isinstance(item, JsonRows):
            rows = [orjson.loads(line) for line in item.data.splitlines() if line.strip()]
            tables.setdefault("measurements", []).extend(rows)
        else:
            tables.setdefault(table, []).append(item)
    return tables


def as_kept(out: list[Any]) -> dict[str, dict[bytes, Any]]:
    """Per table, natural key → what the table keeps: the latest version's row (versioned), or
    the distinct rows written under that key."""
    keys = table_keys()
    kept: dict[str, dict[bytes, Any]] = {}
    for table, rows in table_rows(out).items():
        assert table in keys, f"rows for {table!r}, which no migration creates"
        cols, versioned = keys[table]
        per_key: dict[bytes, Any] = kept.setdefault(table, {})
        for row in rows:
            key = _canon({c: row.get(c) for c in cols})
            if versioned:  # the latest version's content (a version orders; its number is no fact)
                version = row["version"]
                content = _canon({k: v for k, v in row.items() if k != "version"})
                held = per_key.get(key)
                if held is None or version > held[0]:
                    per_key[key] = [version, {content}]
                elif version == held[0]:
                    held[1].add(content)
            else:
                per_key.setdefault(key, set()).add(_canon(row))
    return {t: {k: (v[1] if isinstance(v, list) else v) for k, v in rows.items()} for t, rows in kept.items()}


def run(flows: Mapping[str, FlowFn], *, workers: int = 1, abort_at: int | None = None,
        recovery: Path | None = None) -> list[Any]:
    """The plant dataflow with ``flows`` over :func:`messages`; the sink's items."""
    items: list[Any] = list(messages())
    if abort_at is not None:
        items.insert(abort_at, TestingSource.ABORT())
    out: list[Any] = []
    inputs = {f.input_topic: TestingSource(list(entry_messages()), batch_size=BATCH)
              for f in flows.values() if getattr(f, "input_topic", None)}
    flow = build_dataflow(config(), TestingSource(items, batch_size=BATCH), TestingSink(out), flows=flows,
                          inputs=inputs)
    epoch = timedelta(milliseconds=1)
    if recovery is not None:
        recovery.mkdir(parents=True, exist_ok=True)
        init_db_dir(recovery, 1)
        rc = RecoveryConfig(str(recovery))
        run_main(flow, epoch_interval=epoch, recovery_config=rc)  # stops at the abort
        aborted = len(out)
        run_main(flow, epoch_interval=epoch, recovery_config=rc)  # resumes from the last snapshot
        assert 0 < aborted < len(out), "the first run must stop part-way and the second go on"
        return out
    if workers == 1:
        run_main(flow, epoch_interval=epoch)
    else:
        cluster_main(flow, [], 0, epoch_interval=epoch, worker_count_per_proc=workers)
    return out


CHOICES = {**{name: {name: fn} for name, fn in FLOWS.items()}, "all": dict(FLOWS)}

@cache
def reference(name: str) -> dict[str, dict[bytes, Any]]:
    """One worker, uninterrupted: what the tables keep."""
    kept = as_kept(run(CHOICES[name]))
    produced = {t for t, rows in kept.items() if rows and t != "deadletter"}
    assert produced, f"{name} wrote no rows: the comparison would prove nothing"
    assert len(kept["deadletter"]) == 2  # the two bad lines, once each
    if any(isinstance(getattr(f, "build", f), MachineFlow) for f in CHOICES[name].values()):
        # the four machines, none in the plant config: reported once each, not as dead letters
        assert len(kept["machine_notices"]) == 4
    return kept


def _same(got: dict[str, dict[bytes, Any]], expected: dict[str, dict[bytes, Any]], how: str) -> None:
    assert got.keys() == expected.keys()
    for table in expected:
        assert got[table] == expected[table], f"{table}: {how} differs from one uninterrupted worker"


@pytest.mark.parametrize("name", list(CHOICES))
def test_two_workers_write_the_same_rows_as_one(name: str) -> None:
    _same(as_kept(run(CHOICES[name], workers=2)), reference(name), "two workers")


@pytest.mark.parametrize("name", list(CHOICES))
def test_an_aborted_and_resumed_run_writes_the_same_rows(name: str, tmp_path: Path) -> None:
    resumed = as_kept(run(CHOICES[name], abort_at=len(messages()) // 2, recovery=tmp_path / "recovery"))
    _same(resumed, reference(name), "an aborted and resumed run")


def test_every_registered_flow_is_compared() -> None:
    assert set(FLOWS) >= {"archive", "status", "oee", "scrap", "anomaly", "alerts"}
    assert set(CHOICES) == {*FLOWS, "all"}

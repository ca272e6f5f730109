"""An operator's entry shows at once, not an allowed lateness later (docs/station.md).

The station sends an open stop's ``reason_code`` at the machine's latest event time, which is
inside the allowed lateness (60 s by default): without more, the OEE logic would keep it (and
the stop's state change) buffered until the machine's event time passed it by 60 s — on a line
that runs in real time a minute before the tablet shows the restated stop. A batch with an
operator entry applies the buffered samples at once (as the quiet-machine timer does); samples
that arrive afterwards for an earlier time restate, so the final rows are those of the same
samples in one batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from plantstream.flows.engine import EngineRun
from plantstream.operators.logic import ManualClock
from plantstream.operators.oee import oee_spec
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.schemas.measurement import Measurement

T0 = 1_763_971_200_000  # 2025-11-24T08:00:00Z
S = 1000


def plant() -> PlantConfig:
    return build_config(
        {
            "lines": [{"id": "line-1", "machines": [{"id": "press-01", "ideal_cycle_time_ms": 1000}]}],
            "losses": {
                "fault_codes": {"E7": {"reason": "hydraulic leak", "category": "mechanical"}},
                "reason_codes": {"jam": {"reason": "jam", "category": "material"}},
            },
        },
        {},
    )


def m(ts: int, metric: str, value: Any, source: str = "opcua") -> Measurement:
    return Measurement(T0 + ts, "press-01", metric, value, source=source)


def line_until_the_entry() -> list[Measurement]:
    """Running from 08:00, a stop at 08:05:00, a temperature every second up to 08:05:30."""
    out = [m(0, "machine_state", "running"), m(0, "good_count", 0)]
    out += [m(i * S, "temperature_c", 40.0) for i in range(1, 300)]
    out += [m(i * S, "good_count", i // 2) for i in range(2, 300, 2)]
    out.append(m(300 * S, "machine_state", "fault"))
    out += [m(i * S, "temperature_c", 40.0) for i in range(301, 331)]
    return out


REASON = m(330 * S, "reason_code", "jam", source="station")  # at the machine's latest event time


def line_after_the_entry() -> list[Measurement]:
    """The stop ends at 08:06:40; the line runs to 08:10."""
    out = [m(i * S, "temperature_c", 40.0) for i in range(331, 600)]
    out.append(m(400 * S, "machine_state", "running"))
    out += [m(i * S, "good_count", 150 + (i - 400) // 2) for i in range(402, 600, 2)]
    return sorted(out, key=lambda x: x.ts)


def engine() -> EngineRun:
    return EngineRun(oee_spec(plant(), now=ManualClock(datetime.fromtimestamp(T0 / 1000 + 700, UTC))))


def stops(out: list[Any]) -> list[dict[str, Any]]:
    return [row for _, table, row in out if table == "downtime_events"]


def final(outs: list[list[Any]]) -> dict[tuple[str, Any], dict[str, Any]]:
    """The latest row of every key (downtime by start, facts by window), version left out."""
    latest: dict[tuple[str, Any], dict[str, Any]] = {}
    for out in outs:
        for _, table, row in out:
            key = (table, row.get("start") if table == "downtime_events" else row.get("window_start"))
            latest[key] = {k: v for k, v in row.items() if k != "version"}
    return latest


def test_an_open_stop_s_reason_restates_it_in_the_same_batch() -> None:
    run = engine()
    assert stops(run.batch(line_until_the_entry())) == []  # the stop waits for the watermark
    rows = stops(run.batch([REASON]))
    assert rows, "the operator's reason waited for the allowed lateness"
    last = rows[-1]
    assert (last["start"], last["end"], last["is_open"]) == (T0 + 300 * S, None, 1)
    assert (last["reason"], last["category"], last["duration_s"]) == ("jam", "material", 30.0)


def test_the_final_rows_are_those_without_the_early_apply() -> None:
    late = m(310 * S, "fault_code", "E7")  # arrives after the entry, for an earlier time: restates
    one = engine()
    whole = sorted([*line_until_the_entry(), REASON, late, *line_after_the_entry()], key=lambda x: x.ts)
    expected = final([one.batch(whole), one.eof()])

    run = engine()
    outs = [run.batch(line_until_the_entry()), run.batch([REASON]), run.batch([late])]
    outs += [run.batch(line_after_the_entry()), run.eof()]
    got = final(outs)
    assert got == expected
    stop = got[("downtime_events", T0 + 300 * S)]
    assert (stop["fault_code"], stop["reason"], stop["end"]) == ("E7", "jam", T0 + 400 * S)

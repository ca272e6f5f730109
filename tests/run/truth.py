"""What a run's OEE facts must equal, from a simulator's true state intervals (shared by the
OPC UA and MQTT must-show tests of ``plantstream run``), and how those tests stop a run."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest


def expected_minutes(states: list[Any], ms: dict[str, int], machine: str, start_ms: int,
                     end_ms: int, threshold_ms: int = 120_000) -> dict[str, float]:
    """The loss buckets in minutes, as OEE facts report them: ``ms`` is the machine's true time
    per state between ``start_ms`` and ``end_ms``; a micro-stop counts as run time and as a small
    stop (docs/oee.md). An ``idle`` still open at ``end_ms`` (the run's last sample) and shorter
    than the threshold (``microstop_threshold_s``, 120 s by default) so far is a small stop too:
    with the data up to ``end_ms`` nobody can tell it will last longer (the flow restates it when
    it does)."""
    micro = sum(
        min(s.end_ms, end_ms) - max(s.start_ms, start_ms)
        for s in states
        if s.machine == machine
        and s.end_ms > start_ms
        and s.start_ms < end_ms
        and (s.microstop or (s.state == "idle" and s.end_ms > end_ms and end_ms - s.start_ms < threshold_ms))
    )
    minutes = {
        "planned_min": sum(ms.values()) - ms.get("planned_stop", 0) - ms.get("off", 0),
        "run_min": ms.get("running", 0) + micro,
        "small_stop_min": micro,
        "setup_min": ms.get("setup", 0),
        "unplanned_stop_min": ms.get("fault", 0) + ms.get("idle", 0) - micro,
    }
    return {col: value / 60_000 for col, value in minutes.items()}


def assert_oee_row_equals_truth(row: dict[str, Any], expected: dict[str, float], counts: dict[str, int],
                                machine: str) -> None:
    """Loss minutes within 0.1 %, good and reject counts exact."""
    for col, value in expected.items():
        assert row[col] == pytest.approx(value, rel=1e-3, abs=1e-6), (machine, col, row)
    assert (row["good"], row["reject"]) == (counts["good"], counts["reject"]), machine
    assert row["good"] > 0


def sigterm_and_time(run: subprocess.Popen[bytes], settle_s: float) -> float:
    """Wait ``settle_s`` (the rest of the playback; restarted flows catch up), then SIGTERM the
    ``plantstream run`` and return the seconds it took to exit (the must-show bound is 10 s)."""
    time.sleep(settle_s)
    t0 = time.monotonic()
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=30)
    return time.monotonic() - t0

"""What the station reads from ClickHouse: machine status, shift OEE, stops, reason use, entries.

One client per station, its queries serialised by a lock (a chDB client, or an HTTP client of
the ClickHouse server / of ``plantstream run``'s embedded chDB). Every time travels as epoch
milliseconds; replacing tables are read through their ``*_latest`` views or ``FINAL``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from plantstream.connectors.kpi import Filter, oee_rows
from plantstream.operators.shifts import ShiftCalendar
from plantstream.schemas.config import PlantConfig
from plantstream.station.model import Stop

DAY_MS = 86_400_000


def _ms(v: Any) -> int | None:
    return None if v is None else int(v)


class StationData:
    """The station's reads (see the module doc). ``factory`` opens a clickhouse-connect client."""

    def __init__(self, config: PlantConfig, factory: Callable[[], Any]) -> None:
        self.config = config
        self._factory = factory
        self._client: Any = None
        self._lock = threading.Lock()
        self._has_segments: bool | None = None
        self.calendar = ShiftCalendar.from_config(config)
        self.last_ok: float = 0.0
        self.last_error: str = ""

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        with self._lock:
            try:
                if self._client is None:
                    self._client = self._factory()
                out = fn(self._client)
            except Exception as exc:
                self.last_error = str(exc)[:300]
                if self._client is not None:
                    try:
                        self._client.close()
                    finally:
                        self._client = None
                raise
            self.last_ok = time.monotonic()
            return out

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        def q(client: Any) -> list[dict[str, Any]]:
            res = client.query(sql, parameters=params or {})
            cols = [str(c) for c in res.column_names]
            return [dict(zip(cols, r, strict=True)) for r in res.result_rows]

        return list(self._run(q))

    def ping(self) -> bool:
        try:
            self.rows("SELECT 1 AS one")
        except Exception:
            return False
        return True

    # -- line view ------------------------------------------------------------------------------

    def line_status(self, line: str) -> list[dict[str, Any]]:
        """``machine_status`` of the line's machines (latest row each)."""
        return self.rows(
            "SELECT machine, state, toUnixTimestamp64Milli(state_since) AS state_since, downtime_open, "
            "toUnixTimestamp64Milli(downtime_since) AS downtime_since, downtime_state, fault_code, "
            "reason_code, part_number, work_order, toUnixTimestamp64Milli(last_seen) AS last_seen "
            "FROM machine_status FINAL WHERE line = {line:String} ORDER BY machine",
            {"line": line},
        )

    def shift_window(self, ref_ms: int) -> tuple[int, int, str]:
        """``(start, end, name)`` of the shift at ``ref_ms``: the config's calendar, or the 24 h up
        to ``ref_ms`` for a plant without shifts (or between two shifts)."""
        if self.config.shifts:
            for inst in self.calendar.instances(ref_ms - DAY_MS, ref_ms + 1):
                if inst.start <= ref_ms < inst.end:
                    return inst.start, inst.end, inst.name
        return ref_ms - DAY_MS, ref_ms, "last 24 h"

    def shift_oee(self, line: str, start_ms: int, end_ms: int) -> dict[str, dict[str, Any]]:
        """OEE (and its parts) per machine of the line over the shift so far, from sums."""
        client_rows = self._run(
            lambda c: oee_rows(c, "machine", Filter(start_ms=start_ms, end_ms=end_ms, line=line))
        )
        return {str(r["machine"]): r for r in client_rows}

    # -- stops ------------------------------------------------------------------------------------

    def has_segments(self) -> bool:
        """Whether ``downtime_events`` has the split column ``segments`` (migration 057)."""
        if self._has_segments is None:
            found = self.rows(
                "SELECT count() AS n FROM system.columns WHERE database = currentDatabase() "
                "AND table = 'downtime_events' AND name = 'segments'"
            )
            self._has_segments = bool(found and found[0]["n"])
        return self._has_segments

    def _stop_sql(self, where: str) -> str:
        seg = (
            "arrayMap(s -> (toUnixTimestamp64Milli(s.1), s.2, s.3), segments) AS segs"
            if self.has_segments()
            else "[] AS segs"
        )
        return (
            "SELECT machine, toUnixTimestamp64Milli(start) AS start_ms, "
            "toUnixTimestamp64Milli(`end`) AS end_ms, duration_s, state, fault_code, reason, category, "
            f"small_stop, version, {seg} FROM downtime_events FINAL WHERE deleted = 0 AND {where}"
        )

    @staticmethod
    def _stop(r: dict[str, Any]) -> Stop:
        # The first part (from the stop's start) is the stop's reason, corrected with reason_code;
        # only the parts after a split point are corrected with reason_split (docs/oee.md).
        segs = tuple((int(p), str(reason), str(cat)) for p, reason, cat in (r["segs"] or ())
                     if int(p) != int(r["start_ms"]))
        return Stop(
            str(r["machine"]),
            int(r["start_ms"]),
            _ms(r["end_ms"]),
            float(r["duration_s"]),
            str(r["state"]),
            str(r["fault_code"]),
            str(r["reason"]),
            str(r["category"]),
            bool(r["small_stop"]),
            int(r["version"]),
            segs,
        )

    def stops(self, machine: str, since_ms: int) -> list[Stop]:
        """The machine's stops that started since ``since_ms`` or are still open, oldest first."""
        rows = self.rows(
            self._stop_sql(
                "machine = {m:String} AND (start >= fromUnixTimestamp64Milli({s:Int64}) OR `end` IS NULL)"
            )
            + " ORDER BY start",
            {"m": machine, "s": since_ms},
        )
        return [self._stop(r) for r in rows]

    def stop(self, machine: str, start_ms: int) -> Stop | None:
        """The stop ``(machine, start)``, None when there is none."""
        rows = self.rows(
            self._stop_sql("machine = {m:String} AND start = fromUnixTimestamp64Milli({s:Int64})"),
            {"m": machine, "s": start_ms},
        )
        return self._stop(rows[0]) if rows else None

    def next_stop_start(self, machine: str, start_ms: int) -> int | None:
        rows = self.rows(
            "SELECT toUnixTimestamp64Milli(min(start)) AS n FROM downtime_events FINAL "
            "WHERE deleted = 0 AND machine = {m:String} AND start > fromUnixTimestamp64Milli({s:Int64})",
            {"m": machine, "s": start_ms},
        )
        value = rows[0]["n"] if rows else None
        return int(value) if value else None

    def reason_uses(self, days: int = 30) -> dict[str, int]:
        """Stops per reason over the last ``days`` (the reason tree's "most used first")."""
        rows = self.rows(
            "SELECT reason, count() AS n FROM downtime_events FINAL WHERE deleted = 0 AND "
            "start >= now64(3) - toIntervalDay({d:UInt32}) GROUP BY reason",
            {"d": days},
        )
        return {str(r["reason"]): int(r["n"]) for r in rows}

    def entries(self, machine: str, stop_start: int) -> list[dict[str, Any]]:
        """The station entries already made on a stop, oldest first (``sent``: the Measurements, JSON)."""
        return self.rows(
            "SELECT entry_id, toUnixTimestamp64Milli(ts) AS ts, operator_id, operator_name, role, action, "
            "toUnixTimestamp64Milli(split_at) AS split_at, before, after, sent FROM operator_entries FINAL "
            "WHERE machine = {m:String} AND stop_start = fromUnixTimestamp64Milli({s:Int64}) ORDER BY ts",
            {"m": machine, "s": stop_start},
        )

    def scrap_entries(self, machine: str) -> list[dict[str, Any]]:
        """The machine's latest station scrap entries (``sent``: their Measurements, JSON)."""
        return self.rows(
            "SELECT sent FROM operator_entries FINAL WHERE machine = {m:String} AND action = 'scrap' "
            "ORDER BY ts DESC LIMIT 5",
            {"m": machine},
        )

    def last_scrap_reason(self, machine: str) -> str:
        rows = self.rows(
            "SELECT argMax(reason, ts) AS r FROM scrap_events_latest WHERE machine = {m:String}",
            {"m": machine},
        )
        return str(rows[0]["r"]) if rows and rows[0]["r"] else ""

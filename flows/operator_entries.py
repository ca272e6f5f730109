"""The operator-entries flow: the station's audit records into ClickHouse ``operator_entries``.

The operator station (:mod:`plantstream.station`) accepts an entry (a stop's reason, a split, a
correction, scrap) only once Kafka confirmed its Measurements and one audit record on
``plantstream.operator_entries`` (key = machine): who, when, which machine and stop, before and
after. This flow reads that topic (``input_topic``, not the measurements) and writes one row per
record, its columns checked and typed; a record without an ``entry_id``, an ``operator_id`` or a
``machine`` goes to the dead letter.

Unit of parallelism: the topic's partitions. Delivery: at-least-once, made harmless by the
table's key — ``entry_id`` is unique per entry, the table a ReplacingMergeTree ordered by
``(machine, ts, entry_id)``, so a replay or a resume writes the same rows again.
"""

from __future__ import annotations

from typing import Any

import bytewax.operators as op
import orjson
from bytewax.dataflow import Stream

from plantstream.flows.registry import Flow, FlowContext, Results, Row

TOPIC = "plantstream.operator_entries"
"""The topic of the station's audit records."""

ACTIONS = ("reason", "split", "correct", "scrap")

_TEXT = ("operator_name", "role", "site", "line", "before", "after", "work_order", "client")


def _ms(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def entry_row(record: Row) -> tuple[str, Row]:
    """One audit record → ``("operator_entries", row)``, or ``("deadletter", row)`` naming what is wrong.

    >>> table, row = entry_row({"entry_id": "e1", "ts": 1700000000000, "operator_id": "op-7",
    ...     "machine": "press-01", "action": "reason", "after": "waiting_material",
    ...     "stop_start": 1699999000000, "sent": [{"metric": "reason_code"}]})
    >>> table, row["action"], row["stop_start"], row["split_at"], row["sent"]
    ('operator_entries', 'reason', 1699999000000, None, '[{"metric":"reason_code"}]')
    >>> entry_row({"entry_id": "e2", "ts": 1, "machine": "m"})[1]["reason"]
    'operator entry without operator_id'
    """
    missing = [
        k
        for k in ("entry_id", "operator_id", "machine")
        if not isinstance(record.get(k), str) or not record.get(k)
    ]
    ts = _ms(record.get("ts"))
    if ts is None:
        missing.append("ts")
    action = record.get("action")
    if missing or action not in ACTIONS:
        what = f"without {missing[0]}" if missing else f"with action {action!r}"
        raw = orjson.dumps(record).decode()
        return "deadletter", {
            "ts": ts or 0,
            "source": f"flow:operator_entries/{record.get('entry_id', '')}",
            "reason": f"operator entry {what}",
            "raw": raw,
        }
    quantity = record.get("quantity")
    sent = record.get("sent", [])
    row: Row = {
        "entry_id": record["entry_id"],
        "ts": ts,
        "operator_id": record["operator_id"],
        "machine": record["machine"],
        "action": action,
        "stop_start": _ms(record.get("stop_start")),
        "split_at": _ms(record.get("split_at")),
        "quantity": float(quantity)
        if isinstance(quantity, int | float) and not isinstance(quantity, bool)
        else None,
        "sent": sent if isinstance(sent, str) else orjson.dumps(sent).decode(),
    }
    for key in _TEXT:
        value = record.get(key)
        row[key] = "" if value is None else str(value)
    return "operator_entries", row


def operator_entries(ctx: FlowContext, records: Stream[Row]) -> Results:
    """The station's audit records, one row each, into ``operator_entries``."""
    tagged = op.map("entry_rows", records, entry_row)
    return {
        "operator_entries": op.filter_map(
            "entries", tagged, lambda t: t[1] if t[0] == "operator_entries" else None
        ),
        "deadletter": op.filter_map(
            "entry_deadletters", tagged, lambda t: t[1] if t[0] == "deadletter" else None
        ),
    }


FLOW = Flow(
    name="operator_entries",
    build=operator_entries,  # type: ignore[arg-type]
    doc="The operator station's audit records (who, when, which stop, before, after) into operator_entries.",
    tables={"operator_entries": "058_operator_entries.sql"},
    input_topic=TOPIC,
)

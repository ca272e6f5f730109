-- The live digital twin of each machine: one row per machine, the latest version wins.
-- Kept current by the "status" flow (operators/status.py): state and since when, the open
-- downtime, current part / work order / operator / fault, and the last value of every numeric
-- signal. Read it with FINAL: SELECT * FROM machine_status FINAL WHERE line = 'line-2'.
-- version = event time (epoch ms) of the newest sample folded in, so a replay or a resume
-- writes the same or a newer row, never an older one over a newer one.
CREATE TABLE IF NOT EXISTS machine_status
(
    site            LowCardinality(String),
    line            LowCardinality(String),
    machine         String,
    state           LowCardinality(String) COMMENT 'running, idle, fault, setup, planned_stop, off; empty = not reported yet',
    state_since     DateTime64(3, 'UTC') COMMENT 'when the machine entered this state (event time)',
    downtime_open   Bool COMMENT 'a stop is in progress (state fault, idle or setup)',
    downtime_since  Nullable(DateTime64(3, 'UTC')) COMMENT 'start of the running stop, across fault/idle/setup changes',
    downtime_state  LowCardinality(String) COMMENT 'state that opened the stop',
    fault_code      String,
    reason_code     String,
    part_number     String,
    work_order      String,
    operator_id     String,
    signals         Map(String, Float64) COMMENT 'last value of every numeric metric (counters and condition signals)',
    signals_ts      Map(String, DateTime64(3, 'UTC')) COMMENT 'when each signal was last seen',
    last_seen       DateTime64(3, 'UTC') COMMENT 'event time of the newest sample',
    samples         UInt64 COMMENT 'samples folded into the twin so far',
    version         UInt64 COMMENT 'event time (epoch ms) of the newest sample: latest wins',
    stored_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (site, machine)
SETTINGS non_replicated_deduplication_window = 1000;

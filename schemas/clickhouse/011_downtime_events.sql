-- Downtime events: one row per stop, natural key (machine, start). An open stop has end NULL
-- and is written again when it ends, when its fault code or reason arrives, or when an
-- operator reason code restates it — always with a higher version (latest wins). A stop that
-- a late correction proved never happened is written once more with deleted = 1.
CREATE TABLE IF NOT EXISTS downtime_events
(
    machine      LowCardinality(String),
    site         LowCardinality(String),
    line         LowCardinality(String),
    start        DateTime64(3, 'UTC'),
    `end`        Nullable(DateTime64(3, 'UTC')) COMMENT 'NULL while the stop lasts',
    duration_s   Float64 COMMENT 'to the end, or to the latest event time seen while open',
    state        LowCardinality(String),
    fault_code   String,
    reason       String,
    category     LowCardinality(String),
    planned      UInt8,
    small_stop   UInt8 COMMENT '1 when shorter than the micro-stop threshold (performance loss)',
    is_open      UInt8,
    shift        LowCardinality(String),
    part_number  LowCardinality(String),
    work_order   String,
    version      UInt64,
    deleted      UInt8,
    stored_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(start)
ORDER BY (machine, start)
TTL toDateTime(stored_at) + INTERVAL 1 YEAR;

CREATE VIEW IF NOT EXISTS downtime_events_latest AS
SELECT * FROM downtime_events FINAL WHERE deleted = 0;

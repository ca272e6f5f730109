-- Scrap events: one row per reject delta of a machine, natural key (machine, ts). Quantity,
-- reason (latest scrap_reason, or 'unassigned'), category, part, work order and cost from the
-- work-order reference data (costed = 0 while the reference is unknown). A late
-- reclassification or a late reference writes the row again with a higher version.
CREATE TABLE IF NOT EXISTS scrap_events
(
    machine        LowCardinality(String),
    site           LowCardinality(String),
    line           LowCardinality(String),
    ts             DateTime64(3, 'UTC'),
    quantity       UInt32,
    reason         LowCardinality(String),
    category       LowCardinality(String),
    part_number    LowCardinality(String),
    work_order     String,
    material_cost  Float64 COMMENT 'quantity × material cost per unit',
    labor_cost     Float64 COMMENT 'quantity × labor rate × labor seconds per unit',
    cost           Float64,
    currency       LowCardinality(String),
    costed         UInt8 COMMENT '1 when the work order reference data was known',
    version        UInt64,
    stored_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(ts)
ORDER BY (machine, ts)
TTL toDateTime(stored_at) + INTERVAL 1 YEAR;

CREATE VIEW IF NOT EXISTS scrap_events_latest AS
SELECT * FROM scrap_events FINAL;

-- OEE facts: additive seconds and counts per machine, window (window_s, default 1 min), shift,
-- part number and work order. Ratios are never stored: every view computes them from sums.
-- Idempotent: ReplacingMergeTree on the natural key; a restated window is written again, all
-- its rows with one higher version, and oee_facts_latest keeps only the latest version of each
-- (machine, window_start) — so a restatement that moves time to another shift, part or work
-- order replaces the old rows instead of adding to them.
CREATE TABLE IF NOT EXISTS oee_facts
(
    machine            LowCardinality(String),
    site               LowCardinality(String),
    line               LowCardinality(String),
    window_start       DateTime64(3, 'UTC'),
    window_end         DateTime64(3, 'UTC'),
    shift              LowCardinality(String) COMMENT 'shift name; empty outside shifts',
    shift_start        DateTime64(3, 'UTC') COMMENT 'start of the shift instance; 1970 outside shifts',
    day                Date COMMENT 'production day: local date the shift started (else of the window)',
    part_number        LowCardinality(String),
    work_order         String,
    all_s              Float64 COMMENT 'calendar time the machine was accounted',
    scheduled_s        Float64 COMMENT 'in a shift and not off (or running outside a shift)',
    planned_s          Float64 COMMENT 'planned production time = run_s + unplanned_stop_s + setup_s',
    run_s              Float64 COMMENT 'run time (includes small stops)',
    unplanned_stop_s   Float64 COMMENT 'availability loss: faults, long idle',
    setup_s            Float64 COMMENT 'availability loss: setup / changeover (planned stop)',
    small_stop_s       Float64 COMMENT 'performance loss inside run_s: stops shorter than the threshold',
    excluded_s         Float64 COMMENT 'scheduled, not planned: breaks, planned_stop state',
    unscheduled_run_s  Float64 COMMENT 'running outside a shift or in a break (counted and flagged)',
    ideal_s            Float64 COMMENT 'ideal cycle time x total count',
    good               UInt64,
    reject             UInt64,
    total              UInt64,
    stops              UInt32 COMMENT 'unplanned stops that started in this window (MTBF, MTTR)',
    small_stops        UInt32,
    version            UInt64,
    stored_at          DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_start)
ORDER BY (machine, window_start, shift, part_number, work_order);

CREATE VIEW IF NOT EXISTS oee_facts_latest AS
SELECT * FROM oee_facts FINAL
WHERE (machine, window_start, version) IN
    (SELECT machine, window_start, max(version) FROM oee_facts GROUP BY machine, window_start);

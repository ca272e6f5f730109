-- What the machine engine reports once per machine (docs/oee.md, "Unconfigured machines"):
-- `unconfigured` — a machine not in the plant config's lines[].machines was seen (it is archived
-- and gets availability and quality); `unconfigured_cap` — a shard reached
-- state.max_unconfigured_machines (further unconfigured machines are archived only). These are
-- not dead letters: nothing was refused or lost, the samples are in `measurements`.
CREATE TABLE IF NOT EXISTS machine_notices
(
    ts          DateTime64(3, 'UTC') COMMENT 'event time of the machine''s first sample',
    machine     String,
    kind        LowCardinality(String) COMMENT 'unconfigured | unconfigured_cap',
    detail      String COMMENT 'what happens to the machine and the fix',
    sample      String COMMENT 'its first sample (JSON, bounded like a dead letter)',
    stored_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(stored_at)
ORDER BY (kind, machine);

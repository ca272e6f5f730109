-- Who did what at the operator station (docs/station.md): one row per accepted entry, written by
-- the operator_entries flow from the topic plantstream.operator_entries. An entry is accepted
-- only once Kafka confirmed both its Measurements and this audit record. entry_id is unique per
-- entry (a UUID the station gives it), so a replay of the topic writes the same rows again and
-- ReplacingMergeTree keeps one of each (read it FINAL, as `plantstream query` does).
CREATE TABLE IF NOT EXISTS operator_entries
(
    entry_id      String,
    ts            DateTime64(3, 'UTC') COMMENT 'when the station accepted the entry (wall clock)',
    operator_id   String,
    operator_name String,
    role          LowCardinality(String) COMMENT 'operator | supervisor',
    action        LowCardinality(String) COMMENT 'reason | split | correct | scrap',
    site          LowCardinality(String),
    line          LowCardinality(String),
    machine       String,
    stop_start    Nullable(DateTime64(3, 'UTC')) COMMENT 'the stop (machine, start) the entry is about',
    split_at      Nullable(DateTime64(3, 'UTC')) COMMENT 'the split point of a split or its correction',
    before        String COMMENT 'the reason (or scrap reason) before the entry',
    after         String COMMENT 'what the operator entered',
    quantity      Nullable(Float64) COMMENT 'rejects of a scrap entry',
    work_order    String,
    sent          String COMMENT 'the Measurements sent (JSON: metric, ts, value)',
    client        String COMMENT 'the tablet''s address',
    stored_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (machine, ts, entry_id);

-- Raw measurements: every usable and bad-quality sample, kept 90 days after it was stored.
-- Natural key (machine, metric, ts): a replayed sample replaces itself instead of doubling.
CREATE TABLE IF NOT EXISTS measurements
(
    ts          DateTime64(3, 'UTC'),
    site        LowCardinality(String),
    line        LowCardinality(String),
    machine     LowCardinality(String),
    metric      LowCardinality(String),
    value       Float64 COMMENT 'numeric value; bool as 0/1; NaN for string values',
    value_str   String COMMENT 'string values (part_number, reason_code, …); empty otherwise',
    unit        LowCardinality(String),
    source      LowCardinality(String),
    quality     Enum8('good' = 1, 'uncertain' = 2, 'bad' = 3),
    stored_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (machine, metric, ts)
TTL toDateTime(stored_at) + INTERVAL 90 DAY;

-- Messages plantstream could not use: original bytes and the reason, kept a year.
-- Natural key (source, ts): source names the topic, partition and offset of the message.
CREATE TABLE IF NOT EXISTS deadletter
(
    ts          DateTime64(3, 'UTC') COMMENT 'when the message was received',
    source      String COMMENT 'where it came from, e.g. kafka:plantstream.measurements/0@17',
    reason      String,
    raw         String COMMENT 'the original bytes',
    stored_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (source, ts)
TTL toDateTime(stored_at) + INTERVAL 1 YEAR;

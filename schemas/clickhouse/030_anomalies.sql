-- Condition anomalies: one row per episode (consecutive anomalous points of one model of one
-- machine), natural key (machine, model, start). The "anomaly" flow writes an episode when it
-- opens (is_open = 1) and again when it closes; version = end × 2 + closed, so the latest
-- state wins under FINAL and a replay or resume rewrites the same rows. Kept a year after it
-- was stored (historical replays and evaluations keep their rows).
CREATE TABLE IF NOT EXISTS anomalies
(
    ts          DateTime64(3, 'UTC') COMMENT 'episode start (event time)',
    site        LowCardinality(String),
    line        LowCardinality(String),
    machine     LowCardinality(String),
    model       LowCardinality(String) COMMENT 'model name: the signal, a configured group, or iso10816',
    detector    LowCardinality(String) COMMENT 'zscore, gaussian, hst, ilof, ocsvm, or rule',
    start       DateTime64(3, 'UTC'),
    `end`       DateTime64(3, 'UTC') COMMENT 'last anomalous point so far',
    score       Float64 COMMENT 'max score of the episode, in [0, 1]',
    threshold   Float64 COMMENT 'decision threshold at the max score, in [0, 1]',
    severity    LowCardinality(String) COMMENT 'warning or critical',
    signals     Map(String, Float64) COMMENT 'deviating features → z-score at the max (ISO: RMS mm/s)',
    hypothesis  String COMMENT 'likely cause',
    points      UInt32 COMMENT 'anomalous points in the episode',
    is_open     Bool,
    version     UInt64,
    stored_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(start)
ORDER BY (machine, model, start)
TTL toDateTime(stored_at) + INTERVAL 1 YEAR;

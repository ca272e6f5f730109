-- Rolling scrap rate per machine, line and part number: one row per scope key and hop
-- boundary window_end (window = [window_start, window_end), default 1 h, hop 1 min).
-- good/reject are the additive counts of the hop ending at window_end (sum them over any
-- period); window_good/window_reject are the rolling sums the rate and first-pass yield come
-- from. A line's row is written again with a higher version as each machine reports.
CREATE TABLE IF NOT EXISTS scrap_rate
(
    scope             LowCardinality(String) COMMENT 'machine, line or part',
    key               String,
    site              LowCardinality(String),
    line              LowCardinality(String),
    window_start      DateTime64(3, 'UTC'),
    window_end        DateTime64(3, 'UTC'),
    good              UInt64 COMMENT 'good parts in the hop ending at window_end',
    reject            UInt64 COMMENT 'rejects in the hop ending at window_end',
    window_good       UInt64,
    window_reject     UInt64,
    scrap_rate        Nullable(Float64) COMMENT 'window_reject / (window_good + window_reject)',
    first_pass_yield  Nullable(Float64) COMMENT 'window_good / (window_good + window_reject)',
    machines          UInt32 COMMENT 'machines that reported this boundary',
    version           UInt64,
    stored_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(window_end)
ORDER BY (scope, key, window_end);

CREATE VIEW IF NOT EXISTS scrap_rate_latest AS
SELECT * FROM scrap_rate FINAL;

-- Alerts: one row per alert episode, natural key alert_id (hash of machine, rule, signal and
-- raise time). Written when raised, again when its severity escalates and when it clears, each
-- time with a higher version (latest wins). event_id = alert_id:status:severity is the
-- idempotency key of every record (webhook deliveries carry it). Kept a year.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id     String,
    event_id     String,
    machine      LowCardinality(String),
    site         LowCardinality(String),
    line         LowCardinality(String),
    rule         LowCardinality(String) COMMENT 'machine_down, scrap_rate, oee, quality, vibration, silence, oil_temperature',
    signal       LowCardinality(String),
    severity     LowCardinality(String) COMMENT 'info, warning or critical',
    status       LowCardinality(String) COMMENT 'raised or cleared',
    ts           DateTime64(3, 'UTC') COMMENT 'event time of this record',
    raised_at    DateTime64(3, 'UTC'),
    cleared_at   Nullable(DateTime64(3, 'UTC')),
    value        Float64 COMMENT 'the value that triggered (or cleared) the alert',
    threshold    Float64,
    message      String,
    version      UInt64,
    stored_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(raised_at)
ORDER BY alert_id
TTL toDateTime(stored_at) + INTERVAL 1 YEAR;

CREATE VIEW IF NOT EXISTS alerts_latest AS
SELECT * FROM alerts FINAL;

-- The archive's fast path: measurements as their JSON objects from Kafka, parsed by ClickHouse.
-- A Null table keeps nothing; its materialized view writes each block into `measurements` with
-- the same columns the row path writes (numbers only: string values take the row path).
CREATE TABLE IF NOT EXISTS measurements_json
(
    ts          Int64 COMMENT 'epoch milliseconds',
    machine     String,
    metric      String,
    value       Float64 COMMENT 'a JSON number or bool (true = 1)',
    site        String,
    line        String,
    unit        String,
    source      String,
    quality     Enum8('good' = 1, 'uncertain' = 2, 'bad' = 3) DEFAULT 'good'
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS measurements_json_mv TO measurements AS
SELECT fromUnixTimestamp64Milli(ts, 'UTC') AS ts, site, line, machine, metric, value,
       '' AS value_str, unit, source, quality
FROM measurements_json;

-- The archive's path into `measurements`: each sample as a JSON object (the Kafka message as
-- it came, or re-encoded by plantstream when it filled fields or the value is text), parsed by
-- ClickHouse. A Null table keeps nothing; its materialized view writes each block into
-- `measurements`. Text values come in `_plantstream_text` (the JSON has no `value`, which then
-- defaults to NaN) — as in the row path: value_str holds the text, value is NaN.
CREATE TABLE IF NOT EXISTS measurements_json
(
    ts          Int64 COMMENT 'epoch milliseconds',
    machine     String,
    metric      String,
    value       Float64 DEFAULT nan COMMENT 'a JSON number or bool (true = 1)',
    _plantstream_text String DEFAULT '' COMMENT 'a text value (part_number, a state name, ...)',
    site        String,
    line        String,
    unit        String,
    source      String,
    quality     Enum8('good' = 1, 'uncertain' = 2, 'bad' = 3) DEFAULT 'good'
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS measurements_json_mv TO measurements AS
SELECT fromUnixTimestamp64Milli(ts, 'UTC') AS ts, site, line, machine, metric, value,
       _plantstream_text AS value_str, unit, source, quality
FROM measurements_json;

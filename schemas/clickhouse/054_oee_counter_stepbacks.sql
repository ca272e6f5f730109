-- Ignored counter step backs per OEE window (docs/oee.md, "Counters"): a decrease of a cumulative
-- counter that is neither a reset nor a wrap (4501 then 4500) is not production; the window of the
-- sample counts it here. A fact record carries the field only when it is not 0; rows written
-- before this migration, and windows without step backs, have 0.
ALTER TABLE oee_facts ADD COLUMN IF NOT EXISTS counter_stepbacks UInt32 DEFAULT 0
    COMMENT 'counter decreases ignored as step backs (neither a reset nor a wrap)' AFTER small_stops;

CREATE OR REPLACE VIEW oee_facts_latest AS
SELECT * FROM oee_facts FINAL
WHERE (machine, window_start, version) IN
    (SELECT machine, window_start, max(version) FROM oee_facts GROUP BY machine, window_start);

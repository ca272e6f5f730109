-- Operator splits of a stop (docs/oee.md, "Operator reasons, corrections and splits"): a stop
-- keeps one row (natural key (machine, start), higher version on every change) and lists its
-- parts in `segments`, each from its `from` to the next part's `from` (the last to the stop's
-- end). Empty for an unsplit stop, and for every row written before this migration; `reason`
-- and `category` stay the first part's. Durations never change with a reason.
ALTER TABLE downtime_events ADD COLUMN IF NOT EXISTS segments
    Array(Tuple(`from` DateTime64(3, 'UTC'), reason String, category String)) DEFAULT []
    COMMENT 'parts of a split stop (empty when unsplit): from, reason, category' AFTER work_order;

CREATE OR REPLACE VIEW downtime_events_latest AS
SELECT * FROM downtime_events FINAL WHERE deleted = 0;

-- Loss by reason: one row per part of every stop (an unsplit stop is one part with the stop's
-- reason): `segment` its number (1 = the first part), `segment_start` its start, `duration_s`
-- the part's seconds (to the next part's start, the last to the stop's end or, while open, to
-- the stop's duration so far), so the parts of a stop sum to its duration (`stop_duration_s`).
-- Group downtime by reason or category here, not on downtime_events_latest (whose reason and
-- category are the first part's).
CREATE OR REPLACE VIEW downtime_segments_latest AS
SELECT machine, site, line, start, `end`, state, fault_code, planned, small_stop, is_open, shift,
       part_number, work_order, version,
       part AS segment,
       parts[part].1 AS segment_start,
       parts[part].2 AS reason,
       parts[part].3 AS category,
       greatest(0, if(part < length(parts),
                      toUnixTimestamp64Milli(parts[part + 1].1),
                      toUnixTimestamp64Milli(start) + toInt64(round(stop_s * 1000)))
                   - toUnixTimestamp64Milli(parts[part].1)) / 1000 AS duration_s,
       stop_s AS stop_duration_s
FROM
(
    SELECT machine, site, line, start, `end`, state, fault_code, planned, small_stop, is_open, shift,
           part_number, work_order, version, duration_s AS stop_s,
           if(empty(segments),
              [(start, reason, toString(category))],
              arrayMap(s -> (s.1, s.2, s.3), segments)) AS parts,
           arrayJoin(arrayEnumerate(parts)) AS part
    FROM downtime_events FINAL
    WHERE deleted = 0
);

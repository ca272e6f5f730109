-- Least privilege on a server (embedded chDB has no users: `plantstream db migrate` skips
-- these statements there and logs each one). Three accounts:
--   the migrator  (clickhouse.migrator)  runs this file: DDL, users, grants;
--   the writer    (clickhouse.username)  the flows: SELECT and INSERT on the database only;
--   the reader    (clickhouse.reader, default `grafana`, see 041): SELECT under a readonly = 1
--                 profile, for Grafana, `plantstream query`/`kpi`/`status` and `helm test`.
-- The users themselves, and their passwords, are (re)set by every `plantstream db migrate`
-- after the numbered migrations, so a rotated password takes effect at the next migration
-- (docs/deploy.md, "Rotating a password").
CREATE ROLE IF NOT EXISTS plantstream_writer;
GRANT SELECT, INSERT ON {database}.* TO plantstream_writer;
-- `plantstream query` reads ReplacingMergeTree tables FINAL by default: the one setting, besides
-- Grafana's max_execution_time, that a read-only session may change.
ALTER SETTINGS PROFILE plantstream_grafana
    SETTINGS readonly = 1,
             max_execution_time = 60 MIN 1 MAX 600 CHANGEABLE_IN_READONLY,
             final = 0 CHANGEABLE_IN_READONLY,
             max_result_rows = 1000000,
             max_memory_usage = 4000000000;

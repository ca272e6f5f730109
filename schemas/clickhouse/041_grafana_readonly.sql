-- Grafana reads through a read-only user. Server only: embedded chDB has no users, roles or
-- grants, so `plantstream db migrate` skips these statements there and logs each one.
-- On a server, {database} is the migrated database and {grafana_password} comes from
-- PLANTSTREAM_GRAFANA_PASSWORD (required). readonly = 1 forbids writes and DDL; the Grafana
-- ClickHouse data source sets max_execution_time on every query, so that one setting stays
-- changeable (within bounds) in read-only mode.
CREATE SETTINGS PROFILE IF NOT EXISTS plantstream_grafana
    SETTINGS readonly = 1,
             max_execution_time = 60 MIN 1 MAX 600 CHANGEABLE_IN_READONLY,
             max_result_rows = 1000000,
             max_memory_usage = 4000000000;
CREATE ROLE IF NOT EXISTS plantstream_reader;
GRANT SELECT ON {database}.* TO plantstream_reader;
CREATE USER IF NOT EXISTS grafana IDENTIFIED WITH sha256_password BY {grafana_password}
    SETTINGS PROFILE 'plantstream_grafana'
    DEFAULT ROLE plantstream_reader;
GRANT plantstream_reader TO grafana;

-- Performance is NULL (unknown), not 0 %, when no ideal time was accounted in the group read:
-- an unconfigured machine (or a part) without an ideal cycle time — in the config or from the
-- `ideal_cycle_time_ms` metric — or a period in which no part was counted. Before, such a machine
-- showed performance 0 % and OEE 0 %. Availability and quality are unchanged; OEE and TEEP follow
-- performance (NULL with it). The functions of 050 are defined again with that one change, and the
-- rollup views over them created again (a view stores its query with the functions expanded).
CREATE OR REPLACE FUNCTION kpi_availability AS (run_s, planned_s) ->
    if(planned_s > 0, run_s / planned_s, NULL);
CREATE OR REPLACE FUNCTION kpi_performance AS (ideal_s, run_s) ->
    if(run_s > 0 AND ideal_s > 0, ideal_s / run_s, NULL);
CREATE OR REPLACE FUNCTION kpi_quality AS (good, total) ->
    if(total > 0, good / total, NULL);
CREATE OR REPLACE FUNCTION kpi_oee AS (planned_s, run_s, ideal_s, good, total) ->
    kpi_availability(run_s, planned_s) * kpi_performance(ideal_s, run_s) * kpi_quality(good, total);
CREATE OR REPLACE FUNCTION kpi_teep AS (all_s, planned_s, run_s, ideal_s, good, total) ->
    if(all_s > 0, kpi_oee(planned_s, run_s, ideal_s, good, total) * planned_s / all_s, NULL);
CREATE OR REPLACE FUNCTION kpi_mtbf AS (run_s, stops) ->
    if(stops > 0, run_s / stops, NULL);
CREATE OR REPLACE FUNCTION kpi_mttr AS (unplanned_stop_s, stops) ->
    if(stops > 0, unplanned_stop_s / stops, NULL);

CREATE OR REPLACE VIEW oee_machine_hour AS
SELECT site, line, machine, toStartOfHour(window_start) AS hour,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, machine, hour;
CREATE OR REPLACE VIEW oee_machine_shift AS
SELECT site, line, machine, day, shift, shift_start,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, machine, day, shift, shift_start;
CREATE OR REPLACE VIEW oee_line_day AS
SELECT site, line, day,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, day;
CREATE OR REPLACE VIEW oee_site_day AS
SELECT site, day,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, day;
CREATE OR REPLACE VIEW oee_machine_day AS
SELECT site, line, machine, day,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, machine, day;
CREATE OR REPLACE VIEW oee_line_hour AS
SELECT site, line, toStartOfHour(window_start) AS hour,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, hour;
CREATE OR REPLACE VIEW oee_line_shift AS
SELECT site, line, day, shift, shift_start,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, day, shift, shift_start;
CREATE OR REPLACE VIEW oee_site_hour AS
SELECT site, toStartOfHour(window_start) AS hour,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, hour;
CREATE OR REPLACE VIEW oee_site_shift AS
SELECT site, day, shift, shift_start,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       kpi_availability(run_s, planned_s) AS availability,
       kpi_performance(ideal_s, run_s) AS performance,
       kpi_quality(good, total) AS quality,
       kpi_oee(planned_s, run_s, ideal_s, good, total) AS oee,
       kpi_teep(all_s, planned_s, run_s, ideal_s, good, total) AS teep,
       kpi_mtbf(run_s, stops) AS mtbf_s,
       kpi_mttr(unplanned_stop_s, stops) AS mttr_s
FROM oee_facts_latest
GROUP BY site, day, shift, shift_start;

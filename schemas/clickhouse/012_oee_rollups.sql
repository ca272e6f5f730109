-- OEE rollups machine -> line -> site and minute -> hour -> shift -> day. Every ratio is
-- computed from sums at read time (never an average of percentages); performance above 1 is
-- reported as measured. MTBF = run time / unplanned stops, MTTR = unplanned stop time /
-- unplanned stops (seconds).
CREATE VIEW IF NOT EXISTS oee_machine_hour AS
SELECT site, line, machine, toStartOfHour(window_start) AS hour,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       if(planned_s > 0, run_s / planned_s, NULL) AS availability,
       if(run_s > 0, ideal_s / run_s, NULL) AS performance,
       if(total > 0, good / total, NULL) AS quality,
       availability * performance * quality AS oee,
       if(all_s > 0, oee * planned_s / all_s, NULL) AS teep,
       if(stops > 0, run_s / stops, NULL) AS mtbf_s,
       if(stops > 0, unplanned_stop_s / stops, NULL) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, machine, hour;

CREATE VIEW IF NOT EXISTS oee_machine_shift AS
SELECT site, line, machine, day, shift, shift_start,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       if(planned_s > 0, run_s / planned_s, NULL) AS availability,
       if(run_s > 0, ideal_s / run_s, NULL) AS performance,
       if(total > 0, good / total, NULL) AS quality,
       availability * performance * quality AS oee,
       if(all_s > 0, oee * planned_s / all_s, NULL) AS teep,
       if(stops > 0, run_s / stops, NULL) AS mtbf_s,
       if(stops > 0, unplanned_stop_s / stops, NULL) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, machine, day, shift, shift_start;

CREATE VIEW IF NOT EXISTS oee_line_day AS
SELECT site, line, day,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       if(planned_s > 0, run_s / planned_s, NULL) AS availability,
       if(run_s > 0, ideal_s / run_s, NULL) AS performance,
       if(total > 0, good / total, NULL) AS quality,
       availability * performance * quality AS oee,
       if(all_s > 0, oee * planned_s / all_s, NULL) AS teep,
       if(stops > 0, run_s / stops, NULL) AS mtbf_s,
       if(stops > 0, unplanned_stop_s / stops, NULL) AS mttr_s
FROM oee_facts_latest
GROUP BY site, line, day;

CREATE VIEW IF NOT EXISTS oee_site_day AS
SELECT site, day,
       sum(all_s) AS all_s, sum(planned_s) AS planned_s, sum(run_s) AS run_s,
       sum(unplanned_stop_s) AS unplanned_stop_s, sum(setup_s) AS setup_s,
       sum(small_stop_s) AS small_stop_s, sum(ideal_s) AS ideal_s,
       sum(good) AS good, sum(reject) AS reject, sum(total) AS total, sum(stops) AS stops,
       if(planned_s > 0, run_s / planned_s, NULL) AS availability,
       if(run_s > 0, ideal_s / run_s, NULL) AS performance,
       if(total > 0, good / total, NULL) AS quality,
       availability * performance * quality AS oee,
       if(all_s > 0, oee * planned_s / all_s, NULL) AS teep,
       if(stops > 0, run_s / stops, NULL) AS mtbf_s,
       if(stops > 0, unplanned_stop_s / stops, NULL) AS mttr_s
FROM oee_facts_latest
GROUP BY site, day;

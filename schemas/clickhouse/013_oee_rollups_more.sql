-- More OEE rollups on the same pattern as 012 (ratios from sums at read time): machine by day,
-- line and site by hour and by shift instance.
CREATE VIEW IF NOT EXISTS oee_machine_day AS
SELECT site, line, machine, day,
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
GROUP BY site, line, machine, day;

CREATE VIEW IF NOT EXISTS oee_line_hour AS
SELECT site, line, toStartOfHour(window_start) AS hour,
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
GROUP BY site, line, hour;

CREATE VIEW IF NOT EXISTS oee_line_shift AS
SELECT site, line, day, shift, shift_start,
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
GROUP BY site, line, day, shift, shift_start;

CREATE VIEW IF NOT EXISTS oee_site_hour AS
SELECT site, toStartOfHour(window_start) AS hour,
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
GROUP BY site, hour;

CREATE VIEW IF NOT EXISTS oee_site_shift AS
SELECT site, day, shift, shift_start,
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
GROUP BY site, day, shift, shift_start;

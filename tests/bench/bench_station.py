"""Benchmark of the operator station: first load of the line view and the stop list, and the
server's CPU while tablets follow the line live.

Run: ``.venv/bin/python tests/bench/bench_station.py [--clients 10] [--seconds 60] [--loads 20]
[--machines 3] [--speed 30]`` (smoke: ``--clients 2 --seconds 10 --loads 3``). Prints a table and
writes ``tests/bench/results/bench_station.json``. No timing is asserted (issue 17 asks for a
first load under 1 s and live updates under 5 % of a core with 10 tablets open).

Setup, the user's path: the simulated PLC line over OPC UA (``--machines``, 3 hours up to now
played at ``--speed``) → ``plantstream init --opcua`` → ``plantstream run --clickhouse-port 0``
with ``station: {enabled: true}`` (embedded broker and chDB, the station a supervised child
reading the run's read-only ClickHouse HTTP endpoint; default ``refresh_s`` 2 s). The figures
are taken once the line has stops (so the stop list is not empty) while it keeps running.

- ``line_first_load_ms`` / ``stops_first_load_ms``: a new signed-in client (its own
  connection) GETs ``/line/LINE`` (resp. ``/machine/M``, the machine with the most stops) and its
  stylesheet and script, as a browser's first visit does: median and max of ``--loads`` visits,
  wall time seen by the client (server time included, loopback). Visits are ``refresh_s`` + 0.5 s
  apart, so every line view finds the shared snapshot stale and reads ClickHouse (the cold
  path); ``line_html_ms`` is the HTML alone.
- ``cpu_pct_idle`` / ``cpu_pct_clients``: utime + stime of the station process (``/proc``) over
  ``--seconds`` with no tablet, then with ``--clients`` tablets following ``/line/LINE/events``
  (server-sent events, each in its own thread reading every event), as % of one core;
  ``events_per_client`` how many snapshots each tablet received (the line changes every refresh
  while it runs). ``live_clients`` is the station's own gauge during the window.
"""

# ruff: noqa: E402  (the imports below need ROOT on sys.path)
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx

from tests.station.test_station_run import PIN, LiveRun, live_run

RESULTS = ROOT / "tests" / "bench" / "results" / "bench_station.json"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds (``/proc/PID/stat`` fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def station_pid(lr: LiveRun) -> int:
    m = re.search(r"started station \(pid (\d+)", lr.log.read_text())
    assert m, "the run's log names no station pid"
    return int(m.group(1))


def signed_in(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url, follow_redirects=True, timeout=30)
    token = re.search(r'name="csrf" value="([^"]+)"', c.get("/signin").text)
    assert token
    # not following the redirect: the page it leads to (the line view) is what is measured
    r = c.post("/signin", data={"csrf": token.group(1), "operator": "op-ana", "secret": PIN["op-ana"]},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] != "/signin", (r.status_code, r.text[:300])
    return c


def first_loads(lr: LiveRun, path: str, n: int, gap_s: float) -> dict[str, Any]:
    """``n`` first visits of ``path`` (HTML, then its CSS and JS), each by a new client."""
    total, html = [], []
    for _ in range(n):
        time.sleep(gap_s)
        c = signed_in(lr.station)
        try:
            t0 = time.perf_counter()
            r = c.get(path)
            t1 = time.perf_counter()
            assert r.status_code == 200, r.text[:300]
            for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', r.text):
                assert c.get(asset).status_code == 200
            t2 = time.perf_counter()
        finally:
            c.close()
        html.append((t1 - t0) * 1000)
        total.append((t2 - t0) * 1000)
    return {"median_ms": round(statistics.median(total), 1), "max_ms": round(max(total), 1),
            "html_median_ms": round(statistics.median(html), 1), "loads": n}


def follow(url: str, line: str, until: dict[str, float], counts: list[int], i: int,
           ready: threading.Barrier) -> None:
    """One tablet following the line view's live updates until ``until["t"]`` (monotonic)."""
    c = signed_in(url)
    try:
        ready.wait(timeout=60)
        with c.stream("GET", f"/line/{line}/events", timeout=httpx.Timeout(30, read=30)) as r:
            for text in r.iter_lines():
                if text.startswith("event: machines"):
                    counts[i] += 1
                if time.monotonic() >= until["t"]:
                    break
    finally:
        c.close()


def live_gauge(url: str) -> float:
    body = httpx.get(url + "/metrics", timeout=10).text
    m = re.search(r"^plantstream_station_live_clients (\S+)", body, re.M)
    return float(m.group(1)) if m else float("nan")


def cpu_with_clients(lr: LiveRun, pid: int, line: str, clients: int, seconds: float) -> dict[str, Any]:
    counts = [0] * clients
    ready = threading.Barrier(clients + 1)
    until = {"t": time.monotonic() + 3600}  # lowered once the window is over
    threads = []

    def run(i: int) -> None:
        follow(lr.station, line, until, counts, i, ready)

    for i in range(clients):
        t = threading.Thread(target=run, args=(i,), daemon=True)
        t.start()
        threads.append(t)
    ready.wait(timeout=60)
    time.sleep(2)  # every stream open and its first snapshot sent
    gauge = live_gauge(lr.station)
    c0, t0 = cpu_seconds(pid), time.monotonic()
    start_counts = list(counts)
    time.sleep(seconds)
    c1, t1 = cpu_seconds(pid), time.monotonic()
    got = [b - a for a, b in zip(start_counts, counts, strict=True)]
    until["t"] = 0.0
    for t in threads:
        t.join(timeout=40)
    return {"cpu_pct": round(100 * (c1 - c0) / (t1 - t0), 2), "seconds": round(t1 - t0, 1),
            "events_per_client": round(statistics.mean(got), 1), "live_clients": gauge}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--loads", type=int, default=20)
    parser.add_argument("--machines", type=int, default=3)
    parser.add_argument("--speed", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, live_run(Path(tmp), speed=args.speed, machines=args.machines,
                                                      # every first load signs a new client in
                                                      station_extra="  signin_rate: 10000/minute\n") as lr:
        pid = station_pid(lr)
        deadline = time.monotonic() + 300
        while True:  # a line with stops, so the stop list shows some
            lr.alive()
            rows = lr.rows("SELECT machine, line, count() AS n FROM downtime_events_latest GROUP BY machine, line "
                           "ORDER BY n DESC LIMIT 1")
            if rows and rows[0]["n"] >= 3:
                break
            assert time.monotonic() < deadline, "the line had no stops after 300 s"
            time.sleep(2)
        machine, line, stops = rows[0]["machine"], rows[0]["line"], int(rows[0]["n"])
        gap = 2.0 + 0.5  # station.refresh_s (default) + 0.5: the cold path every time
        line_load = first_loads(lr, f"/line/{line}", args.loads, gap)
        stops_load = first_loads(lr, f"/machine/{machine}", args.loads, gap)
        c0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(args.seconds)
        idle = round(100 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0), 2)
        live = cpu_with_clients(lr, pid, line, args.clients, args.seconds)
        lr.alive()
    results = {
        "line_first_load_ms": line_load["median_ms"],
        "line_first_load_max_ms": line_load["max_ms"],
        "line_html_ms": line_load["html_median_ms"],
        "stops_first_load_ms": stops_load["median_ms"],
        "stops_first_load_max_ms": stops_load["max_ms"],
        "stops_html_ms": stops_load["html_median_ms"],
        "cpu_pct_idle": idle,
        "cpu_pct_clients": live["cpu_pct"],
        "clients": args.clients,
        "live_clients": live["live_clients"],
        "events_per_client": live["events_per_client"],
        "window_s": live["seconds"],
        "loads": args.loads,
        "machines": args.machines,
        "stops_of_the_machine": stops,
        "speed": args.speed,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    print(f"{'figure':<28}{'value':>12}")
    for key, value in results.items():
        print(f"{key:<28}{value!s:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

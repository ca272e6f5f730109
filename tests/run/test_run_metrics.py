"""``curl /metrics`` and ``/readyz`` of a running ``plantstream run`` (``--health-port``).

The simulated PLC line over OPC UA, ``plantstream init --opcua``, then ``plantstream run
--health-port P`` with its real children (embedded Tansu broker, embedded chDB, the flows, the
OPC UA connector). While the simulator plays:

- ``/readyz`` turns 200 once the flows and the connector say ready, and lists each child with
  its own endpoint;
- two scrapes of ``/metrics`` a few seconds apart: the measurements counted for the source have
  grown, each child is up with its endpoint URL listed, result records are counted;
- the flows child stops answering its own ``/readyz`` (SIGSTOP: as stuck as a flow waiting for
  an unreachable ClickHouse, from the outside): the run's ``/readyz`` turns 503 naming the flows,
  and 200 again once the child answers (SIGCONT).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from plantstream.connectors.embedded import free_port
from tests.run.test_run_opcua import EXE, _env, init_config, start_simulator, stop_simulator

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, body = get(url)
    assert code == 200, body[:500]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(body.decode())
        for s in fam.samples
    }


def series(
    m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str
) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in m.items() if n == name}


def wait_ready(
    url: str, want: int, deadline_s: float, run: subprocess.Popen[bytes], log: Path
) -> dict[str, Any]:
    deadline = time.monotonic() + deadline_s
    while True:
        code, body = get(url)
        if code == want:
            out = orjson.loads(body)
            assert isinstance(out, dict)
            return out
        assert time.monotonic() < deadline, (code, body[:2000], log.read_text()[-3000:])
        assert run.poll() is None, log.read_text()[-4000:]
        time.sleep(0.3)


def test_run_serves_metrics_that_change_and_readiness_of_its_children(tmp_path: Path) -> None:
    sim, endpoint, _ = start_simulator(tmp_path)
    try:
        init_config(tmp_path, endpoint)
        port = free_port()
        log_path = tmp_path / "run.log"
        log = log_path.open("wb")
        run = subprocess.Popen(
            [
                EXE,
                "run",
                "--config",
                "plant.yaml",
                "--duration",
                "45",
                "--no-live",
                "--log-every",
                "5",
                "--state-dir",
                "state",
                "--health-port",
                str(port),
            ],
            cwd=tmp_path,
            env=_env(),
            stdout=log,
            stderr=log,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            # live from the start, ready once every child is
            t0 = time.monotonic()
            wait_ready(base + "/healthz", 200, 60, run, log_path)
            ready = wait_ready(base + "/readyz", 200, 150, run, log_path)
            print(f"/readyz 200 after {time.monotonic() - t0:.1f}s: {ready['children']}")
            children = ready["children"]
            assert set(children) == {"flows", "source opcua"}, children
            assert all(c["running"] and c["ready"] and c["endpoint"] for c in children.values())

            src = (("source", "opcua"),)
            deadline = time.monotonic() + 30
            while not series(first := scrape(base + "/metrics"), "plantstream_run_measurements_total"):
                assert time.monotonic() < deadline, "no measurements counted"
                time.sleep(0.5)
            time.sleep(5)
            second = scrape(base + "/metrics")
            got1 = series(first, "plantstream_run_measurements_total")
            got2 = series(second, "plantstream_run_measurements_total")
            print(f"measurements counted: {got1.get(src)} then {got2.get(src)}")
            assert got2[src] > got1[src] > 0
            rate = series(second, "plantstream_run_messages_per_second")[src]
            assert rate > 0
            up = series(second, "plantstream_child_up")
            assert up == {
                (("child", "flows"), ("role", "flows")): 1.0,
                (("child", "source opcua"), ("role", "source")): 1.0,
            }
            urls = {
                dict(k)["child"]: dict(k)["url"] for k in series(second, "plantstream_child_endpoint_info")
            }
            assert set(urls) == {"flows", "source opcua"}
            for name, url in urls.items():  # each child's own /metrics answers
                code, body = get(url)
                assert code == 200 and b"plantstream_process_info" in body, (name, url)
            restarts = series(second, "plantstream_child_restarts_total")
            assert set(restarts.values()) == {0.0}
            assert ("plantstream_run_open_alerts", ()) in second

            # the flows stop answering their /readyz: the run is not ready; back again after
            flows_pid = children["flows"]["pid"]
            os.kill(flows_pid, signal.SIGSTOP)
            try:
                t1 = time.monotonic()
                down = wait_ready(base + "/readyz", 503, 20, run, log_path)
                print(
                    f"/readyz 503 {time.monotonic() - t1:.1f}s after the flows stopped: {down['not_ready']}"
                )
                assert down["not_ready"] == ["flows"]
                m = scrape(base + "/metrics")
                assert series(m, "plantstream_child_ready")[(("child", "flows"), ("role", "flows"))] == 0.0
            finally:
                os.kill(flows_pid, signal.SIGCONT)
            t2 = time.monotonic()
            back = wait_ready(base + "/readyz", 200, 60, run, log_path)
            print(f"/readyz 200 again {time.monotonic() - t2:.1f}s after the flows resumed")
            assert not back["not_ready"]
            run.wait(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
            log.close()
        assert run.returncode == 0, log_path.read_text()[-4000:]
        assert get(base + "/healthz")[0] == 0  # the endpoint went with the run
    finally:
        stop_simulator(sim, tmp_path)

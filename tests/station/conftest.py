"""The station under test: a plant config with operators, a Kafka broker, chDB, a served app.

``served_station`` runs :func:`plantstream.station.app.create_app` with uvicorn in a thread of
the test process, reading the test's chDB database (the test process owns the chDB path) and
sending to a real embedded broker. ``browser`` is headless Chromium through Playwright, the
system's binary (``/usr/lib/chromium/chromium``), never a downloaded one.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.connectors.embedded import free_port
from plantstream.flows.operator_entries import TOPIC as ENTRIES
from plantstream.schemas.config import PlantConfig, build_config
from plantstream.station.app import Station, create_app
from plantstream.station.auth import hash_secret
from plantstream.station.data import StationData
from plantstream.station.sender import EntrySender

PINS = {"op-ana": "4711", "op-ben": "2468", "sup-cleo": "9999", "op-dan": "1357"}
BADGE_ANA = "BADGE-0001"
H = 3_600_000


def chromium_path() -> str:
    """The system Chromium's real binary (``/usr/bin/chromium`` is a wrapper script)."""
    for p in ("/usr/lib/chromium/chromium", "/usr/lib/chromium-browser/chromium-browser"):
        if os.path.exists(p):
            return p
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Chromium is not installed: make system-deps (apt-get install chromium)"
    return found


def plant_dict(hashes: dict[str, str], badge_hash: str) -> dict[str, Any]:
    return {
        "site": "plant-a",
        "timezone": "UTC",
        "lines": [
            {
                "id": "line-1",
                "machines": [
                    {"id": "press-01", "ideal_cycle_time_ms": 1000},
                    {"id": "press-02", "ideal_cycle_time_ms": 1000},
                ],
            },
            {"id": "line-2", "machines": [{"id": "cnc-01", "ideal_cycle_time_ms": 2000}]},
        ],
        "losses": {
            "reason_codes": {
                "waiting_material": {"reason": "waiting_material", "category": "material"},
                "no_operator": {"reason": "no_operator", "category": "operator"},
                "die_change": {"reason": "die_change", "category": "changeover"},
                "jam": {"reason": "jam", "category": "mechanical"},
            }
        },
        "scrap": {"reasons": {"burr": "production", "crack": "production"}},
        "station": {
            "enabled": True,
            "session_ttl_s": 3600,
            "signin_rate": "20/minute",
            "entry_rate": "30/minute",
            "kafka_timeout_s": 3,
            "operators": [
                {
                    "id": "op-ana",
                    "name": "Ana",
                    "lines": ["line-1"],
                    "pin_hash": hashes["op-ana"],
                    "badge_hash": badge_hash,
                },
                {"id": "op-ben", "name": "Ben", "lines": ["line-1"], "pin_hash": hashes["op-ben"]},
                {"id": "sup-cleo", "name": "Cleo", "role": "supervisor", "pin_hash": hashes["sup-cleo"]},
                {"id": "op-dan", "name": "Dan", "lines": ["line-2"], "pin_hash": hashes["op-dan"]},
            ],
        },
    }


@pytest.fixture(scope="session")
def hashes() -> tuple[dict[str, str], str]:
    return {k: hash_secret(v) for k, v in PINS.items()}, hash_secret(BADGE_ANA)


@pytest.fixture
def plant(hashes: tuple[dict[str, str], str]) -> PlantConfig:
    return build_config(plant_dict(*hashes), {})


def dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass
class Seeded:
    now: int
    unexplained: int
    """start of a closed stop of press-01 without a reason"""
    explained: int
    """start of a closed stop of press-01 with reason jam"""
    long_stop: int
    """start of a closed 20-minute stop of press-01 without a reason (for splits)"""
    open_stop: int
    """start of press-02's open stop"""


def seed(client: Any, plant: PlantConfig) -> Seeded:
    """Status, stops and OEE facts of the two lines, as the flows would have written them."""
    now = (int(time.time() * 1000) // 60_000) * 60_000
    base = {
        "site": "plant-a",
        "planned": 0,
        "small_stop": 0,
        "shift": "",
        "part_number": "P-100",
        "work_order": "WO-7",
        "deleted": 0,
    }
    stops = [
        ("press-01", now - 3 * H, now - 3 * H + 5 * 60_000, "fault", "E7", "unassigned", "unassigned", 1),
        ("press-01", now - 2 * H, now - 2 * H + 4 * 60_000, "idle", "", "unassigned", "unassigned", 1),
        ("press-01", now - 90 * 60_000, now - 70 * 60_000, "fault", "", "unassigned", "unassigned", 1),
        ("press-01", now - H, now - H + 6 * 60_000, "fault", "", "jam", "mechanical", 2),
        ("press-02", now - 10 * 60_000, None, "fault", "E9", "unassigned", "unassigned", 3),
        ("cnc-01", now - 2 * H, now - 2 * H + 3 * 60_000, "idle", "", "unassigned", "unassigned", 1),
    ]
    rows = []
    for machine, start, end, state, code, reason, cat, version in stops:
        rows.append(
            {
                **base,
                "machine": machine,
                "line": plant.machine(machine).line,
                "start": dt(start),
                "end": dt(end) if end else None,
                "duration_s": ((end or now) - start) / 1000,
                "state": state,
                "fault_code": code,
                "reason": reason,
                "category": cat,
                "is_open": 0 if end else 1,
                "version": version,
            }
        )
    chc.insert_rows(client, "downtime_events", rows)
    status = []
    for machine, state, since in (
        ("press-01", "running", now - H + 6 * 60_000),
        ("press-02", "fault", now - 10 * 60_000),
        ("cnc-01", "running", now - H),
    ):
        status.append(
            {
                "site": "plant-a",
                "line": plant.machine(machine).line,
                "machine": machine,
                "state": state,
                "state_since": dt(since),
                "downtime_open": state == "fault",
                "downtime_since": dt(since) if state == "fault" else None,
                "downtime_state": "fault" if state == "fault" else "",
                "fault_code": "",
                "reason_code": "",
                "part_number": "P-100",
                "work_order": "WO-7",
                "operator_id": "",
                "signals": {},
                "signals_ts": {},
                "last_seen": dt(now),
                "samples": 100,
                "version": now,
            }
        )
    chc.insert_rows(client, "machine_status", status)
    facts = []
    for machine, run_min, good in (("press-01", 50, 2800), ("press-02", 40, 2000), ("cnc-01", 55, 1500)):
        w = now - H
        facts.append(
            {
                "machine": machine,
                "site": "plant-a",
                "line": plant.machine(machine).line,
                "window_start": dt(w),
                "window_end": dt(now),
                "shift": "",
                "shift_start": dt(0),
                "day": dt(w).date(),
                "part_number": "P-100",
                "work_order": "WO-7",
                "all_s": 3600.0,
                "scheduled_s": 3600.0,
                "planned_s": 3600.0,
                "run_s": run_min * 60.0,
                "unplanned_stop_s": (60 - run_min) * 60.0,
                "setup_s": 0.0,
                "small_stop_s": 0.0,
                "excluded_s": 0.0,
                "unscheduled_run_s": 0.0,
                "ideal_s": good * 1.0,
                "good": good,
                "reject": 10,
                "total": good + 10,
                "stops": 1,
                "small_stops": 0,
                "version": 1,
            }
        )
    chc.insert_rows(client, "oee_facts", facts)
    return Seeded(now, now - 2 * H, now - H, now - 90 * 60_000, now - 10 * 60_000)


@dataclass
class Served:
    url: str
    station: Station
    seeded: Seeded
    kafka_conf: dict[str, Any]
    plant: PlantConfig

    def end_offsets(self) -> dict[str, int]:
        """Records on the measurements and the entries topics (all partitions)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({**self.kafka_conf, "group.id": "station-test-offsets"})
        try:
            out = {}
            for topic in (kafka.MEASUREMENTS, ENTRIES):
                meta = c.list_topics(topic, timeout=10).topics[topic]
                out[topic] = sum(
                    c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                    for p in meta.partitions
                )
            return out
        finally:
            c.close()

    def records(self, topic: str) -> list[bytes]:
        """Every record of the topic, read by assignment (no consumer group)."""
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer({**self.kafka_conf, "group.id": "station-test-read", "enable.auto.commit": False})
        try:
            out: list[bytes] = []
            for p in c.list_topics(topic, timeout=10).topics[topic].partitions:
                high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                if high <= 0:
                    continue
                c.assign([TopicPartition(topic, p, OFFSET_BEGINNING)])
                got = 0
                deadline = time.monotonic() + 10
                while got < high and time.monotonic() < deadline:
                    for m in c.consume(100, 0.5):
                        if m.error() is None:
                            out.append(m.value())
                            got += 1
            return out
        finally:
            c.close()


def serve_app(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the station did not start"
            time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def served_station(
    plant: PlantConfig, ch: Any, ch_dsn: str, ch_db: str, kafka_conf: dict[str, Any]
) -> Iterator[Served]:
    kafka.create_topics(kafka_conf, {ENTRIES: 1})
    seeded = seed(ch, plant)
    data = StationData(plant, lambda: chc.connect(ch_dsn, database=ch_db))
    sender = EntrySender(kafka_conf, plant.station.kafka_timeout_s, probe_s=0.5).start()
    station = Station(plant, data, sender)
    server, thread, url = serve_app(create_app(station, session_secret="test-secret"))
    try:
        yield Served(url, station, seeded, kafka_conf, plant)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sender.close()
        data.close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Headless Chromium for one test module. Module scope, not session: Playwright's sync API
    keeps an event loop running in the main thread while it is open, and later tests of the
    session (doctests calling ``asyncio.run``) must not find one."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    try:
        yield pg
    finally:
        context.close()


def sign_in(page: Any, url: str, operator: str, pin: str) -> None:
    page.goto(url + "/signin")
    page.select_option("#operator", operator)
    page.fill("#secret", pin)
    page.click("#signin")
    page.wait_for_load_state()


def shots_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "docs" / "img"

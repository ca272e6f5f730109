"""The ClickHouse sink's batching, backoff, dedup tokens, metrics, TLS and server-only migrations."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from bytewax.testing import TestingSource, run_main

from plantstream.connectors import clickhouse as chc
from plantstream.connectors.kafka import RawMessage
from plantstream.flows.archive import archive
from plantstream.flows.main import build_dataflow
from plantstream.schemas.config import ClickHouseConfig, PlantConfig
from plantstream.schemas.errors import ConfigError, ConnectorError
from tests.sinks.chdb_http import ChdbHttpServer

T0 = 1_763_791_200_000


def status_row(machine: str, ts: int, temp: float) -> dict[str, Any]:
    return {"site": "plant-a", "line": "line-1", "machine": machine, "state": "running",
            "state_since": T0, "downtime_open": False, "downtime_since": None, "downtime_state": "",
            "fault_code": "", "reason_code": "", "part_number": "", "work_order": "",
            "operator_id": "", "signals": {"temperature_c": temp}, "signals_ts": {"temperature_c": ts},
            "last_seen": ts, "samples": 1, "version": ts}


def measurement_row(i: int) -> dict[str, Any]:
    return {"ts": T0 + i, "site": "s", "line": "l", "machine": "m", "metric": "x", "value": float(i),
            "value_str": "", "unit": "", "source": "", "quality": "good"}


class FakeClock:
    """Injected time: sleeping advances it instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def count(ch: Any, table: str, final: bool = True) -> int:
    return int(ch.query(f"SELECT count() FROM {table}{' FINAL' if final else ''}").result_rows[0][0])


def test_batches_by_size_by_time_and_at_each_epoch(ch_dsn: str, ch_db: str, ch: Any) -> None:
    clock = FakeClock()
    # Written in the flow's thread, so each count below is taken after the insert it expects.
    sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db), batch_rows=5,
                              flush_interval_s=2.0, clock=clock, sleep=clock.sleep, background=False)
    part = sink.build_part("out", "clickhouse-0", None)
    part.write_batch([("measurements", measurement_row(i)) for i in range(3)])
    assert count(ch, "measurements") == 0  # 3 < 5 rows and no time passed
    clock.now += 2.5
    part.write_batch([("measurements", measurement_row(3))])
    assert count(ch, "measurements") == 4  # the oldest row waited 2.5 s >= 2 s
    part.write_batch([("measurements", measurement_row(i)) for i in range(4, 9)])
    assert count(ch, "measurements") == 9  # size reached
    part.write_batch([("measurements", measurement_row(9))])
    part.snapshot()  # the end of an epoch writes what is pending
    assert count(ch, "measurements") == 10
    part.close()
    d = sink.stats.as_dict()
    assert d["rows"] == {"measurements": 10} and d["batches"] == 3 and d["retries"] == 0


def test_backoff_doubles_up_to_the_cap_while_the_server_refuses(ch_dsn: str, ch_db: str, ch: Any) -> None:
    server = ChdbHttpServer(ch_dsn).start()
    url = server.url
    server.stop()  # refuses connections
    clock = FakeClock()

    def sleep(s: float) -> None:
        clock.sleep(s)
        if len(clock.sleeps) == 7:
            server.start()  # back on the same port after the 7th wait

    try:
        cfg = ClickHouseConfig(url=url, database=ch_db, retry_initial_s=0.5, retry_max_s=4.0)
        sink = chc.ClickHouseSink(chc.config_factory(cfg), retry_initial_s=0.5, retry_max_s=4.0,
                                  clock=clock, sleep=sleep)
        part = sink.build_part("out", "clickhouse-0", None)
        part.write_batch([("machine_status", status_row("m1", T0, 40.0))])
        part.snapshot()
        part.close()
    finally:
        server.close()
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert sink.stats.retries == 7 and sink.stats.held_back_s == pytest.approx(19.5)
    assert count(ch, "machine_status") == 1


def test_the_writer_thread_overlaps_inserts_and_the_epoch_end_waits_for_them(ch_dsn: str, ch_db: str,
                                                                              ch: Any) -> None:
    entered, release = threading.Event(), threading.Event()

    class SlowClient:  # a real client whose inserts wait until the test lets them through
        def __init__(self) -> None:
            self.inner = chc.connect(ch_dsn, database=ch_db)

        def insert(self, *args: Any, **kwargs: Any) -> Any:
            entered.set()
            release.wait(10)
            return self.inner.insert(*args, **kwargs)

        def close(self) -> None:
            self.inner.close()

    sink = chc.ClickHouseSink(SlowClient, batch_rows=2)  # type: ignore[arg-type]
    part = sink.build_part("out", "clickhouse-0", None)
    part.write_batch([("measurements", measurement_row(i)) for i in range(2)])  # full: to the writer
    assert entered.wait(5)
    assert count(ch, "measurements") == 0  # being written while the flow's thread goes on
    done = threading.Event()
    epoch_end = threading.Thread(target=lambda: (part.snapshot(), done.set()))
    epoch_end.start()
    assert not done.wait(0.5)  # the end of the epoch waits for the write to land
    release.set()
    assert done.wait(10)
    epoch_end.join()
    assert count(ch, "measurements") == 2
    part.close()


def test_rows_the_server_rejects_stop_the_flow_with_the_table_named(ch_dsn: str, ch_db: str) -> None:
    clock = FakeClock()
    sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db), max_attempts=3,
                              clock=clock, sleep=clock.sleep)
    part = sink.build_part("out", "clickhouse-0", None)
    part.write_batch([("no_such_table", {"a": 1})])
    with pytest.raises(ConnectorError, match=r"no_such_table.*3 times"):
        part.snapshot()
    assert clock.sleeps == [0.5, 1.0]


def test_a_repeated_batch_is_dropped_by_its_dedup_token(ch_dsn: str, ch_db: str, ch: Any) -> None:
    rows = [("machine_status", status_row(f"m{i}", T0 + i, 40.0 + i)) for i in range(3)]
    for _ in range(2):  # the same batch twice, as a retry after a lost answer would send it
        sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db))
        part = sink.build_part("out", "clickhouse-0", None)
        part.write_batch(list(rows))
        part.close()
    # machine_status has a block deduplication window: even without FINAL there is one copy.
    assert count(ch, "machine_status", final=False) == 3
    other = [("machine_status", status_row("m0", T0 + 9, 41.0))]
    sink = chc.ClickHouseSink(lambda: chc.connect(ch_dsn, database=ch_db))
    part = sink.build_part("out", "clickhouse-0", None)
    part.write_batch(other)
    part.close()
    assert count(ch, "machine_status", final=False) == 4  # a different batch is written
    got = ch.query("SELECT signals['temperature_c'] FROM machine_status FINAL WHERE machine = 'm0'")
    assert got.result_rows == [(41.0,)]  # latest version wins


def _self_signed(tmp: Path) -> tuple[str, str]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "server.pem", tmp / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_to_an_https_server_checks_the_certificate(tmp_path: Path, ch_dsn: str, ch_db: str, ch: Any) -> None:
    cert, key = _self_signed(tmp_path)
    server = ChdbHttpServer(ch_dsn, tls=(cert, key)).start()
    try:
        assert server.url.startswith("https://")
        trusted = ClickHouseConfig(url=server.url, database=ch_db, ca_cert=cert)
        client = chc.connect_config(trusted)
        assert client.query("SELECT 40 + 2").result_rows == [(42,)]
        client.close()
        sink = chc.ClickHouseSink.from_config(trusted)
        part = sink.build_part("out", "clickhouse-0", None)
        part.write_batch([("machine_status", status_row("tls", T0, 1.0))])
        part.close()
        assert count(ch, "machine_status") == 1
        # Without our CA the self-signed certificate is refused; verify=False accepts it.
        with pytest.raises(ConnectorError):
            chc.connect_config(ClickHouseConfig(url=server.url, database=ch_db))
        loose = chc.connect_config(ClickHouseConfig(url=server.url, database=ch_db, verify=False))
        loose.close()
    finally:
        server.close()
    with pytest.raises(ConfigError, match=r"clickhouse\.ca_cert.*does not exist"):
        chc.connect_config(ClickHouseConfig(url="https://ch:8443", ca_cert=str(tmp_path / "nope.pem")))
    with pytest.raises(ConfigError, match="plain http"):
        chc.connect_config(ClickHouseConfig(url="http://ch:8123", ca_cert=cert))


def test_grafana_user_is_server_only_and_skipped_on_chdb_with_a_log_line(
        ch_dsn: str, caplog: pytest.LogCaptureFixture) -> None:
    client = chc.connect(ch_dsn, database="t_grafana_mig")
    try:
        with caplog.at_level(logging.INFO, logger="plantstream.connectors.clickhouse"):
            applied = chc.migrate(client, environ={})
        assert "041_grafana_readonly" in applied
        # expected on an embedded database, so not a warning (the demo starts without one)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("041_grafana_readonly: skipped 5 access-control statements" in r.getMessage()
                   and "CREATE USER" in r.getMessage() for r in caplog.records)
        assert chc.migrate(client) == []  # recorded as applied
    finally:
        client.command("DROP DATABASE IF EXISTS t_grafana_mig SYNC")
        client.close()
    # On a server the statements get the database and the password (quoted) filled in.
    [mig] = [m for m in chc.load_migrations() if m.name == "grafana_readonly"]
    stmts = [s for s in mig.statements if chc.is_access_control(s)]
    assert len(stmts) == len(mig.statements) == 5

    class Srv:
        database = "plant"

    filled = [chc._server_statement(s, Srv(), {"PLANTSTREAM_GRAFANA_PASSWORD": "pa'ss"})  # type: ignore[arg-type]
              for s in stmts]
    assert "GRANT SELECT ON `plant`.* TO plantstream_reader" in filled
    assert any("BY 'pa\\'ss'" in s and "SETTINGS PROFILE 'plantstream_grafana'" in s for s in filled)
    with pytest.raises(ConfigError, match="PLANTSTREAM_GRAFANA_PASSWORD"):
        chc._server_statement(stmts[3], Srv(), {})  # type: ignore[arg-type]


def test_a_write_failing_in_the_writer_thread_stops_the_flow_with_its_error(ch_dsn: str, ch_db: str) -> None:
    """The error reaches the flow at the end of the epoch and Bytewax stops with it; the sink's
    close during teardown does not raise it again (which would abort the process)."""

    class Refusing:  # a client whose every write fails as a bug in a write would
        def raw_insert(self, *args: Any, **kwargs: Any) -> None:
            raise ValueError("refused by the test")

        insert = raw_insert

        def close(self) -> None:
            pass

    raw = [RawMessage(b"m1", b'{"ts":1763791200000,"machine":"m1","metric":"x","value":1,"site":"s","line":"l"}',
                      "plantstream.measurements", 0, 0, 0)]
    flow = build_dataflow(PlantConfig(), TestingSource(raw), chc.ClickHouseSink(Refusing),  # type: ignore[arg-type]
                          flows={"archive": archive})
    with pytest.raises(Exception, match="snapshotting") as info:
        run_main(flow)
    assert "refused by the test" in repr(info.value.__cause__) or "refused by the test" in str(info.value)

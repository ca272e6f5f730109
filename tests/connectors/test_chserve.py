"""The read-only ClickHouse HTTP endpoint over this process's chDB (``connectors/chserve.py``).

Real chDB (the session's engine, a fresh migrated database per test), a real HTTP server on a
free loopback port, and real clients: clickhouse-connect over HTTP (with and without its Native
protocol revision) compared with clickhouse-connect on chDB directly, and raw HTTP requests the
way curl and Grafana's plugin send them.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from plantstream.cli import endpoints
from plantstream.connectors.chserve import (
    ChServe,
    ServeError,
    ServeLimits,
    native_for_revision,
    read_statement,
)

T0 = 1_795_327_200_000  # 2026-11-22T06:00:00Z


@pytest.fixture
def served(ch_dsn: str, ch_db: str, ch: Any) -> Iterator[ChServe]:
    ch.command(
        "INSERT INTO downtime_events (machine, site, line, start, `end`, duration_s, state, fault_code, reason, "
        "category, planned, small_stop, is_open, shift, part_number, work_order, version, deleted) VALUES "
        f"('press-01', 's', 'l1', fromUnixTimestamp64Milli({T0}), fromUnixTimestamp64Milli({T0 + 90_000}), 90, "
        "'fault', 'E42', 'jam', 'breakdown', 0, 0, 0, 'A', 'P-1', 'WO-7', 2, 0), "
        f"('press-02', 's', 'l1', fromUnixTimestamp64Milli({T0 + 5_000}), NULL, 30.5, 'idle', '', '', "
        "'unplanned', 0, 1, 1, 'A', '', '', 1, 0)"
    )
    ch.command(
        "INSERT INTO measurements (ts, site, line, machine, metric, value, value_str, unit, source, quality) "
        f"SELECT fromUnixTimestamp64Milli({T0} + number * 1000), 's', 'l1', 'press-0' || toString(number % 3), "
        "'temperature_c', number / 7, '', 'C', 'opcua', if(number % 5 = 0, 'bad', 'good') FROM numbers(500)"
    )
    srv = ChServe(ch_dsn, port=0, database=ch_db, limits=ServeLimits(max_execution_s=2.0, queue_s=0.3)).start()
    try:
        yield srv
    finally:
        srv.stop()


def http(url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         method: str | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


TYPED = (
    "SELECT machine, start, `end`, duration_s, reason, category, is_open, version, "
    "[machine, state] AS arr, [(start, reason)] AS segs, map(machine, duration_s) AS m, "
    "toNullable(fault_code) AS fc FROM downtime_events FINAL ORDER BY machine"
)


@pytest.mark.parametrize("protocol", [True, False], ids=["native-revision", "native-plain"])
def test_a_client_through_the_endpoint_reads_what_chdb_returns(served: ChServe, ch: Any,
                                                               protocol: bool) -> None:
    clickhouse_connect.common.set_setting("use_protocol_version", protocol)
    try:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=served.port, database=ch.database)
    finally:
        clickhouse_connect.common.set_setting("use_protocol_version", True)
    try:
        assert client.protocol_version == (54405 if protocol else 0)
        for sql in (TYPED, "SELECT * FROM measurements ORDER BY machine, ts",
                    "SELECT machine, groupArray(quality) AS q, max(ts) AS last FROM measurements GROUP BY machine "
                    "ORDER BY machine"):
            got, want = client.query(sql), ch.query(sql)
            assert [t.name for t in got.column_types] == [t.name for t in want.column_types]
            assert got.result_rows == want.result_rows
            assert len(got.result_rows) > 0
        types = dict(zip(got.column_names, [t.name for t in got.column_types], strict=True))
        assert types["q"] == "Array(Enum8('good' = 1, 'uncertain' = 2, 'bad' = 3))"
        row = client.query(TYPED).named_results()
        first = next(iter(row))
        assert first["machine"] == "press-01" and first["end"] is not None and first["fc"] == "E42"
        types = {c: t.name for c, t in zip(client.query(TYPED).column_names, client.query(TYPED).column_types,
                                          strict=True)}
        assert types["start"] == "DateTime64(3, 'UTC')" and types["end"] == "Nullable(DateTime64(3, 'UTC'))"
        assert types["machine"] == "LowCardinality(String)" and types["arr"] == "Array(LowCardinality(String))"
        # bound parameters and a client's settings (applied before the session turns read-only)
        ro = clickhouse_connect.get_client(host="127.0.0.1", port=served.port, database=ch.database,
                                           settings={"final": 1, "readonly": 1})
        got = ro.query("SELECT count() AS n, getSetting('final') AS f, getSetting('readonly') AS r "
                       "FROM downtime_events WHERE machine = {m:String}", parameters={"m": "press-01"})
        assert got.result_rows == [(1, True, 1)]
        ro.close()
    finally:
        client.close()


def test_writes_are_refused_and_change_nothing(served: ChServe, ch: Any) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=served.port, database=ch.database)
    before = ch.query("SELECT count() FROM downtime_events").result_rows
    refused = [
        "INSERT INTO downtime_events (machine, start) VALUES ('x', now64(3))",
        "DROP TABLE downtime_events",
        "ALTER TABLE downtime_events DELETE WHERE 1",
        "TRUNCATE TABLE downtime_events",
        "CREATE TABLE x (a UInt8) ENGINE = Memory",
        "SYSTEM STOP MERGES",
        "KILL QUERY WHERE 1",
        "SET readonly = 0",
        "OPTIMIZE TABLE downtime_events FINAL",
        "SELECT 1 INTO OUTFILE '/tmp/plantstream-chserve-outfile'",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
        "/* a comment */ (SELECT 1); DROP TABLE downtime_events",
        "SELECT ';'; KILL QUERY WHERE 1",
    ]
    codes = {}
    for sql in refused:
        with pytest.raises(DatabaseError) as info:
            client.command(sql)
        codes[sql] = info.value.code
    assert all(code in (164, 62) for code in codes.values()), codes
    assert codes["SELECT * FROM file('/etc/hostname', 'LineAsString')"] == 164  # the engine's own readonly
    assert codes["/* a comment */ (SELECT 1); DROP TABLE downtime_events"] == 62
    assert not os.path.exists("/tmp/plantstream-chserve-outfile")
    status, headers, body = http(f"{served.url}/?readonly=0", b"SELECT 1")
    assert status == 403 and headers["X-ClickHouse-Exception-Code"] == "164"
    status, headers, body = http(f"{served.url}/", b"DROP TABLE downtime_events")
    assert status == 403 and b"(READONLY)" in body and body.startswith(b"Code: 164. DB::Exception:")
    assert ch.query("SELECT count() FROM downtime_events").result_rows == before
    assert ch.command(f"EXISTS TABLE {ch.database}.downtime_events") == 1
    assert served.refused >= 2
    client.close()


def test_bad_sql_limits_and_overload_answer_like_clickhouse(served: ChServe, ch: Any) -> None:
    url = f"{served.url}/?database={ch.database}"
    t0 = time.monotonic()
    status, headers, body = http(url, b"SELECT FROM WHERE")
    assert status == 400 and headers["X-ClickHouse-Exception-Code"] == "62" and b"(SYNTAX_ERROR)" in body
    status, headers, body = http(url, b"SELECT * FROM no_such_table")
    assert status == 404 and headers["X-ClickHouse-Exception-Code"] == "60"
    status, headers, body = http(url, b"SELEC 1")
    assert status == 400 and b"unknown statement" in body
    assert time.monotonic() - t0 < 5
    t0 = time.monotonic()
    status, headers, body = http(url + "&max_block_size=1", b"SELECT sleep(1), sleep(1) FROM numbers(3)")
    took = time.monotonic() - t0
    assert status in (408, 500) and headers["X-ClickHouse-Exception-Code"] in ("159", "160"), body
    assert took < 4.5, took  # max_execution_s = 2
    status, headers, body = http(url + "&max_result_bytes=1000", b"SELECT * FROM numbers(100000)")
    assert headers["X-ClickHouse-Exception-Code"] == "396", body
    # one query slot busy beyond queue_s: the next is refused with 503, not queued forever
    slow = ChServe(f"chdb://{served.path}", port=0, database=ch.database,
                   limits=ServeLimits(max_concurrent=1, queue_s=0.3, max_execution_s=3.0)).start()
    try:
        threading.Thread(target=http, args=(f"{slow.url}/", b"SELECT sleep(1.5)"), daemon=True).start()
        time.sleep(0.4)
        status, headers, body = http(f"{slow.url}/", b"SELECT 1")
        assert status == 503 and headers["X-ClickHouse-Exception-Code"] == "202", body
    finally:
        slow.stop()


def test_the_http_interface_as_curl_and_grafana_use_it(served: ChServe, ch: Any) -> None:
    base = served.url
    assert http(f"{base}/ping")[2] == b"Ok."[:3] + b"\n"
    status, headers, body = http(f"{base}/?query=SELECT%20count()%20FROM%20{ch.database}.downtime_events")
    assert (status, body) == (200, b"2\n") and headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["Content-Type"].startswith("text/tab-separated-values")
    assert int(json.loads(headers["X-ClickHouse-Summary"])["read_rows"]) >= 1
    assert headers["X-ClickHouse-Timezone"] and headers["X-ClickHouse-Query-Id"]
    # the query parameter + the body, bound parameters, default_format, the database header
    status, headers, body = http(f"{base}/?default_format=JSONEachRow&param_m=press-02&query=SELECT",
                                 b" machine, is_open FROM downtime_events WHERE machine = {m:String}",
                                 {"X-ClickHouse-Database": ch.database})
    assert status == 200 and json.loads(body) == {"machine": "press-02", "is_open": 1}
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    # the query's own FORMAT wins; gzip request body; gzip response when asked (Grafana: gzip)
    status, headers, body = http(f"{base}/?enable_http_compression=1&database={ch.database}",
                                 gzip.compress(b"SELECT machine FROM downtime_events ORDER BY machine FORMAT JSON"),
                                 {"Content-Encoding": "gzip", "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip" and headers["X-ClickHouse-Format"] == "JSON"
    assert [r["machine"] for r in json.loads(gzip.decompress(body))["data"]] == ["press-01", "press-02"]
    # multipart form fields (clickhouse-connect's form encoding of large bound parameters)
    boundary = "psb"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"query\"\r\n\r\n"
            f"SELECT {{x:UInt32}} * 2\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"param_x\"\r\n\r\n"
            f"21\r\n--{boundary}--\r\n").encode()
    status, headers, body = http(f"{base}/", form, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert (status, body) == (200, b"42\n")
    # clickhouse-go (Grafana's plugin) asks Native at its protocol revision: block info and the
    # per-column serialization flag, then the same column data
    rev0 = http(f"{base}/?default_format=Native", b"SELECT 7 AS n, 'x' AS s")[2]
    rev = http(f"{base}/?default_format=Native&client_protocol_version=54460", b"SELECT 7 AS n, 'x' AS s")[2]
    assert rev == native_for_revision(rev0, 54460)
    assert rev[:8] == b"\x01\x00\x02\xff\xff\xff\xff\x00" and rev[8:10] == b"\x02\x01"
    assert rev[10:20] == b"\x01n\x05UInt8\x00\x07" and rev[20:] == b"\x01s\x06String\x00\x01x"
    assert http(f"{base}/nowhere")[0] == 404


def test_statements_are_read_with_comments_literals_and_format() -> None:
    st = read_statement("-- hi\n# there\n  WITH x AS (SELECT ';' AS s) SELECT `;`, \"FORMAT\" FROM x FORMAT CSV;")
    assert (st.keyword, st.format) == ("WITH", "CSV")
    assert read_statement("SELECT format FROM t").format is None
    assert read_statement("SELECT 1 FORMAT JSONEachRow SETTINGS max_threads = 1").format == "JSONEachRow"
    assert read_statement("SELECT $$a;b$$ /* ; /* nested ; */ */").keyword == "SELECT"
    for sql, code in (("SHOW TABLES", None), ("DESC t", None), ("EXISTS t", None), ("EXPLAIN SELECT 1", None),
                      ("INSERT INTO t VALUES (1)", 164), ("", 62), ("SELECT 1; SELECT 2", 62)):
        if code is None:
            read_statement(sql)
        else:
            with pytest.raises(ServeError) as info:
                read_statement(sql)
            assert info.value.code == code


def test_readers_in_a_folder_where_a_run_has_stopped_read_that_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PLANTSTREAM_CLICKHOUSE_URL", raising=False)
    assert endpoints.reader_dsn(None, None) is None  # nothing here: the embedded default
    (tmp_path / ".plantstream" / "run" / "clickhouse").mkdir(parents=True)
    notes: list[str] = []
    run_chdb = f"chdb://{(tmp_path / '.plantstream' / 'run' / 'clickhouse').resolve()}"
    assert endpoints.reader_dsn(None, None, note=notes.append) == run_chdb
    assert notes and "the stopped `plantstream run` in .plantstream/run" in notes[0]
    assert endpoints.reader_dsn("chdb://elsewhere/ch", None) == "chdb://elsewhere/ch"
    (tmp_path / ".plantstream" / "clickhouse").mkdir()  # the demo's database is there too: it stays the default
    assert endpoints.reader_dsn(None, None) is None


def test_readers_find_a_live_run_and_never_open_its_chdb(tmp_path: Path) -> None:
    state = tmp_path / "state"
    (state / "clickhouse").mkdir(parents=True)
    chdb_dsn = f"chdb://{state / 'clickhouse'}"
    # no run: --state-dir reads the stopped run's chDB; an explicit chDB DSN is kept
    assert endpoints.reader_dsn(None, state) == f"chdb://{(state / 'clickhouse').resolve()}"
    assert endpoints.reader_dsn(chdb_dsn, None) == chdb_dsn
    # a live run (this process holds the lock and wrote the endpoints)
    (state / "run.lock").write_text(f"{os.getpid()}\n")
    endpoints.write_endpoints(state, kafka_bootstrap="127.0.0.1:9", kafka_embedded=True,
                              clickhouse_url="http://127.0.0.1:18123", clickhouse_embedded=True,
                              chdb_path=state / "clickhouse", health=None)
    notes: list[str] = []
    assert endpoints.reader_dsn(None, state) == "http://127.0.0.1:18123"
    assert endpoints.reader_dsn(chdb_dsn, None, note=notes.append) == "http://127.0.0.1:18123"
    assert notes and "reading it through http://127.0.0.1:18123" in notes[0]
    assert endpoints.reader_dsn("http://other:8123", state) == "http://other:8123"
    # a lock of a dead process: not live
    (state / "run.lock").write_text("999999999\n")
    assert endpoints.live_endpoints(state) is None
    assert endpoints.reader_dsn(chdb_dsn, None) == chdb_dsn
    (state / "run.lock").write_text(f"{os.getpid()}\n")
    endpoints.remove_endpoints(state)
    assert not (state / "endpoints.json").exists()
    assert endpoints.public_url("https://u:p@ch:8443/db") == "https://ch:8443/db"

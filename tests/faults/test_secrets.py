"""Secrets and privilege under abuse (issue 14, item 7): each case of docs/reliability.md.

Real services where one is involved: the CLI in its own process against chDB for the read-only
``query``; a real local HTTP server that answers 302 for the webhook; the OPC UA cases are in
``tests/opcua/test_security_and_bad_data.py`` (asyncua server with its own certificates).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from plantstream.connectors import clickhouse as ch
from plantstream.connectors.eventhubs import target_from_config
from plantstream.connectors.webhook import WebhookSink
from plantstream.schemas.config import PlantConfig, build_config, cleartext_credentials, load_config_text
from plantstream.schemas.redact import mask_text, url_destination

ROOT = Path(__file__).resolve().parents[2]
EXE = [sys.executable, "-m", "plantstream"]


# -- `plantstream query` is read-only unless --write ------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> str:
    dsn = f"chdb://{tmp_path_factory.mktemp('ro') / 'ch'}"
    out = subprocess.run([*EXE, "db", "migrate", "--clickhouse", dsn], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return dsn


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EXE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("sql", [
    "DROP TABLE oee_facts",
    "INSERT INTO oee_facts (machine) VALUES ('x')",
    "ALTER TABLE oee_facts DELETE WHERE 1",
    "CREATE TABLE evil (x UInt8) ENGINE = Memory",
    "SELECT count() FROM oee_facts SETTINGS readonly = 0",  # lowering readonly is refused too
])
def test_query_refuses_writes_with_one_line_and_exit_2(migrated: str, sql: str) -> None:
    out = _cli("query", "--clickhouse", migrated, sql)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "read-only" in lines[0] and "--write" in lines[0], out.stderr
    # the table is still there, and reads still work
    ok = _cli("query", "--clickhouse", migrated, "--format", "json", "SELECT count() AS n FROM oee_facts")
    assert ok.returncode == 0, ok.stderr
    assert '"n": 0' in ok.stdout


def test_query_write_is_explicit(migrated: str) -> None:
    out = _cli("query", "--write", "--clickhouse", migrated, "CREATE TABLE IF NOT EXISTS scratch (x UInt8) ENGINE = Memory")
    assert out.returncode == 0, out.stderr
    seen = _cli("query", "--clickhouse", migrated, "--format", "json",
                "SELECT count() AS n FROM system.tables WHERE name = 'scratch'")
    assert '"n": 1' in seen.stdout


def test_a_read_only_client_leaves_other_clients_of_the_process_writable(tmp_path: Path) -> None:
    dsn = f"chdb://{tmp_path / 'ch'}"
    with ch.client_session(PlantConfig().clickhouse, dsn, account="writer") as w:
        w.command("CREATE TABLE t (x UInt8) ENGINE = MergeTree ORDER BY x")
        with ch.client_session(PlantConfig().clickhouse, dsn, settings=ch.readonly_settings(final=True)) as r:
            with pytest.raises(Exception, match="readonly"):
                r.command("INSERT INTO t VALUES (1)")
            assert r.query("SELECT count() FROM t").result_rows == [(0,)]
        w.command("INSERT INTO t VALUES (1)")
        assert w.query("SELECT count() FROM t").result_rows == [(1,)]


# -- environment overrides of secrets are text ----------------------------------------------------


@pytest.mark.parametrize("raw", ["s3cret #2024", "null", "yes", "0123", "[a, b]", "{x: 1}", "~", "'quoted'"])
def test_secret_environment_overrides_are_taken_as_strings(raw: str) -> None:
    env = {"PLANTSTREAM__CLICKHOUSE__PASSWORD": raw, "PLANTSTREAM__MQTT__PASSWORD": raw,
           "PLANTSTREAM__KAFKA__SASL_PASSWORD": raw, "PLANTSTREAM__ALERTS__WEBHOOK__TOKEN": raw,
           "PLANTSTREAM__OPCUA__SECURITY__PRIVATE_KEY_PASSWORD": raw,
           "PLANTSTREAM__CLICKHOUSE__READER__USERNAME": "grafana",
           "PLANTSTREAM__CLICKHOUSE__READER__PASSWORD": raw,
           "PLANTSTREAM__ALERTS__WEBHOOK__HEADERS__X-API-KEY": raw,
           "PLANTSTREAM__KAFKA__EXTRA__SASL.PASSWORD": raw}
    cfg = build_config({}, env)
    secrets = [cfg.clickhouse.password, cfg.mqtt.password, cfg.kafka.sasl_password, cfg.alerts.webhook.token,
               cfg.opcua.security.private_key_password, cfg.clickhouse.reader.password if cfg.clickhouse.reader else None,
               cfg.alerts.webhook.headers["x-api-key"]]
    assert all(isinstance(s, SecretStr) and s.get_secret_value() == raw for s in secrets), secrets
    assert cfg.kafka.client_config()["sasl.password"] == raw


def test_non_secret_overrides_are_still_yaml() -> None:
    cfg = build_config({}, {"PLANTSTREAM__MICROSTOP_THRESHOLD_S": "90", "PLANTSTREAM__KAFKA__PARTITIONS": "8"})
    assert cfg.microstop_threshold_s == 90 and cfg.kafka.partitions == 8


# -- secrets are masked wherever printed ----------------------------------------------------------


CS = ("Endpoint=sb://plant-hub.servicebus.windows.net/;SharedAccessKeyName=send;"
      "SharedAccessKey=Zm9vYmFyYmF6cXV4=;EntityPath=plantstream-kpis")


def test_cloud_settings_masks_secrets_by_name_and_by_origin(tmp_path: Path) -> None:
    from plantstream.cli.main import build_app

    cfg = tmp_path / "plant.yaml"
    cfg.write_text(
        "eventhubs:\n"
        "  bootstrap_servers: cloud-kafka:9093\n"
        "  topic: kpis\n"
        "  extra:\n"
        "    security.protocol: SASL_SSL\n"
        "    sasl.mechanism: OAUTHBEARER\n"
        "    sasl.oauthbearer.client.id: plant-a\n"
        "    sasl.oauthbearer.client.secret: OAUTH-SECRET-123\n"
        "    ssl.key.pem: '-----BEGIN PRIVATE KEY-----KEYBYTES'\n"
        "    ssl.key.password: KEYPASS-456\n"
        "    sasl.oauthbearer.token.endpoint.url: https://login.example/tok?code=SIGNED-789\n")
    runner = CliRunner()
    out = runner.invoke(build_app(), ["cloud", "settings", "--config", str(cfg)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    for secret in ("OAUTH-SECRET-123", "KEYBYTES", "KEYPASS-456", "SIGNED-789"):
        assert secret not in out.output, secret
    assert "plant-a" in out.output and "cloud-kafka:9093" in out.output
    assert out.output.count("***") >= 4
    # and through the connection string (secret by origin: the whole sasl.password)
    target = target_from_config(load_config_text("eventhubs: {}", {}).eventhubs,
                                {"PLANTSTREAM_EVENTHUBS_CONNECTION_STRING": CS})
    assert target is not None
    assert "Zm9vYmFyYmF6cXV4" not in repr(target) and "Zm9vYmFyYmF6cXV4" not in str(target.masked())


def test_urls_with_credentials_or_signatures_are_masked() -> None:
    url = "https://prod-01.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?api-version=1&sig=AbC123"
    assert "AbC123" not in mask_text(f"failed: {url}") and "sig=***" in mask_text(url)
    assert url_destination(url) == "https://prod-01.westeurope.logic.azure.com/workflows/1/triggers/manual/paths/invoke?…"
    assert mask_text("cannot open ClickHouse at http://flows:hunter2@ch:8123") == \
        "cannot open ClickHouse at http://flows:***@ch:8123"
    cfg = build_config({"alerts": {"webhook": {"url": url, "headers": {"Authorization": "Bearer t0k"}}}}, {})
    dumped = repr(cfg) + str(cfg.model_dump())
    assert "AbC123" not in dumped and "t0k" not in dumped


# -- webhooks never follow redirects ---------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]]
    location: str = ""

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        if self.location and self.path.startswith("/hook"):
            self.send_response(302)
            self.send_header("Location", self.location)
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()

    do_GET = do_POST = _handle

    def log_message(self, *args: Any) -> None:
        pass


def _server(location: str = "") -> tuple[ThreadingHTTPServer, list[tuple[str, str, str | None]]]:
    seen: list[tuple[str, str, str | None]] = []
    handler = type("H", (_Recorder,), {"seen": seen, "location": location})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, seen


@pytest.fixture
def redirecting() -> Iterator[tuple[str, list[Any], list[Any]]]:
    elsewhere, elsewhere_seen = _server()
    hook, hook_seen = _server(location=f"http://127.0.0.1:{elsewhere.server_address[1]}/collect?token=stolen")
    try:
        yield f"http://127.0.0.1:{hook.server_address[1]}/hook?sig=S1GN4TURE", hook_seen, elsewhere_seen
    finally:
        hook.shutdown()
        elsewhere.shutdown()


def test_webhook_302_is_a_failure_and_authorization_never_follows(
        redirecting: tuple[str, list[Any], list[Any]], caplog: pytest.LogCaptureFixture) -> None:
    url, hook_seen, elsewhere_seen = redirecting
    sink = WebhookSink(url, token="T0KEN", max_attempts=3, sleep=lambda s: None)
    with caplog.at_level(logging.DEBUG, logger="plantstream.connectors.webhook"):
        delivered = sink.post({"event_id": "a1:raised:critical", "machine": "press-01"})
    assert delivered is False
    assert sink.stats.sent == 0 and sink.stats.redirected == 1 and sink.stats.rejected == 1
    assert [(m, a) for m, _, a in hook_seen] == [("POST", "Bearer T0KEN")]
    assert elsewhere_seen == []  # nothing went to the Location, with or without Authorization
    text = caplog.text
    assert "302" in text and "NOT delivered" in text
    assert "S1GN4TURE" not in text and "stolen" not in text and "T0KEN" not in text
    assert f"127.0.0.1:{url.split(':')[2].split('/')[0]}/hook" in text
    assert "S1GN4TURE" not in repr(sink)


def test_webhook_failure_messages_show_host_and_path_only(caplog: pytest.LogCaptureFixture) -> None:
    from plantstream.schemas.errors import ConnectorError

    sink = WebhookSink("http://127.0.0.1:9/hook?sig=S1GN4TURE", max_attempts=2, sleep=lambda s: None,
                       timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="plantstream.connectors.webhook"), \
            pytest.raises(ConnectorError) as exc:
        sink.post({"event_id": "x"})
    assert "S1GN4TURE" not in str(exc.value) and "S1GN4TURE" not in caplog.text
    assert "http://127.0.0.1:9/hook?…" in str(exc.value)


def test_webhook_config_takes_url_and_headers_as_secrets() -> None:
    cfg = build_config({"alerts": {"webhook": {"url": "https://h/x?sig=1", "headers": {"X-Key": "k"}}}}, {})
    hook = cfg.alerts.webhook
    assert isinstance(hook.url, SecretStr) and isinstance(hook.headers["X-Key"], SecretStr)
    sink = WebhookSink.from_config(hook)
    assert sink.destination == "https://h/x?…"


# -- ClickHouse accounts and credentials in clear ----------------------------------------------------


def test_migration_creates_the_accounts_and_resets_their_passwords() -> None:
    cfg = build_config({"clickhouse": {"username": "flows", "password": "w1",
                                       "migrator": {"username": "admin", "password": "a"},
                                       "reader": {"username": "grafana", "password": "r1"}}}, {}).clickhouse
    first = ch.user_statements(cfg, {})
    rotated = ch.user_statements(cfg.model_copy(update={"password": SecretStr("w2")}), {})
    assert "ALTER USER `flows` IDENTIFIED WITH sha256_password BY 'w1' DEFAULT ROLE plantstream_writer" in first
    assert "ALTER USER `flows` IDENTIFIED WITH sha256_password BY 'w2' DEFAULT ROLE plantstream_writer" in rotated
    assert "GRANT plantstream_reader TO `grafana`" in first
    assert not any("admin" in s for s in first)  # the migrator is never managed by itself
    assert ch.account_credentials(cfg, "reader") == ("grafana", "r1")
    assert ch.account_credentials(cfg, "migrator") == ("admin", "a")
    assert ch.account_credentials(cfg, "writer") == ("flows", "w1")


def test_migrating_embedded_chdb_skips_users(tmp_path: Path) -> None:
    cfg = build_config({"clickhouse": {"migrator": {"username": "admin"}, "username": "flows",
                                       "password": "w"}}, {}).clickhouse
    client = ch.connect(f"chdb://{tmp_path / 'ch'}")
    try:
        applied = ch.migrate(client, users=cfg, environ={})
    finally:
        client.close()
    assert "053_least_privilege_users" in applied


def test_a_warning_for_each_transport_that_sends_credentials_in_clear() -> None:
    cfg = build_config({
        "mqtt": {"username": "u", "password": "p"},
        "opcua": {"username": "operator", "password": "p"},
        "clickhouse": {"url": "http://ch:8123", "password": "p"},
        "kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "sasl_username": "u",
                  "sasl_password": "p"}}, {})
    warnings = cleartext_credentials(cfg)
    assert [w.split(":")[0] for w in warnings] == ["MQTT", "OPC UA", "ClickHouse", "Kafka"]
    safe = build_config({
        "mqtt": {"username": "u", "password": "p", "tls": {"ca_certs": "ca.pem"}},
        "opcua": {"username": "operator", "password": "p",
                  "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": "c",
                               "private_key": "k", "trust": ["t"]}},
        "clickhouse": {"url": "https://ch:8443", "password": "p"},
        "kafka": {"security_protocol": "SASL_SSL"}}, {})
    assert cleartext_credentials(safe) == []
    assert all("p" not in w.split() for w in warnings)


@pytest.mark.integration
def test_the_mqtt_connector_warns_at_start_when_its_password_travels_in_clear(
        mqtt_broker: Any, kafka_conf: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from plantstream.connectors.mqtt import MqttConnector
    from plantstream.simulators.bakery import bakery_config

    cfg = bakery_config(2, mqtt={"host": mqtt_broker.host, "port": mqtt_broker.port, "protocol": "3.1.1",
                                 "username": "line-1", "password": "s3cret #2024"},
                        producer={"spool_dir": str(tmp_path / "spool")})
    with caplog.at_level(logging.WARNING, logger="plantstream.connectors.mqtt"), MqttConnector(cfg, kafka_conf):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("MQTT") and "mqtt.tls" in w for w in warnings), warnings
    assert not any("s3cret" in w for w in warnings)

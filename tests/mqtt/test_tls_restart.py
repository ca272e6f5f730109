"""MQTT over TLS with credentials, refused logins, and a connector killed mid-run (Mosquitto).

- TLS with a CA and server certificate generated here (``cryptography``) plus a password file:
  records flow; a wrong password or an unknown CA is a clear ConnectorError within seconds.
- ``kill -9`` of a running ``plantstream connect mqtt`` process while Kafka is frozen, then a
  new one: the persistent session redelivers every message that was not acknowledged, so
  nothing is lost; what arrives twice is an identical record.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plantstream.connectors import kafka
from plantstream.connectors.embedded import AmqttBroker, TansuBroker, free_port
from plantstream.connectors.mqtt import MqttConnector
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConnectorError
from plantstream.schemas.measurement import Measurement, decode
from plantstream.simulators.bakery import BakerySim, bakery_config, publish
from tests.mqtt.conftest import Mosquitto, wait_until
from tests.mqtt.test_pipeline import START, check_against_truth, expected_records, measurements

pytestmark = pytest.mark.integration


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(directory: Path, cn: str) -> tuple[Path, Any, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    path = directory / f"{cn}.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, cert, key


def make_server_cert(directory: Path, ca_cert: Any, ca_key: Any) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    crt, keyf = directory / "server.crt", directory / "server.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyf.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    keyf.chmod(0o644)  # mosquitto may drop privileges before reading it
    return crt, keyf


@pytest.fixture
def tls_broker(mosquitto_factory: Callable[..., Mosquitto], tmp_path: Path) -> tuple[Mosquitto, Path, Path]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, ca_cert, ca_key = make_ca(certs, "plantstream-test-ca")
    other_ca, _, _ = make_ca(certs, "some-other-ca")
    crt, key = make_server_cert(certs, ca_cert, ca_key)
    mq = mosquitto_factory(tls={"cafile": str(ca), "certfile": str(crt), "keyfile": str(key)},
                           passwords={"line-gateway": "s3cret"})
    return mq, ca, other_ca


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_tls_with_credentials_delivers(tls_broker: tuple[Mosquitto, Path, Path], broker: TansuBroker,
                                       kafka_conf: dict, tmp_path: Path, protocol: str) -> None:
    mq, ca, _ = tls_broker
    cfg = bakery_config(5, mqtt={"host": "127.0.0.1", "port": mq.port, "protocol": protocol,
                                 "username": "line-gateway", "password": "s3cret", "tls": {"ca_certs": str(ca)}},
                        producer={"spool_dir": str(tmp_path / "spool")})
    sim = BakerySim(seed=4, start_ms=START, machines=5)
    sent: list[tuple[int, str, bytes]] = []
    with MqttConnector(cfg, kafka_conf) as connector:
        n = publish(sim, "127.0.0.1", mq.port, end_ms=START + 2 * 60_000, username="line-gateway",
                    password="s3cret", tls={"ca_certs": str(ca)}, on_message=lambda *m: sent.append(m))
        assert n == len(sent) > 100
        assert wait_until(lambda: connector.stats.acked == n, 30), connector.stats
    expected = expected_records(sim, sent, MqttConnector(cfg, kafka_conf))
    got = measurements(kafka_conf, expected)
    assert len(got) == expected
    check_against_truth(sim, got)


def start_error(cfg: PlantConfig) -> str:
    """The ConnectorError a connector start raises, which must come within seconds, not hang."""
    t0 = time.monotonic()
    with pytest.raises(ConnectorError) as exc:
        MqttConnector(cfg, {"bootstrap.servers": "127.0.0.1:1"}).start()
    assert time.monotonic() - t0 < 5
    return str(exc.value)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_wrong_password_is_a_clear_error_not_a_hang(tls_broker: tuple[Mosquitto, Path, Path],
                                                    tmp_path: Path, protocol: str) -> None:
    mq, ca, _ = tls_broker
    cfg = bakery_config(5, mqtt={"host": "127.0.0.1", "port": mq.port, "protocol": protocol,
                                 "username": "line-gateway", "password": "wrong", "tls": {"ca_certs": str(ca)}},
                        producer={"spool_dir": str(tmp_path / "spool")})
    text = start_error(cfg)
    assert f"127.0.0.1:{mq.port} refused the connection" in text
    assert "mqtt.username and mqtt.password" in text
    assert "wrong" not in text  # the password is never printed


def test_unknown_certificate_authority_is_a_clear_tls_error(tls_broker: tuple[Mosquitto, Path, Path],
                                                            tmp_path: Path) -> None:
    mq, _, other_ca = tls_broker
    cfg = bakery_config(5, mqtt={"host": "127.0.0.1", "port": mq.port, "username": "line-gateway",
                                 "password": "s3cret", "tls": {"ca_certs": str(other_ca)}},
                        producer={"spool_dir": str(tmp_path / "spool")})
    t0 = time.monotonic()
    with pytest.raises(ConnectorError, match=r"TLS handshake with MQTT broker .* failed: .*CERTIFICATE_VERIFY_FAILED"):
        MqttConnector(cfg, {"bootstrap.servers": "127.0.0.1:1"}).start()
    assert time.monotonic() - t0 < 5


# -- kill -9 mid-run ------------------------------------------------------------------------------


def _connector_process(config: Path, bootstrap: str, log: Path) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("plantstream")
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(exe), "connect", "mqtt", "--config", str(config), "--bootstrap", bootstrap],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    assert wait_until(lambda: "Ctrl-C to stop" in log.read_text(errors="replace") or proc.poll() is not None, 60)
    assert proc.poll() is None, log.read_text()
    return proc


def _distinct_measurements(conf: dict[str, Any], expected: int, timeout_s: float = 60) -> list[Measurement]:
    """Measurements in partition order, first occurrence of identical records only."""
    c = Consumer({**conf, "group.id": f"t-{time.monotonic_ns()}", "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(kafka.MEASUREMENTS, p, 0) for p in range(4)])
    seen: set[Measurement] = set()
    out: list[Measurement] = []
    raw = 0
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in c.consume(1000, 0.2):
                if msg.error() is not None:
                    continue
                raw += 1
                m = decode(msg.value() or b"")
                assert isinstance(m, Measurement)
                if m not in seen:
                    seen.add(m)
                    out.append(m)
    finally:
        c.close()
    return out


def test_connector_killed_mid_run_loses_nothing(mosquitto_factory: Callable[..., Mosquitto], broker: TansuBroker,
                                               kafka_conf: dict, tmp_path: Path) -> None:
    mq = mosquitto_factory()
    cfg = bakery_config(5, mqtt={"host": mq.host, "port": mq.port, "protocol": "3.1.1",
                                 "client_id": "bakery-crash"},
                        producer={"spool_dir": str(tmp_path / "spool")})
    cfg_path = tmp_path / "plant.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    sim = BakerySim(seed=21, start_ms=START, machines=5)
    sent: list[tuple[int, str, bytes]] = []
    counter = MqttConnector(cfg, kafka_conf)
    a = _connector_process(cfg_path, broker.bootstrap, tmp_path / "a.log")
    try:
        publish(sim, mq.host, mq.port, end_ms=START + 5 * 60_000, on_message=lambda *m: sent.append(m))
        first = expected_records(sim, sent, counter)
        assert len(_distinct_measurements(kafka_conf, first)) == first
        broker.pause()
        try:
            publish(sim, mq.host, mq.port, end_ms=START + 10 * 60_000, on_message=lambda *m: sent.append(m))
            time.sleep(1.0)  # the connector has taken what the broker lets it have; none confirmed
        finally:
            os.kill(a.pid, signal.SIGKILL)
            a.wait(timeout=10)
            broker.resume()
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGKILL)
    b = _connector_process(cfg_path, broker.bootstrap, tmp_path / "b.log")
    try:
        publish(sim, mq.host, mq.port, end_ms=START + 12 * 60_000, on_message=lambda *m: sent.append(m))
        expected = expected_records(sim, sent, MqttConnector(cfg, kafka_conf))
        got = _distinct_measurements(kafka_conf, expected)
    finally:
        os.kill(b.pid, signal.SIGTERM)
        b.wait(timeout=20)
    assert len(got) == expected
    check_against_truth(sim, got)


@pytest.mark.filterwarnings("ignore:The 'acl' option is deprecated:DeprecationWarning")
def test_a_subscription_the_broker_refuses_is_a_clear_error(tmp_path: Path) -> None:
    # Mosquitto grants any subscription and filters at delivery; amqtt's topic ACL refuses in the
    # SUBACK, as Azure IoT Operations' broker does with authorization rules
    acl = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
           "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": {
               "acl": {"anonymous": ["factory/#"]}}}  # amqtt 0.12 spells subscribe-acl "acl"
    port = free_port()
    mq = AmqttBroker(port, config={"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                                   "plugins": acl}).start()
    try:
        cfg = bakery_config(5, mqtt={"host": "127.0.0.1", "port": mq.port, "protocol": "3.1.1",
                                     "subscriptions": [{"topic": "factory/#", "format": "flat"},
                                                       {"topic": "finance/#", "format": "flat"}]},
                            producer={"spool_dir": str(tmp_path / "spool")})
        text = start_error(cfg)
        assert "subscription refused for finance/#" in text and "factory/#" not in text
        assert "mqtt.subscriptions and the broker's ACL" in text
        # the same gateway subscribing only where it may read starts
        ok = cfg.model_copy(update={"mqtt": cfg.mqtt.model_copy(
            update={"subscriptions": cfg.mqtt.subscriptions[:1]})})
        with MqttConnector(ok, {"bootstrap.servers": "127.0.0.1:1"}) as connector:
            assert connector.stats.connects == 1 and connector.stats.last_error == ""
    finally:
        mq.stop()

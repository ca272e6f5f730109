"""TLS when configured (issue 17 item 5), through the user's path: ``plantstream station --config``.

The real command runs as a subprocess with ``station.tls_certfile``/``tls_keyfile`` set to a
self-signed certificate for 127.0.0.1 made here with ``cryptography``. Kafka is the tests'
embedded broker; ClickHouse is the test's chDB (owned by this process, one owner per path),
served to the station read-only over HTTP by ``connectors/chserve.py`` — the way ``plantstream
run`` serves its embedded chDB to the station. Checked: HTTPS with that certificate as the only
trust anchor, the sign-in page and signing in over it, the session cookie ``Secure`` and
``HttpOnly``, no page for plain HTTP on the same port; and a config with one of the two fields,
a missing file or a key of another certificate stops at start (status 2) naming the field and
the fix.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from plantstream.connectors import kafka
from plantstream.connectors.chserve import ChServe
from plantstream.connectors.embedded import free_port
from plantstream.flows.operator_entries import TOPIC as ENTRIES
from plantstream.schemas.config import PlantConfig
from tests.run.test_run_opcua import EXE, _env
from tests.station.conftest import PINS, plant_dict, seed
from tests.station.test_station_refusals import csrf

pytestmark = pytest.mark.integration


def self_signed(tmp: Path, name: str = "station") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (and localhost) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "plantstream station test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def trust(cert: Path) -> ssl.SSLContext:
    """A client context whose only trust anchor is ``cert`` (host names checked)."""
    return ssl.create_default_context(cafile=str(cert))


def write_plant(tmp: Path, hashes: tuple[dict[str, str], str], ch_db: str, **station: Any) -> Path:
    data = plant_dict(*hashes)
    data["clickhouse"] = {"database": ch_db}
    data["station"].update(station)
    path = tmp / "plant.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_station(tmp: Path, kafka_conf: dict[str, Any], clickhouse: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [EXE, "station", "--config", "plant.yaml", "--port", str(port), "--bootstrap",
         kafka_conf["bootstrap.servers"], "--clickhouse", clickhouse],
        cwd=tmp, env=_env(), stdout=(tmp / "station.log").open("wb"), stderr=subprocess.STDOUT,
    )


@pytest.fixture
def https_station(
    tmp_path: Path,
    hashes: tuple[dict[str, str], str],
    plant: PlantConfig,
    ch: Any,
    ch_dsn: str,
    ch_db: str,
    kafka_conf: dict[str, Any],
) -> Iterator[tuple[str, Path]]:
    """``plantstream station`` with TLS on a free port; yields its https URL and the certificate."""
    kafka.create_topics(kafka_conf, {ENTRIES: 1})
    seed(ch, plant)
    cert, key = self_signed(tmp_path)
    write_plant(tmp_path, hashes, ch_db, tls_certfile=str(cert), tls_keyfile=str(key))
    port = free_port()
    log = tmp_path / "station.log"
    with ChServe(ch_dsn, port=0, database=ch_db) as chs:
        proc = start_station(tmp_path, kafka_conf, chs.url, port)
        url = f"https://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if httpx.get(url + "/readyz", verify=trust(cert), timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
            assert f"plantstream station on {url}" in log.read_text()
            yield url, cert
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def test_https_with_the_certificate_sign_in_secure_cookie_and_no_plain_http(
    https_station: tuple[str, Path],
) -> None:
    url, cert = https_station
    # Only that certificate as the trust anchor: the handshake verifies it (name 127.0.0.1 included).
    with httpx.Client(base_url=url, verify=trust(cert), timeout=20) as c:
        r = c.get("/signin")
        assert r.status_code == 200 and 'id="signin"' in r.text, r.text[:300]
        assert r.url.scheme == "https"
        r = c.post("/signin", data={"csrf": csrf(r.text), "operator": "op-ana", "secret": PINS["op-ana"]})
        assert r.status_code == 303, r.text[:300]
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert cookie.startswith("plantstream_station=") and {"secure", "httponly"} <= attrs, cookie
        assert "samesite=strict" in cookie.lower(), cookie
        r = c.get("/", follow_redirects=True)
        assert r.status_code == 200 and r.url.path == "/line/line-1" and "Sign out" in r.text, r.text[:300]
        assert "press-01" in r.text
    # The system's trust store does not know the certificate: an unverified station is refused.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/signin", timeout=10)
    # Plain HTTP on the same port gets no page: the TLS server drops it (no redirect, no downgrade).
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        httpx.get(url.replace("https://", "http://") + "/signin", timeout=10)


def _start_fails(tmp: Path, kafka_conf: dict[str, Any]) -> str:
    port = free_port()
    proc = start_station(tmp, kafka_conf, "http://127.0.0.1:9", port)
    try:
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    out = (tmp / "station.log").read_text()
    assert rc == 2, (rc, out[-2000:])
    assert "Traceback" not in out, out[-2000:]
    return out


def test_a_half_or_broken_tls_config_stops_at_start_naming_the_field(
    tmp_path: Path, hashes: tuple[dict[str, str], str], kafka_conf: dict[str, Any]
) -> None:
    cert, key = self_signed(tmp_path)
    _, other_key = self_signed(tmp_path, "other")
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"tls_certfile": str(cert)}, ["station.tls_certfile and station.tls_keyfile go together", "set both"]),
        ({"tls_keyfile": str(key)}, ["station.tls_certfile and station.tls_keyfile go together", "set both"]),
        (
            {"tls_certfile": str(tmp_path / "nope.crt"), "tls_keyfile": str(key)},
            ["station.tls_certfile", "nope.crt", "does not exist", "remove both"],
        ),
        (
            {"tls_certfile": str(cert), "tls_keyfile": str(tmp_path / "nope.key")},
            ["station.tls_keyfile", "nope.key", "does not exist"],
        ),
        (
            {"tls_certfile": str(cert), "tls_keyfile": str(other_key)},
            ["station.tls_certfile", "station.tls_keyfile", "cannot serve HTTPS", "its unencrypted PEM private key"],
        ),
        (
            {"tls_certfile": str(key), "tls_keyfile": str(key)},
            ["cannot serve HTTPS", "PEM certificate"],
        ),
    ]
    for station, words in cases:
        write_plant(tmp_path, hashes, "default", **station)
        out = " ".join(_start_fails(tmp_path, kafka_conf).split())
        assert "error:" in out, out
        for w in words:
            assert w in out, (station, w, out)

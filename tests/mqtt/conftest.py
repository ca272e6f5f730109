"""MQTT brokers for the connector tests: amqtt (in-process) and Mosquitto (a subprocess).

``mosquitto_factory`` starts a Mosquitto on a free loopback port with a generated config
(persistent sessions kept in memory, unlimited queue so nothing is dropped while the connector
is away; optional TLS listener and password file). Mosquitto is installed by ``.ci/run``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from plantstream.connectors.embedded import AmqttBroker, _wait_port, free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


@dataclass
class Mosquitto:
    host: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def start_mosquitto(workdir: Path, *, tls: dict[str, str] | None = None,
                    passwords: dict[str, str] | None = None, acl: str | None = None) -> Mosquitto:
    if MOSQUITTO is None:
        pytest.fail("mosquitto is not installed: apt-get install -y mosquitto (.ci/run does it)")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        "per_listener_settings false",
        f"listener {port} 127.0.0.1",
        "persistence false",
        "max_inflight_messages 1000",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "log_type error",
        "log_type warning",
        f"log_dest file {workdir / 'mosquitto.log'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        lines.append("user root")  # else it drops to user mosquitto, who cannot read pytest's tmp dirs
    if tls:
        lines += [f"cafile {tls['cafile']}", f"certfile {tls['certfile']}", f"keyfile {tls['keyfile']}"]
    if passwords is not None:
        pwfile = workdir / "passwd"
        pwfile.write_text("")
        for user, pw in passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, pw], check=True,
                           capture_output=True)
        pwfile.chmod(0o600)
        lines += ["allow_anonymous false", f"password_file {pwfile}"]
    else:
        lines.append("allow_anonymous true")
    if acl is not None:
        (workdir / "acl").write_text(acl)
        lines.append(f"acl_file {workdir / 'acl'}")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    log = workdir / "mosquitto.out"
    with open(log, "ab") as out:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_port("127.0.0.1", port, 10, proc)
    except Exception:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        raise
    return Mosquitto("127.0.0.1", port, proc, log)


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    started: list[Mosquitto] = []

    def make(**kw: Any) -> Mosquitto:
        m = start_mosquitto(tmp_path / f"mosquitto-{len(started)}", **kw)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


@pytest.fixture(params=["amqtt", "mosquitto"])
def any_mqtt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, int]]:
    """(host, port) of a fresh MQTT broker: amqtt and Mosquitto."""
    if request.param == "amqtt":
        b = AmqttBroker().start()
        try:
            yield b.host, b.port
        finally:
            b.stop()
    else:
        m = start_mosquitto(tmp_path / "mosquitto")
        try:
            yield m.host, m.port
        finally:
            m.stop()


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()

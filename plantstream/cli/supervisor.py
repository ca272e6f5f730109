"""The supervisor of ``plantstream run``: child processes started in order, restarted, stopped.

One edge box runs the whole plant from one command. The supervisor owns

- a **lock** on the state directory (:class:`StateLock`: ``run.lock`` holds the pid; a second
  ``run`` on the same directory is refused, a lock left by a dead process is taken over);
- the **Kafka broker** when the config names none: the embedded Tansu broker as its own
  subprocess (memory storage: its data lives as long as the ``run``; the flows' recovery store
  and the connectors' spool and OPC UA backfill carry a restart, see docs/cli.md);
- and the **children** (:class:`Child`), each a separate Python process with its own log file
  under ``<state>/logs`` and its own health port: ``migrate`` (one-shot, ``plantstream db
  migrate``), ``flows`` (``python -m bytewax.run plantstream.flows.main:get_flow()`` with a
  recovery directory, ``PLANTSTREAM_STOP=signal``) and one connector per source
  (``plantstream connect opcua|mqtt --source NAME``). Separate processes also keep the MQTT
  client's ``select()`` away from the many file descriptors chDB holds, and leave the chDB path
  to the one process that may open it (the flows).

A child that exits while the supervisor runs is restarted after a backoff that doubles from
``backoff_initial_s`` to ``backoff_max_s`` (reset after ``healthy_s`` of running), with one log
line saying why: its exit code or signal and the last lines of its log. Stopping (Ctrl-C,
SIGTERM, ``--duration``) goes in reverse order: connectors first (they flush their spool to
Kafka), then the flows (they drain the topic and close their last epoch), then the broker;
whatever has not exited when its share of ``stop_timeout_s`` is over is killed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from plantstream.schemas.errors import PlantStreamError

log = logging.getLogger("plantstream.run")


class RunError(PlantStreamError):
    """``plantstream run`` cannot start (a second instance, a failed migration, a broker)."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (and is not a zombie of ours).

    >>> pid_alive(os.getpid()), pid_alive(2**22 + 12345)
    (True, False)
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
    return True


class StateLock:
    """``<state>/run.lock`` holding the pid of the ``run`` that owns the state directory.

    Created with ``O_EXCL``; when it exists and names a live process, :meth:`acquire` refuses
    (naming the pid and the fix); a lock of a dead process is stale and taken over.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "run.lock"
        self._held = False

    def holder(self) -> int | None:
        """The pid in the lock file (None: no lock or unreadable)."""
        try:
            return int(self.path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pid = self.holder()
                if pid is not None and pid != os.getpid() and pid_alive(pid):
                    msg = (
                        f"another plantstream run (pid {pid}) uses the state directory "
                        f"{self.path.parent}; stop it first, or pass --state-dir to another directory"
                    )
                    raise RunError(msg) from None
                log.warning("taking over the stale lock %s (pid %s is gone)", self.path, pid)
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{os.getpid()}\n")
            self._held = True
            return
        msg = f"cannot take the lock {self.path}; remove it if no plantstream run uses {self.path.parent}"
        raise RunError(msg)

    def release(self) -> None:
        if self._held and self.holder() == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._held = False


def describe_exit(code: int) -> str:
    """A child's return code in words.

    >>> describe_exit(-9), describe_exit(3), describe_exit(0)
    ('killed by signal SIGKILL', 'exit code 3', 'exit code 0')
    """
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def tail(path: Path, lines: int = 5, max_bytes: int = 16_384) -> list[str]:
    """The last ``lines`` non-empty lines of a log file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [ln for ln in data.splitlines() if ln.strip()][-lines:]


_LOOPBACK_TLS = ssl.create_default_context()
_LOOPBACK_TLS.check_hostname = False
_LOOPBACK_TLS.verify_mode = ssl.CERT_NONE
"""How the supervisor reads the health of its own HTTPS child (the station on this box): the
child's certificate names the plant's host name, not the address polled, and nothing secret is sent."""


def fetch_json(url: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """GET a health endpoint: its JSON whatever the status (200 or 503), None when unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=_LOOPBACK_TLS) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        out = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return out if isinstance(out, dict) else None


@dataclass
class Child:
    """One supervised child process.

    ``role`` is ``flows`` or ``source`` (long-running, restarted) or ``task`` (runs once to
    completion). ``health_port`` is where it serves ``/healthz`` and ``/readyz`` (over HTTPS
    when ``health_tls``).
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    role: str = "source"
    health_port: int | None = None
    health_tls: bool = False
    health_host: str = "127.0.0.1"
    stop_signal: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    next_start_at: float | None = None
    backoff_s: float = 0.0
    last_exit: str = ""
    health: dict[str, Any] | None = None
    ready: bool = False

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as logf:
            logf.write(
                f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting {self.name}: "
                f"{' '.join(self.argv)}\n".encode()
            )
            logf.flush()
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        self.next_start_at = None
        self.health = None
        self.ready = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, path: str) -> str | None:
        scheme = "https" if self.health_tls else "http"
        host = f"[{self.health_host}]" if ":" in self.health_host else self.health_host
        return None if self.health_port is None else f"{scheme}://{host}:{self.health_port}{path}"

    def poll_health(self) -> None:
        url = self.url("/readyz")
        if url is None or not self.running():
            self.health, self.ready = None, False
            return
        self.health = fetch_json(url)
        self.ready = bool(self.health and self.health.get("ready"))

    def signal(self, sig: int) -> None:
        if self.running():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL its whole process group (a child's own children go with it)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


@dataclass
class Supervisor:
    """Start children in order, restart the ones that crash, stop them all (see the module doc)."""

    children: list[Child] = field(default_factory=list)
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    healthy_s: float = 60.0
    stop_timeout_s: float = 10.0
    on_event: Callable[[str], None] = log.info
    stopping: bool = False

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def by_role(self, role: str) -> list[Child]:
        return [c for c in self.children if c.role == role]

    def run_task(self, child: Child, timeout_s: float = 300.0) -> None:
        """Run a one-shot child to completion; a failure stops the start with its log's tail."""
        child.role = "task"
        child.start()
        assert child.proc is not None
        try:
            code = child.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            child.kill()
            code = -9
        if code != 0:
            lines = " | ".join(tail(child.log_path, 5))
            msg = f"{child.name} failed ({describe_exit(code)}): {lines}; full log: {child.log_path}"
            raise RunError(msg)

    def start(self, child: Child, *, wait_ready_s: float = 0.0) -> bool:
        """Start ``child``; with ``wait_ready_s``, wait until its ``/readyz`` answers ready.

        Returns whether it became ready (True without waiting)."""
        child.start()
        self.on_event(
            f"started {child.name} (pid {child.pid}"
            + (f", health on :{child.health_port}" if child.health_port else "")
            + ")"
        )
        if wait_ready_s <= 0:
            return True
        deadline = time.monotonic() + wait_ready_s
        while time.monotonic() < deadline and not self.stopping:
            if not child.running():
                return False
            child.poll_health()
            if child.ready:
                return True
            time.sleep(0.25)
        return False

    def check(self) -> None:
        """Restart what exited (after its backoff); call every fraction of a second."""
        now = time.monotonic()
        for child in self.children:
            if child.role == "task" or self.stopping:
                continue
            if child.proc is not None and child.next_start_at is None and child.proc.poll() is not None:
                code = child.proc.returncode
                ran = now - child.started_at
                child.backoff_s = (
                    self.backoff_initial_s
                    if ran >= self.healthy_s or child.backoff_s == 0
                    else min(self.backoff_max_s, child.backoff_s * 2)
                )
                child.next_start_at = now + child.backoff_s
                child.last_exit = describe_exit(code)
                lines = tail(child.log_path, 5)
                self.on_event(
                    f"{child.name} (pid {child.pid}) stopped: {child.last_exit} after {ran:.0f}s; "
                    f"restarting in {child.backoff_s:g}s; last log lines: "
                    + (" | ".join(lines) if lines else "(none)")
                    + f" [{child.log_path}]"
                )
            if child.next_start_at is not None and now >= child.next_start_at:
                child.restarts += 1
                child.start()
                self.on_event(f"restarted {child.name} (pid {child.pid}, restart {child.restarts})")

    def poll_health(self) -> None:
        for child in self.children:
            if child.role != "task":
                child.poll_health()

    def stop(self) -> dict[str, str]:
        """Stop every child: connectors, then the flows; each group gets its share of the
        timeout, then SIGKILL. Returns child → how it ended."""
        self.stopping = True
        ended: dict[str, str] = {}
        t0 = time.monotonic()
        for group, until in ((self.by_role("station") + self.by_role("source"), 0.45),
                             (self.by_role("flows"), 0.9)):
            for child in group:
                child.signal(child.stop_signal)
            deadline = t0 + self.stop_timeout_s * until
            for child in group:
                if child.proc is None:
                    continue
                try:
                    code = child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    ended[child.name] = child.last_exit = describe_exit(code)
                except subprocess.TimeoutExpired:
                    child.kill()
                    ended[child.name] = "killed after the stop timeout"
                    self.on_event(
                        f"{child.name} did not stop in time: killed; last log lines: "
                        + " | ".join(tail(child.log_path, 3))
                    )
        return ended


def python_argv(*args: str) -> list[str]:
    """``python -m …`` with this interpreter (the supervisor's own environment)."""
    return [sys.executable, *args]


def child_env(base: Mapping[str, str], extra: Mapping[str, str], drop: Sequence[str] = ()) -> dict[str, str]:
    """The environment of a child: ``base`` without the keys in ``drop``, plus ``extra``."""
    env = {k: v for k, v in base.items() if k not in drop}
    env.update(extra)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env

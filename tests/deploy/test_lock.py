"""Reproducible installs: the locks pin every dependency with hashes, agree with pyproject.toml
and with each other, and are what `make` and the image install."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
REQS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name → (version, hashes) of a pip-compile lock (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})*)\s*$", line)
        assert m, f"{path.name}: not a hashed pin: {line[:120]}"
        out[canonicalize_name(m[1])] = (m[2], re.findall(r"sha256:([0-9a-f]{64})", m[3]))
    return out


LOCK = pins(REQS / "lock.txt")
RUNTIME = pins(REQS / "runtime.txt")


def wanted(extras: tuple[str, ...]) -> list[Requirement]:
    reqs = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PYPROJECT["project"]["optional-dependencies"][extra]]
    return reqs


def test_every_pin_has_hashes() -> None:
    for name, lock in (("lock.txt", LOCK), ("runtime.txt", RUNTIME), ("pip.txt", pins(REQS / "pip.txt")),
                       ("helm-sdkpy.txt", pins(REQS / "helm-sdkpy.txt"))):
        assert lock, name
        bare = [pkg for pkg, (_, hashes) in lock.items() if not hashes]
        assert not bare, f"{name}: pins without a hash: {bare}"


def test_the_locks_satisfy_pyproject() -> None:
    env = default_environment()
    for lock, extras in ((LOCK, ("embedded", "dev")), (RUNTIME, ())):
        for req in wanted(extras):
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            assert name in lock, f"{req} is not locked"
            assert req.specifier.contains(lock[name][0], prereleases=True), f"{req} vs locked {lock[name][0]}"
    # The build backend is locked too (installs use --no-build-isolation).
    for req in PYPROJECT["build-system"]["requires"]:
        r = Requirement(req)
        assert r.specifier.contains(LOCK[canonicalize_name(r.name)][0])
        assert canonicalize_name(r.name) in RUNTIME


def test_runtime_lock_is_the_runtime_part_of_the_full_lock() -> None:
    for name, (version, hashes) in RUNTIME.items():
        assert name in LOCK, f"{name} is in runtime.txt only"
        assert LOCK[name] == (version, hashes), f"{name}: runtime.txt {version} vs lock.txt {LOCK[name][0]}"
    assert not {"chdb", "pytest", "mypy", "amqtt"} & set(RUNTIME)


def test_this_environment_was_installed_from_the_lock() -> None:
    """What `make` installed is what lock.txt pins (CI runs the same Makefile)."""
    wrong = {}
    for name, (version, _) in LOCK.items():
        try:
            have = metadata.version(name)
        except metadata.PackageNotFoundError:
            have = None
        if have != version:
            wrong[name] = (version, have)
    assert not wrong, f"installed versions differ from requirements/lock.txt (run `make clean test`): {wrong}"


def test_make_installs_with_hashes_and_the_project_without_dependencies() -> None:
    text = (ROOT / "Makefile").read_text()
    recipe = text.split("$(BIN)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "pip install -q --require-hashes -r requirements/pip.txt" in recipe
    assert "pip install -q --require-hashes -r $(LOCK)" in recipe and "LOCK := requirements/lock.txt" in text
    assert "pip install -q --no-deps --no-build-isolation -e ." in recipe
    assert ("--require-hashes --no-deps --ignore-requires-python -r requirements/helm-sdkpy.txt") in recipe
    installs = re.findall(r"pip install ([^\n]*)", recipe)
    assert all("--require-hashes" in i or "--no-deps" in i for i in installs), installs

"""One versioned codec for the state every per-machine logic keeps in recovery snapshots.

A logic's state is a small dataclass. What goes into a Bytewax recovery snapshot is never that
object pickled (a pickle names module paths, so a rename would break resume) but its *payload*:
plain Python values only (``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, tuples,
lists, dicts of those), behind a header that names the state's kind and format version::

    b"PS1" + pickle((kind, version, payload))

:class:`StateCodec` turns a state into bytes and back. When a logic changes what it keeps, it
raises ``version`` and registers an *upgrade*: a function from the payload of version ``n`` to
the payload of version ``n + 1``. Decoding a snapshot of an older version runs the upgrades in
order, so a flow resumes from the recovery store of any earlier release. A snapshot of a newer
version than the code knows, or of another kind, stops with an error that says so (a recovery
store from a newer release, or a flow's state handed to another flow) instead of running on
state it misreads.

>>> from dataclasses import dataclass
>>> @dataclass
... class Seen:
...     count: int = 0
...     last_ms: int | None = None
>>> codec = StateCodec("example", 2, Seen, upgrades={1: lambda p: {"count": p["n"], "last_ms": None}})
>>> codec.decode(codec.encode(Seen(3, 1_700_000_000_000)))
Seen(count=3, last_ms=1700000000000)
>>> old = encode_payload("example", 1, {"n": 7})  # written by the release before
>>> codec.decode(old)
Seen(count=7, last_ms=None)
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from plantstream.schemas.errors import PlantStreamError

MAGIC = b"PS1"
"""The first bytes of every encoded state (format of the header itself)."""

_PLAIN = (type(None), bool, int, float, str, bytes)

S = TypeVar("S")

Payload = Any
"""Plain Python values only: None, bool, int, float, str, bytes, and tuples, lists, dicts of them."""


class StateError(PlantStreamError):
    """A snapshot that this code cannot read: another kind, a newer version, or not a state at all."""


def check_plain(value: Any, where: str = "payload") -> None:
    """Raise :class:`StateError` unless ``value`` holds only plain Python values.

    >>> check_plain({"a": [1, 2.5, None, (b"x", "y")]})
    >>> check_plain({"a": object()})
    Traceback (most recent call last):
    ...
    plantstream.operators.state.StateError: payload['a'] is a object; a state payload holds plain values only
    """
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            check_plain(k, f"{where} key {k!r}")
            check_plain(v, f"{where}[{k!r}]")
        return
    msg = f"{where} is a {type(value).__name__}; a state payload holds plain values only"
    raise StateError(msg)


def encode_payload(kind: str, version: int, payload: Payload) -> bytes:
    """The bytes of a state payload behind its header (no check that it is plain; see :func:`check_plain`)."""
    return MAGIC + pickle.dumps((kind, version, payload), protocol=pickle.HIGHEST_PROTOCOL)


def decode_header(blob: bytes) -> tuple[str, int, Payload]:
    """``(kind, version, payload)`` of an encoded state; :class:`StateError` when it is not one."""
    if not isinstance(blob, bytes | bytearray | memoryview) or bytes(blob[:3]) != MAGIC:
        msg = "not a plantstream state snapshot (no PS1 header): a recovery store of an older release?"
        raise StateError(msg)
    kind, version, payload = pickle.loads(blob[3:])  # our own recovery store
    return kind, version, payload


def _default_dump(state: Any) -> Payload:
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}


@dataclasses.dataclass(frozen=True)
class StateCodec(Generic[S]):
    """Encode a logic's state (a dataclass) as versioned plain data, and decode it back.

    ``dump`` turns the state into its payload (default: the dataclass's fields as a dict, each
    field already plain); ``load`` builds the state from a payload of the current version
    (default: ``cls(**payload)``). ``upgrades[n]`` turns a payload of version ``n`` into one of
    version ``n + 1``.
    """

    kind: str
    version: int
    cls: type[S]
    dump: Callable[[S], Payload] | None = None
    load: Callable[[Payload], S] | None = None
    upgrades: Mapping[int, Callable[[Payload], Payload]] = dataclasses.field(default_factory=dict)
    check: bool = False
    """Check every payload is plain when encoding (the conformance tests turn it on; it costs a walk)."""

    def payload(self, state: S) -> Payload:
        return self.dump(state) if self.dump is not None else _default_dump(state)

    def encode(self, state: S) -> bytes:
        payload = self.payload(state)
        if self.check:
            check_plain(payload, f"{self.kind} state")
        return encode_payload(self.kind, self.version, payload)

    def decode(self, blob: bytes) -> S:
        kind, version, payload = decode_header(blob)
        if kind != self.kind:
            msg = (f"snapshot holds {kind!r} state, not {self.kind!r}: "
                   "the recovery store belongs to another flow")
            raise StateError(msg)
        return self.from_payload(payload, version)

    def from_payload(self, payload: Payload, version: int | None = None) -> S:
        """The state of a ``payload`` of format ``version`` (default: the current one), through
        the upgrades of every later version — for a state kept inside another state (the OEE
        accounting an alert engine keeps) as its kind's payload and version.

        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Seen:
        ...     count: int = 0
        >>> StateCodec("seen", 2, Seen, upgrades={1: lambda p: {"count": p["n"]}}).from_payload({"n": 4}, 1)
        Seen(count=4)
        """
        if version is None:
            version = self.version
        if version > self.version:
            msg = (f"{self.kind} state is format version {version}, this release reads up to {self.version}: "
                   "resume with the release that wrote it, or start from a fresh recovery store")
            raise StateError(msg)
        while version < self.version:
            upgrade = self.upgrades.get(version)
            if upgrade is None:
                msg = f"{self.kind} state format version {version} has no upgrade to {version + 1}"
                raise StateError(msg)
            payload = upgrade(payload)
            version += 1
        if self.load is not None:
            return self.load(payload)
        return self.cls(**payload)

"""The per-machine logic protocol: what the machine engine runs, with its capabilities declared.

Most of what plantstream computes is per machine (the twin, OEE, scrap, condition monitoring,
alert rules). Each of those is a *logic*: one object per machine that folds the machine's
samples and keeps a small state. The machine engine (:mod:`plantstream.flows.engine`) runs
every logic of every machine; it is the only way a per-machine flow runs, in production and in
unit tests alike (:class:`plantstream.flows.engine.EngineRun`, an engine of one machine).

A logic (:class:`MachineLogic`) is batch-first: :meth:`~MachineLogic.on_batch` is its only data
entry — a machine's samples of one input batch, in arrival order; a single sample is a batch of
one. :meth:`~MachineLogic.state` returns its state, a small dataclass that the spec's
:class:`~plantstream.operators.state.StateCodec` turns into versioned bytes for the recovery
snapshot. Everything else is optional and *declared* by the logic's :class:`LogicSpec`, never
discovered: the engine asks for timers (:meth:`~MachineLogic.notify_at`,
:meth:`~MachineLogic.on_notify`) only when ``timers`` is set, hands over another logic's
outputs (:meth:`~MachineLogic.on_upstream`) only when ``upstream`` names it, and asks whether
a logic may be dropped (:meth:`~MachineLogic.discard`) only when ``discards`` is set. The
protocol's defaults make an undeclared capability inert.

>>> from dataclasses import dataclass
>>> @dataclass
... class Seen:
...     count: int = 0
>>> class Counting(MachineLogic[Seen, int]):
...     def __init__(self, state: Seen | None) -> None:
...         self.s = state or Seen()
...     def on_batch(self, samples: list[Measurement]) -> list[int]:
...         self.s.count += len(samples)
...         return [self.s.count]
...     def state(self) -> Seen:
...         return self.s
>>> spec = LogicSpec("counting", StateCodec("counting", 1, Seen), Counting, lambda n: [("counts", {"n": n})])
>>> logic = spec.build(None)
>>> logic.on_batch([Measurement(0, "m1", "temperature_c", 1.0)] * 3), logic.on_eof()
([3], [])
>>> spec.build(spec.codec.decode(spec.codec.encode(logic.state()))).state()
Seen(count=3)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from plantstream.operators.state import StateCodec
from plantstream.schemas.errors import PlantStreamError
from plantstream.schemas.measurement import Measurement

S = TypeVar("S")
Out = TypeVar("Out")
S_co = TypeVar("S_co", covariant=True)

Row = dict[str, Any]
"""A result row: column → value (timestamps epoch ms)."""


class LogicError(PlantStreamError):
    """A logic asked for a capability its spec did not declare (a wiring mistake in a flow)."""


class MachineLogic(Protocol[S_co, Out]):
    """One machine's logic of one flow (see the module docstring).

    Subclass it explicitly to inherit the inert defaults of the optional capabilities. Every
    method returns the logic's outputs (possibly none) in order; the engine turns each output
    into rows with the spec's ``rows``.
    """

    def on_batch(self, samples: list[Measurement]) -> list[Out]:
        """Fold the machine's samples of one batch (arrival order; never empty)."""
        ...

    def state(self) -> S_co:
        """The state to snapshot. It may be the live object: the engine encodes it at once."""
        ...

    def on_eof(self) -> list[Out]:
        """The end of the input (a replay's end): what is still pending."""
        return []

    def notify_at(self) -> datetime | None:
        """The wall time of the logic's next timer, or None (asked only when ``timers``)."""
        return None

    def on_notify(self) -> list[Out]:
        """The timer is due (called only when ``timers``)."""
        return []

    def on_upstream(self, items: list[Any]) -> list[Out]:
        """The outputs of the ``upstream`` logic of the same machine (only when declared)."""
        msg = f"{type(self).__name__} takes no upstream outputs: its spec must not set upstream"
        raise LogicError(msg)

    def discard(self) -> bool:
        """True when the logic holds nothing worth keeping: the engine drops it and builds a
        fresh one for the machine's next sample (asked only when ``discards``)."""
        return False


@dataclass(frozen=True)
class LogicSpec(Generic[S, Out]):
    """What the machine engine needs to run one flow's per-machine logic.

    Parameters
    ----------
    kind
        The flow's name: the key of its logics' states in the engine's snapshot.
    codec
        Encodes the logic's state (:meth:`MachineLogic.state`) for recovery, and decodes it.
    build
        A machine's logic from its decoded state, or new (None).
    rows
        One output of the logic → ``(table, row)`` pairs.
    filters
        Which samples reach :meth:`MachineLogic.on_batch` (None: every sample; cheaper when
        the logic skips what it does not need itself).
    timers
        The logic has timers (:meth:`MachineLogic.notify_at` / :meth:`MachineLogic.on_notify`).
    upstream
        The flow whose outputs for the same machine this logic takes
        (:meth:`MachineLogic.on_upstream`), when it runs next to it.
    discards
        The engine asks :meth:`MachineLogic.discard` after each call.
    fed
        ``(flow, variant)``: when ``flow`` runs in the same engine, the variant (a spec with
        ``upstream=flow``) runs instead (alerts take the OEE flow's facts rather than keeping
        an OEE accounting of their own).
    """

    kind: str
    codec: StateCodec[S]
    build: Callable[[S | None], MachineLogic[S, Out]]
    rows: Callable[[Out], Iterable[tuple[str, Row]]]
    filters: Callable[[Measurement], bool] | None = None
    timers: bool = False
    upstream: str | None = None
    discards: bool = False
    fed: tuple[str, Callable[[], LogicSpec[Any, Any]]] | None = None


class ManualClock:
    """A wall clock that moves only when told: inject it (``now=clock``) into a logic with
    timers and drive the engine with it (:class:`plantstream.flows.engine.EngineRun`).

    >>> c = ManualClock(datetime(2025, 11, 22, 6, tzinfo=UTC))
    >>> c.advance(timedelta(seconds=90)).isoformat(), c.wall()
    ('2025-11-22T06:01:30+00:00', 1763791290.0)
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 11, 22, 6, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def wall(self) -> float:
        """The time as epoch seconds (what :class:`~plantstream.operators.alerts.EventClock` reads)."""
        return self.now.timestamp()

    def advance(self, by: timedelta) -> datetime:
        self.now += by
        return self.now

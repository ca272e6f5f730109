"""Flows by name: each flow is one module of ``plantstream.flows`` that declares a :class:`Flow`.

A data engineer adds a flow by adding one module to ``flows/`` that ends with its declaration::

    FLOW = Flow(
        name="hot_spindles",                      # the module's name
        build=hot_spindles,                       # (FlowContext, Stream[Measurement]) -> Results
        doc="Spindle temperatures above a threshold, one row each.",
        reads={"temperature_c": float},           # the metrics it sees, and their value type
        config=HotSpindlesConfig,                 # validated from `flows.hot_spindles` of the plant config
        tables={"hot_spindles": "051_hot_spindles.sql"},  # table -> the migration that creates it
        topics={"hot_spindles": "plantstream.hot_spindles"},  # table -> result topic (optional)
        cloud={"hot_spindles": "send"},           # table -> cloud policy (optional)
    )

The build function returns ClickHouse table name → stream of rows (dicts of column → value,
timestamps as epoch ms). The entry point (:mod:`plantstream.flows.main`) wires every result
stream to the ClickHouse sink, to the flow's result topics and, by the flow's cloud policy, to
the cloud sink (:mod:`plantstream.flows.cloud`). Flows do no I/O.

Discovery is explicit: :func:`available` imports each module of ``plantstream.flows`` and keeps
those that bind ``FLOW`` to a :class:`Flow`; modules that declare none (``main``, ``registry``,
``engine``, ``replay``, ``demo``, ``cloud``, ``archive``'s helpers …) are infrastructure. Result
topics, the cloud policy, the ``kpi`` commands and what ``plantstream flows`` lists are all read
from the declarations.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bytewax.dataflow import Stream
from pydantic import BaseModel, ValidationError

from plantstream.connectors import kafka
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.measurement import Measurement

Row = dict[str, Any]
Results = Mapping[str, Stream[Row]]

DEADLETTER_TABLE = "deadletter"
"""The plant's dead-letter table: every flow may write it without declaring it."""


@dataclass(frozen=True)
class FlowContext:
    """What a flow may read: the plant config and its own validated config section.

    ``settings`` is the flow's section (its ``config`` model validated from ``flows.<name>``, or
    the top-level section it owns); None for a flow that declares none. Nothing here does I/O.
    """

    config: PlantConfig
    settings: Any = None


FlowFn = Callable[[FlowContext, Stream[Measurement]], Results]

CloudPolicy = Literal["send", "rollup", "coalesce"]
"""How a table's records go to the cloud sink: each one as it comes (``send``), additive facts
summed per machine over ``eventhubs.oee_rollup_s`` (``rollup``), or the latest version of each
event at most every ``eventhubs.event_cadence_s`` (``coalesce``)."""

_CLOUD_POLICIES = ("send", "rollup", "coalesce")
_VALUE_TYPES: dict[type, str] = {float: "a number", str: "text", bool: "a bool"}


@dataclass(frozen=True)
class Flow:
    """One flow's declaration: what it is built from, reads, writes and owns.

    Parameters
    ----------
    name
        The flow's name (``--flows``, ``PLANTSTREAM_FLOWS``); the name of its module.
    build
        The flow function ``(FlowContext, Stream[Measurement]) -> Results``; a
        :class:`~plantstream.flows.engine.MachineFlow` or
        :class:`~plantstream.flows.engine.BatchFlow` for the built-in per-machine and batch flows.
    doc
        One line for ``plantstream flows``.
    tables
        ClickHouse table → the numbered migration (``schemas/clickhouse/NNN_name.sql``) that
        creates it: every table the flow writes except ``deadletter``. Checked at start.
    topics
        Table → the Kafka topic that carries the same records (result topics).
    cloud
        Table → :data:`CloudPolicy`: which tables go to the cloud sink, and how.
    config
        The flow's config section: a pydantic model validated from ``flows.<name>`` of the
        plant config (defaults when absent), or the name of the top-level section it owns
        (``"scrap"``); handed to the flow as ``ctx.settings``.
    reads
        For a plain flow function: metric → the value type it reads (``float`` a number,
        ``str``, ``bool``). The flow sees only those metrics, and only values of that type; a
        sample whose value has another type (``"n/a"`` for a temperature) goes to the dead
        letter with the flow's name, and the other flows keep it. None: every measurement as
        it came (the flow handles every value type itself).
    kpi
        The ``plantstream kpi`` sub-commands that read this flow's tables.
    input_topic
        A flow that reads its own Kafka topic instead of the measurements (the operator
        station's audit records): its build function gets a stream of that topic's records,
        each a JSON object decoded to a ``dict``; a record that is no JSON object goes to the
        dead letter. The runner that has no input for the topic (``replay``, ``demo``) leaves
        the flow out. The topic is created with the plant's topics.

    Examples
    --------
    >>> f = Flow(name="x", build=lambda ctx, ms: {}, doc="X.", tables={"x": "050_x.sql"},
    ...          topics={"x": "plantstream.x"}, reads={"temperature_c": float})
    >>> f.writes("deadletter"), f.writes("x"), f.writes("y")
    (True, True, False)
    >>> Flow(name="y", build=lambda ctx, ms: {}, cloud={"y": "later"})
    Traceback (most recent call last):
    ...
    plantstream.schemas.errors.ConfigError: flow 'y': cloud policy 'later' of table 'y' is not one of ...
    """

    name: str
    build: FlowFn
    doc: str = ""
    tables: Mapping[str, str] = field(default_factory=dict)
    topics: Mapping[str, str] = field(default_factory=dict)
    cloud: Mapping[str, CloudPolicy] = field(default_factory=dict)
    config: type[BaseModel] | str | None = None
    reads: Mapping[str, type] | None = None
    kpi: tuple[str, ...] = ()
    input_topic: str | None = None
    declared: bool = True
    """False for a flow function passed without a declaration (tests, tools): nothing checked."""

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            msg = f"flow name {self.name!r} must be a Python identifier (it is the module's name)"
            raise ConfigError(msg)
        for table, policy in self.cloud.items():
            if policy not in _CLOUD_POLICIES:
                msg = (f"flow {self.name!r}: cloud policy {policy!r} of table {table!r} is not one of "
                       f"{', '.join(_CLOUD_POLICIES)}")
                raise ConfigError(msg)
        for metric, kind in (self.reads or {}).items():
            if kind not in _VALUE_TYPES:
                msg = (f"flow {self.name!r}: reads[{metric!r}] is {kind!r}; use float (a number), "
                       "str or bool")
                raise ConfigError(msg)
        if self.reads is not None and hasattr(self.build, "step"):
            msg = f"flow {self.name!r}: reads= is for plain flow functions; a MachineFlow picks its samples"
            raise ConfigError(msg)
        if not self.doc:
            object.__setattr__(self, "doc", (getattr(self.build, "__doc__", None) or "").strip())
        object.__setattr__(self, "__doc__", self.doc)  # what `plantstream flows` lists

    def writes(self, table: str) -> bool:
        """Whether the flow may write ``table`` (its declared tables and the dead letter)."""
        return table == DEADLETTER_TABLE or table in self.tables

    def settings(self, config: PlantConfig) -> Any:
        """The flow's config section from the plant config, validated (ConfigError names the field)."""
        if self.config is None:
            return None
        if isinstance(self.config, str):
            return getattr(config, self.config)
        section = config.flows.get(self.name, {})
        try:
            return self.config.model_validate(section)
        except ValidationError as exc:
            lines = []
            for err in exc.errors():
                where = ".".join(["flows", self.name, *(str(p) for p in err["loc"])])
                lines.append(f"plant config field '{where}': {err['msg'].removeprefix('Value error, ')}")
            raise ConfigError("; ".join(lines)) from None

    def context(self, config: PlantConfig) -> FlowContext:
        """The :class:`FlowContext` this flow is built with."""
        return FlowContext(config, self.settings(config))

    def __call__(self, ctx: FlowContext, measurements: Stream[Measurement]) -> Results:
        """Build the flow on ``measurements`` (its function form, for tests and tools)."""
        if ctx.settings is None and self.config is not None:
            ctx = FlowContext(ctx.config, self.settings(ctx.config))
        return self.build(ctx, measurements)


@dataclass(slots=True)
class Decoded:
    """One input batch decoded: its Measurements in order, dead-letter rows, raw size in bytes.

    ``raw[i]`` is the message ``measurements[i]`` was decoded from, or None when plantstream
    filled fields the message lacked (site, line from the config): a message kept as it came
    can be handed to ClickHouse as is.
    """

    measurements: list[Measurement]
    raw: list[bytes | None]
    deadletters: list[Row]
    raw_bytes: int


# -- discovery -----------------------------------------------------------------------------------


def _declaration(module: Any) -> Flow | None:
    name = module.__name__.rsplit(".", 1)[-1]
    flow = getattr(module, "FLOW", None)
    if flow is None:
        stray = [k for k, v in vars(module).items() if isinstance(v, Flow) and v.name == name]
        if stray:
            msg = (f"{module.__name__} binds its Flow to {stray[0]!r}; the registry reads the name "
                   f"FLOW: write FLOW = Flow(name={name!r}, …)")
            raise ConfigError(msg)
        return None
    if not isinstance(flow, Flow):
        msg = f"{module.__name__}.FLOW is a {type(flow).__name__}; declare FLOW = Flow(name={name!r}, …)"
        raise ConfigError(msg)
    if flow.name != name:
        msg = (f"{module.__name__} declares FLOW named {flow.name!r}; a flow's name is its module's "
               f"name: rename the module to {flow.name}.py or the flow to {name!r}")
        raise ConfigError(msg)
    return flow


def available() -> dict[str, Flow]:
    """Every declared flow: the modules of ``plantstream.flows`` that bind ``FLOW``, by name."""
    from plantstream import flows

    found: dict[str, Flow] = {}
    for info in pkgutil.iter_modules(flows.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        flow = _declaration(importlib.import_module(f"plantstream.flows.{info.name}"))
        if flow is not None:
            found[flow.name] = flow
    return dict(sorted(found.items()))


def select(names: str | list[str] | None) -> dict[str, Flow]:
    """The flows named (comma-separated or a list); all of them when ``None`` or ``"all"``."""
    flows = available()
    if names is None or names == "all" or names == ["all"]:
        return flows
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    unknown = [n for n in wanted if n and n not in flows]
    if unknown:
        msg = f"unknown flow(s) {unknown}; choose from {sorted(flows)} (option --flows)"
        raise ConfigError(msg)
    return {n: flows[n] for n in wanted if n}


def resolve(flows: Mapping[str, Flow | FlowFn] | None) -> dict[str, Flow]:
    """Declarations for what a caller passes: every flow when None; a bare flow function gets
    the declaration that builds it, or an undeclared one (nothing to check, no topics)."""
    if flows is None:
        return available()
    out: dict[str, Flow] = {}
    known: dict[int, Flow] | None = None
    for name, item in flows.items():
        if isinstance(item, Flow):
            out[name] = item
            continue
        if known is None:
            known = {id(f.build): f for f in available().values()}
        flow = known.get(id(item))
        out[name] = flow if flow is not None else Flow(name=name, build=item, declared=False)
    return out


def check_config(config: PlantConfig, flows: Mapping[str, Flow]) -> dict[str, FlowContext]:
    """Each flow's :class:`FlowContext`, its section validated; ``flows.<name>`` must name a flow."""
    stray = sorted(set(config.flows) - set(available()) - set(flows))
    if stray:
        msg = (f"plant config field 'flows.{stray[0]}': no flow is named {stray[0]!r}; "
               f"choose from {sorted(available())}")
        raise ConfigError(msg)
    return {name: flow.context(config) for name, flow in flows.items()}


def check_results(flow: Flow, results: Results) -> None:
    """A declared flow writes only the tables it declares (ConfigError naming the fix)."""
    if not flow.declared:
        return
    extra = sorted(t for t in results if not flow.writes(t))
    if extra:
        msg = (f"flow {flow.name!r} writes table {extra[0]!r}, which its FLOW does not declare: add "
               f"tables={{{extra[0]!r}: 'NNN_{extra[0]}.sql'}} with the migration that creates it")
        raise ConfigError(msg)


def result_topics(flows: Iterable[Flow]) -> dict[str, str]:
    """Table → result topic, from the declarations (plus the dead letter's own topic)."""
    out = {DEADLETTER_TABLE: kafka.DEADLETTER}
    for flow in flows:
        for table, topic in flow.topics.items():
            other = out.get(table)
            if other is not None and other != topic:
                msg = f"table {table!r} is declared with two result topics: {other!r} and {topic!r}"
                raise ConfigError(msg)
            out[table] = topic
    return out


def topics(flows: Iterable[Flow]) -> tuple[str, ...]:
    """Every topic a plant with these flows uses: the plant's own, the flows' result topics, and
    the cloud outbox (``plantstream.outbox.cloud``) when a flow declares a cloud policy."""
    flows = list(flows)
    names = dict.fromkeys(kafka.PLANT_TOPICS)
    names.update(dict.fromkeys(result_topics(flows).values()))
    names.update(dict.fromkeys(f.input_topic for f in flows if f.input_topic))
    if any(f.cloud for f in flows):
        names[kafka.CLOUD_OUTBOX] = None
    return tuple(names)


def kpi_commands(flows: Iterable[Flow]) -> dict[str, str]:
    """``plantstream kpi`` sub-command → the flow whose tables it reads."""
    return {cmd: flow.name for flow in flows for cmd in flow.kpi}


# -- tables --------------------------------------------------------------------------------------


def check_tables(flows: Mapping[str, Flow], existing: Iterable[str], database: str = "",
                 migrations: Iterable[str] = ()) -> None:
    """Stop at start when a table a flow writes does not exist: ONE line naming the migration.

    ``existing`` are the tables of the database (``system.tables``); ``migrations`` the names of
    the migrations shipped (``NNN_name.sql``), to tell a migration to add from one to apply.

    >>> f = Flow(name="hot", build=lambda ctx, ms: {}, tables={"hot": "050_hot.sql"})
    >>> check_tables({"hot": f}, ["measurements", "hot"])
    >>> try:
    ...     check_tables({"hot": f}, ["measurements"], "plant", ["001_measurements.sql"])
    ... except ConfigError as exc:
    ...     print(exc)
    flow 'hot' writes ClickHouse table 'hot', which does not exist in database 'plant': add the
    migration schemas/clickhouse/050_hot.sql that creates it, then run `plantstream db migrate`
    """
    have = set(existing)
    shipped = set(migrations)
    where = f" in database {database!r}" if database else ""
    for flow in flows.values():
        if not flow.declared:
            continue
        for table, migration in flow.tables.items():
            if table in have:
                continue
            if migration in shipped:
                fix = (f"the migration {migration} that creates it is not applied: run "
                       "`plantstream db migrate`")
            else:
                fix = (f"add the migration schemas/clickhouse/{migration} that creates it, then run "
                       "`plantstream db migrate`")
            msg = f"flow {flow.name!r} writes ClickHouse table {table!r}, which does not exist{where}: {fix}"
            raise ConfigError(msg)


def check_tables_of(flows: Mapping[str, Flow], client: Any) -> None:
    """:func:`check_tables` against a ClickHouse client's database (``system.tables``)."""
    from plantstream.connectors.clickhouse import MIGRATIONS_DIR

    result = client.query("SELECT currentDatabase(), name FROM system.tables "
                          "WHERE database = currentDatabase()")
    rows = result.result_rows
    database = rows[0][0] if rows else client.query("SELECT currentDatabase()").result_rows[0][0]
    shipped = [p.name for p in MIGRATIONS_DIR.iterdir() if p.name.endswith(".sql")]
    check_tables(flows, [r[1] for r in rows], str(database), shipped)


# -- typed reads of plain flows ----------------------------------------------------------------------


def _kind_of(value: Any) -> type:
    if isinstance(value, bool):
        return bool
    if isinstance(value, int | float):
        return float
    return str


def reader(flow: Flow) -> Callable[[Decoded], list[Measurement | Row]]:
    """A decoded batch → the samples ``flow`` reads (its metrics, values of the declared type),
    and a dead-letter row (a ``dict``) for each sample of its metrics with another value type.

    >>> f = Flow(name="hot", build=lambda ctx, ms: {}, reads={"temperature_c": float})
    >>> ms = [Measurement(1, "m", "temperature_c", 81.5), Measurement(2, "m", "temperature_c", "n/a"),
    ...       Measurement(3, "m", "good_count", 5)]
    >>> out = reader(f)(Decoded(ms, [None] * 3, [], 0))
    >>> out[0].value, out[1]["reason"], len(out)
    (81.5, "flow 'hot' reads temperature_c as a number, got text 'n/a'", 2)
    """
    reads = dict(flow.reads or {})
    name = flow.name

    def pick(decoded: Decoded) -> list[Measurement | Row]:
        out: list[Measurement | Row] = []
        for m in decoded.measurements:
            want = reads.get(m.metric)
            if want is None:
                continue
            got = _kind_of(m.value)
            if got is want and not (got is float and not math.isfinite(m.value)):  # type: ignore[arg-type]
                out.append(m)
                continue
            reason = (f"flow {name!r} reads {m.metric} as {_VALUE_TYPES[want]}, "
                      f"got {_VALUE_TYPES[got]} {m.value!r}")
            # (source, ts) is the dead letter's natural key: one row per sample
            out.append({"ts": m.ts, "source": f"flow:{name}/{m.machine}/{m.metric}", "reason": reason,
                        "raw": m.to_json().decode("utf-8", errors="backslashreplace")})
        return out

    return pick

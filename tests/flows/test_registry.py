"""The flow declarations: discovery, what is derived from them, and the checks at start."""

from __future__ import annotations

import re
import sys
import types
from typing import Any

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource

from plantstream.connectors import clickhouse as chc
from plantstream.connectors import kafka
from plantstream.flows import cloud
from plantstream.flows.registry import (
    Flow,
    _declaration,
    available,
    check_results,
    check_tables_of,
    kpi_commands,
    resolve,
    result_topics,
    select,
    topics,
)
from plantstream.schemas.config import EXAMPLE_CONFIG, PlantConfig, load_config
from plantstream.schemas.errors import ConfigError

BUILT_IN = ["alerts", "anomaly", "archive", "oee", "operator_entries", "scrap", "status"]


def test_every_built_in_flow_is_declared_by_its_module_and_infrastructure_is_not() -> None:
    flows = available()
    assert sorted(flows) == BUILT_IN
    for name, flow in flows.items():
        module = sys.modules[f"plantstream.flows.{name}"]
        assert module.FLOW is flow and flow.name == name and flow.doc
    for infra in ("main", "registry", "engine", "replay", "demo", "cloud"):
        assert not hasattr(sys.modules.get(f"plantstream.flows.{infra}"), "FLOW"), infra


def test_each_declared_table_is_created_by_its_declared_migration() -> None:
    shipped = {p.name: p.read_text() for p in chc.MIGRATIONS_DIR.iterdir() if p.name.endswith(".sql")}
    for flow in available().values():
        assert flow.tables, flow.name
        for table, migration in flow.tables.items():
            assert migration in shipped, (flow.name, migration)
            assert re.search(rf"CREATE TABLE IF NOT EXISTS {table}\b", shipped[migration]), (flow.name, table)


def test_result_topics_and_kpi_commands_come_from_the_declarations() -> None:
    flows = available().values()
    assert result_topics(flows) == {
        "deadletter": kafka.DEADLETTER, "oee_facts": "plantstream.oee",
        "downtime_events": "plantstream.downtime", "scrap_events": "plantstream.scrap",
        "anomalies": "plantstream.anomalies", "alerts": "plantstream.alerts"}
    assert set(topics(flows)) == {*kafka.PLANT_TOPICS, "plantstream.oee", "plantstream.downtime",
                                  "plantstream.scrap", "plantstream.anomalies", "plantstream.alerts",
                                  "plantstream.operator_entries", kafka.CLOUD_OUTBOX}
    assert kpi_commands(flows) == {"oee": "oee", "downtime": "oee", "scrap": "scrap", "alerts": "alerts",
                                   "anomalies": "anomaly"}
    # only the chosen flows' topics: the archive alone has none of its own
    assert topics(select("archive").values()) == kafka.PLANT_TOPICS


def test_the_cloud_policy_is_the_flows_declarations_unless_the_plant_config_sets_it() -> None:
    flows = available().values()
    p = cloud.policy(PlantConfig().eventhubs, flows)
    assert p.tables == {"oee_facts", "downtime_events", "scrap_events", "anomalies", "alerts"}
    assert p.rollup == {"oee_facts"} and p.coalesce == {"downtime_events", "scrap_events", "anomalies"}
    assert "measurements" not in p.tables
    # the example config spells out the same choice
    assert cloud.policy(load_config(EXAMPLE_CONFIG).eventhubs, flows) == p
    mine = PlantConfig.model_validate({"eventhubs": {"tables": ["alerts", "oee_facts"], "oee_rollup_s": 0}})
    p = cloud.policy(mine.eventhubs, flows)
    assert p.tables == {"alerts", "oee_facts"} and not p.rollup and not p.coalesce
    assert "never raw measurements" in p.describe(mine.eventhubs)


def test_declarations_are_read_explicitly_and_mistakes_name_the_fix() -> None:
    def build(ctx: Any, ms: Any) -> dict[str, Any]:
        return {}

    mod = types.ModuleType("plantstream.flows.climate")
    mod.climate = Flow(name="climate", build=build)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="write FLOW = Flow"):
        _declaration(mod)
    mod = types.ModuleType("plantstream.flows.climate")
    mod.FLOW = Flow(name="weather", build=build)  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="a flow's name is its module's name"):
        _declaration(mod)
    mod = types.ModuleType("plantstream.flows.climate")
    mod.FLOW = build  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r"declare FLOW = Flow\(name='climate'"):
        _declaration(mod)
    assert _declaration(types.ModuleType("plantstream.flows.helpers")) is None
    with pytest.raises(ConfigError, match="reads"):
        Flow(name="x", build=build, reads={"temperature_c": int})


def test_a_flow_writes_only_what_it_declares() -> None:
    flow = Dataflow("t")
    rows = op.input("in", flow, TestingSource([{"a": 1}]))
    declared = Flow(name="x", build=lambda ctx, ms: {}, tables={"x": "050_x.sql"})
    check_results(declared, {"x": rows, "deadletter": rows})
    with pytest.raises(ConfigError, match=r"writes table 'y', which its FLOW does not declare"):
        check_results(declared, {"y": rows})
    # a bare function passed by a caller gets its flow's declaration, or none to check
    from plantstream.flows.status import status

    resolved = resolve({"status": status, "adhoc": lambda ctx, ms: {}})
    assert resolved["status"] is available()["status"] and not resolved["adhoc"].declared
    check_results(resolved["adhoc"], {"anything": rows})


def test_check_tables_reads_system_tables(ch: Any) -> None:
    check_tables_of(available(), ch)  # the shipped migrations create every declared table
    ch.command("DROP TABLE scrap_rate")
    with pytest.raises(ConfigError, match=r"flow 'scrap' writes ClickHouse table 'scrap_rate', which does "
                                          r"not exist in database 't_\w+': the migration 021_scrap_rate.sql"):
        check_tables_of(available(), ch)
    check_tables_of(select("oee,status"), ch)  # only the chosen flows' tables count

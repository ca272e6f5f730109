"""``plantstream kafka create-topics``: the plant's topics and the flows' result topics, from config.

The Helm chart runs this command as a pre-install/pre-upgrade hook Job, so the topics exist
before the flows and connectors start on a real cluster; the embedded runtime creates them
itself. Idempotent: existing topics are left alone and compared with the config.
"""

from __future__ import annotations

from typing import Annotated

import typer

from plantstream.cli.common import ConfigOpt, config_from, stderr
from plantstream.cli.output import check_format, emit
from plantstream.schemas.errors import ConfigError


def create_topics(
    config: ConfigOpt = None,
    flows: Annotated[str, typer.Option(
        "--flows", help="Flows whose result topics to create: comma-separated names, or all.")] = "all",
    bootstrap_servers: Annotated[str | None, typer.Option(
        "--bootstrap-servers", help="Kafka bootstrap servers (default: kafka.bootstrap_servers).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print what would be created; do not contact Kafka.")] = False,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit with status 1 when an existing topic differs from the config.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for Kafka.", min=1.0)] = 30.0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, json or csv.")] = "table",
) -> None:
    """Create the Kafka topics with partitions, retention and compaction from the plant config.

    Topics that exist are left as they are; a partition count or topic config that differs
    from the config is reported (never changed: repartitioning moves machines between
    partitions). Exit status 0, or 1 with --strict when something differs.
    """
    from plantstream.connectors import kafka
    from plantstream.flows.registry import available, select, topics

    check_format(fmt)
    cfg = config_from(config)
    chosen = select(flows)
    specs = kafka.topic_specs(cfg.kafka, topics(chosen.values()), topics(available().values()))
    columns = ["topic", "partitions", "replication", "configs", "action"]

    def configs_text(configs: dict[str, str]) -> str:
        return ", ".join(f"{k}={v}" for k, v in sorted(configs.items()))

    if dry_run:
        emit(columns, [[s.name, s.partitions, s.replication_factor, configs_text(dict(s.configs)), "planned"]
                       for s in specs.values()], fmt)
        return
    conf = cfg.kafka.client_config()
    if bootstrap_servers:
        conf["bootstrap.servers"] = bootstrap_servers
    if "bootstrap.servers" not in conf:
        msg = ("plantstream kafka create-topics needs a Kafka cluster: set kafka.bootstrap_servers in the "
               "plant config, PLANTSTREAM__KAFKA__BOOTSTRAP_SERVERS or --bootstrap-servers")
        raise ConfigError(msg)
    statuses = kafka.create_topics(conf, specs.values(), timeout_s=timeout, compare_configs=True,
                                   warn=False)
    emit(columns, [[st.spec.name, st.partitions, st.spec.replication_factor,
                    configs_text(dict(st.spec.configs)), st.action] for st in statuses], fmt)
    problems = [line for st in statuses for line in st.problems]
    err = stderr()
    for line in problems:
        err.print(f"warning: {line}", soft_wrap=True)
    if problems and strict:
        raise typer.Exit(1)

"""``plantstream cloud settings``: where the cloud sink sends, secrets masked.

A setting is masked when it came from a secret (the connection string, an ``extra`` setting
named like a secret) or its name says it is one (``sasl.oauthbearer.client.secret``,
``ssl.key.pem``, ``ssl.key.password`` …); URLs show ``user:***@`` and ``sig=***``.
"""

from __future__ import annotations

from plantstream.cli.common import ConfigOpt, config_from, stdout
from plantstream.cli.output import emit


def cloud_settings(config: ConfigOpt = None) -> None:
    """Show where the cloud sink sends (librdkafka settings, secrets masked) and what."""
    from plantstream.connectors.eventhubs import target_from_config
    from plantstream.flows.cloud import policy
    from plantstream.flows.registry import select

    cfg = config_from(config)
    target = target_from_config(cfg.eventhubs)
    out = stdout()
    if target is None:
        out.print("no cloud sink: set eventhubs.connection_string (or "
                  "PLANTSTREAM_EVENTHUBS_CONNECTION_STRING), or eventhubs.bootstrap_servers + topic")
        return
    rows = [[k, str(v)] for k, v in sorted(target.masked().items())]
    rows.insert(0, ["topic", target.topic])
    emit(["setting", "value"], rows)
    out.print(policy(cfg.eventhubs, select(None).values()).describe(cfg.eventhubs), markup=False)

"""``plantstream station``: the operator station web app; ``plantstream station hash-pin``.

``plantstream station --config plant.yaml`` serves the pages of :mod:`plantstream.station`
with uvicorn on ``station.host``:``station.port`` (HTTPS with ``station.tls_certfile`` and
``station.tls_keyfile``). Kafka is ``--bootstrap`` or the config's ``kafka.bootstrap_servers``;
ClickHouse ``--clickhouse`` or the config's (a server, or ``plantstream run``'s read-only HTTP
endpoint of its embedded chDB). The session secret is ``station.session_secret``
(``PLANTSTREAM__STATION__SESSION_SECRET``), else a random one per process.
"""

from __future__ import annotations

import getpass
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from plantstream.cli.common import stderr
from plantstream.schemas.errors import ConfigError
from plantstream.schemas.redact import mask_url

log = logging.getLogger("plantstream.station")


def serve(
    ctx: typer.Context,
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Plant config YAML with a station: section.")
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Listen address (default: station.host).")
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port (default: station.port; 0: a free one).", min=0, max=65535),
    ] = None,
    bootstrap: Annotated[
        str | None, typer.Option("--bootstrap", help="Kafka bootstrap servers (default: the config's).")
    ] = None,
    clickhouse: Annotated[
        str | None, typer.Option("--clickhouse", help="ClickHouse URL to read (default: the config's).")
    ] = None,
) -> None:
    """The operator station: explain stops, split and correct them, enter scrap, on the line's tablet."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        msg = "--config PLANT.yaml is required: the station reads its operators, lines and reasons from it"
        raise ConfigError(msg)
    import uvicorn

    from plantstream.connectors import clickhouse as ch
    from plantstream.schemas.config import load_config
    from plantstream.station.app import Station, create_app
    from plantstream.station.data import StationData
    from plantstream.station.sender import EntrySender

    cfg = load_config(config)
    st = cfg.station
    if st.tls_certfile is not None and st.tls_keyfile is not None:
        check_tls(st.tls_certfile, st.tls_keyfile)
    kconf = cfg.kafka.client_config()
    if bootstrap:
        kconf["bootstrap.servers"] = bootstrap
    if "bootstrap.servers" not in kconf:
        msg = "the station needs Kafka: pass --bootstrap HOST:PORT or set kafka.bootstrap_servers"
        raise ConfigError(msg)
    dsn = clickhouse or cfg.clickhouse.url
    if dsn is None:
        msg = (
            "the station reads ClickHouse over HTTP: pass --clickhouse http(s)://HOST:PORT (plantstream "
            "run serves its embedded chDB read-only, see docs/station.md) or set clickhouse.url"
        )
        raise ConfigError(msg)
    if not cfg.station.operators and not cfg.station.operators_file:
        msg = "station.operators is empty: add operators (plantstream station hash-pin makes their pin_hash)"
        raise ConfigError(msg)
    settings = None if ch.is_embedded(ch.resolve_dsn(dsn)) else ch.readonly_settings()
    data = StationData(
        cfg, lambda: ch.connect_config(cfg.clickhouse, dsn, account="reader", settings=settings)
    )
    sender = EntrySender(kconf, st.kafka_timeout_s).start()
    station = Station(cfg, data, sender)
    secret = st.session_secret.get_secret_value() if st.session_secret else None
    if secret is None:
        log.warning("station.session_secret is not set: sessions end when the station restarts")
    tls = st.tls_certfile is not None
    app = create_app(station, session_secret=secret, https=tls)
    listen_host = host or st.host
    listen_port = st.port if port is None else port
    err = stderr()
    err.print(
        f"plantstream station on {'https' if tls else 'http'}://{listen_host}:{listen_port} "
        f"(Kafka {kconf['bootstrap.servers']}, ClickHouse {mask_url(dsn)})",
        soft_wrap=True,
    )
    try:
        uvicorn.run(
            app,
            host=listen_host,
            port=listen_port,
            log_level="warning",
            access_log=False,
            ssl_certfile=st.tls_certfile,
            ssl_keyfile=st.tls_keyfile,
            timeout_graceful_shutdown=3,
        )
    finally:
        sender.close()
        data.close()


def check_tls(certfile: str, keyfile: str) -> None:
    """Stop at start when ``station.tls_certfile``/``tls_keyfile`` cannot serve HTTPS.

    Raises
    ------
    ConfigError
        A file is missing or unreadable, or the two are no PEM certificate (chain) and unencrypted
        private key of one pair; the message names the field and the fix.
    """
    import ssl

    for field, path in (("tls_certfile", certfile), ("tls_keyfile", keyfile)):
        if not Path(path).is_file():
            msg = (
                f"station.{field} {path!r} does not exist; point it at the PEM "
                f"{'certificate (chain)' if field == 'tls_certfile' else 'private key'} the station serves "
                "HTTPS with, or remove both station.tls_certfile and station.tls_keyfile for plain HTTP"
            )
            raise ConfigError(msg)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        msg = (
            f"station.tls_certfile {certfile!r} and station.tls_keyfile {keyfile!r} cannot serve HTTPS "
            f"({exc}); give a PEM certificate (chain) and its unencrypted PEM private key"
        )
        raise ConfigError(msg) from None


def hash_pin(
    badge: Annotated[
        bool, typer.Option("--badge", help="Say 'badge id' in the prompt (the hash is the same kind).")
    ] = False,
) -> None:
    """Print the argon2 hash of a PIN or badge id read from standard input (or a prompt), for
    ``station.operators[].pin_hash`` / ``badge_hash``. The value itself is never printed or stored."""
    from plantstream.station.auth import hash_secret

    what = "badge id" if badge else "PIN"
    if sys.stdin.isatty():
        secret = getpass.getpass(f"{what}: ")
        if getpass.getpass(f"{what} again: ") != secret:
            msg = f"the two {what}s differ; run the command again"
            raise ConfigError(msg)
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret.strip():
        msg = f"no {what} given: type it at the prompt or pipe it on standard input"
        raise ConfigError(msg)
    if not badge and (len(secret) < 4):
        msg = "a PIN needs at least 4 characters"
        raise ConfigError(msg)
    print(hash_secret(secret))

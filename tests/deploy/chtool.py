"""Run in a child process: migrate or dump one chDB database (chDB allows one path per process).

``python -m tests.deploy.chtool migrate DSN DB`` applies the migrations;
``PLANTSTREAM_TEST_CAPTURE=DIR python -m tests.deploy.chtool load-dump DSN DB`` migrates, inserts
the blocks a cluster run captured (see ``tests.deploy.entry``) and dumps as below;
``python -m tests.deploy.chtool dump DSN DB`` prints every result table as JSON: table → sorted
rows (final state of replacing tables; columns filled by ``now()`` at insert and the
ReplacingMergeTree version column left out: they record when and how often a row was stored,
not what was computed).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import sys
from pathlib import Path
from typing import Any

from plantstream.connectors import clickhouse as chc

_COLLAPSING = ("Replacing", "Collapsing", "Aggregating", "Summing", "VersionedCollapsing")


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else round(v, 9)
    if isinstance(v, int | str | bool) or v is None:
        return v
    return str(v)


def _version_column(engine_full: str) -> str | None:
    """The version column of ``ReplacingMergeTree(version)``: how many times a row was rewritten
    (it depends on how input interleaved), not what was computed; FINAL already used it.

    >>> _version_column("ReplacingMergeTree(version) PARTITION BY x ORDER BY y")
    'version'
    >>> _version_column("ReplacingMergeTree PARTITION BY x") is None
    True
    """
    m = re.match(r"Replacing\w*MergeTree\(\s*`?(\w+)`?", engine_full)
    return m.group(1) if m else None


def dump(client: Any, database: str) -> dict[str, list[list[Any]]]:
    tables = client.query(
        "SELECT name, engine, engine_full FROM system.tables WHERE database = {db:String} "
        "AND engine NOT IN ('View', 'MaterializedView') AND name != 'schema_migrations' ORDER BY name",
        parameters={"db": database},
    ).result_rows
    out: dict[str, list[list[Any]]] = {}
    for name, engine, engine_full in tables:
        version = _version_column(engine_full)
        cols = [
            c for c, default in client.query(
                "SELECT name, default_expression FROM system.columns "
                "WHERE database = {db:String} AND table = {t:String} ORDER BY position",
                parameters={"db": database, "t": name},
            ).result_rows
            if "now" not in default.lower() and c != version
        ]
        final = " FINAL" if any(k in engine for k in _COLLAPSING) else ""
        rows = client.query(f"SELECT {', '.join(f'`{c}`' for c in cols)} FROM `{name}`{final}").result_rows
        out[name] = sorted(([_cell(v) for v in r] for r in rows), key=lambda r: json.dumps(r, default=str))
    return out


def load(client: Any, directory: Path) -> int:
    """Insert the blocks captured by ``tests.deploy.entry`` (every file, in order); returns rows."""
    n = 0
    for path in sorted(directory.glob("*.blocks")):
        with path.open("rb") as fh:
            while True:
                try:
                    block = pickle.load(fh)
                except EOFError:
                    break
                if "raw" in block:
                    client.raw_insert(block["table"], None, block["raw"], settings=block["settings"] or None,
                                      fmt=block["fmt"])
                    n += block["raw"].count(b"\n") + 1 if block["raw"] else 0
                    continue
                client.insert(block["table"], block["data"], column_names=block["columns"],
                              settings=block["settings"] or None)
                n += len(block["data"])
    return n


def main(argv: list[str]) -> int:
    cmd, dsn, database = argv
    client = chc.connect(dsn, database=database)
    try:
        if cmd == "migrate":
            chc.migrate(client)
        elif cmd == "load-dump":
            chc.migrate(client)
            load(client, Path(os.environ["PLANTSTREAM_TEST_CAPTURE"]))
            json.dump(dump(client, database), sys.stdout, default=str)
        elif cmd == "dump":
            json.dump(dump(client, database), sys.stdout, default=str)
        else:
            print(f"unknown command {cmd!r}: use migrate or dump", file=sys.stderr)
            return 2
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The production entry point as the cluster test runs it, with ClickHouse writes captured.

chDB corrupts its heap when it is used from Bytewax worker threads (``-w 2`` or ``-i/-a``:
"double free or corruption", then a hang in its crash handler); one process with one worker
runs on the main thread and is fine. A cluster therefore needs a ClickHouse server, which this
machine does not have. So, with ``PLANTSTREAM_TEST_CAPTURE=DIR``, the ClickHouse sink — the
real :class:`connectors.clickhouse.ClickHouseSink`, its batching, dedup tokens and partition
placement unchanged — gets a client whose ``insert`` appends each block, pickled (values keep
their types: dates, NaN), to ``DIR/<pid>.blocks``; the test then inserts those blocks into chDB from one thread
(``python -m tests.deploy.chtool load``) and compares query results. The start-up check that
every table a flow writes exists (``main.check_start``) is answered from the shipped migrations.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO

from bytewax.dataflow import Dataflow

from plantstream.connectors import clickhouse as ch
from plantstream.flows import main


class CaptureClient:
    """Stands in for a clickhouse-connect client: records every insert, in order."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / f"{os.getpid()}.blocks"
        self._file: BinaryIO | None = None

    @property
    def _fh(self) -> BinaryIO:
        if self._file is None:  # a process that only checked the tables wrote nothing
            self._file = self._path.open("ab")
        return self._file

    def insert(self, table: str, data: list[list[Any]], column_names: list[str],
               settings: dict[str, Any] | None = None) -> None:
        block = {"table": table, "columns": column_names, "data": data, "settings": settings or {}}
        pickle.dump(block, self._fh)
        self._fh.flush()

    def raw_insert(self, table: str, column_names: list[str] | None, insert_block: bytes,
                   settings: dict[str, Any] | None = None, fmt: str | None = None) -> None:
        block = {"table": table, "raw": insert_block, "fmt": fmt, "settings": settings or {}}
        pickle.dump(block, self._fh)
        self._fh.flush()

    def query(self, sql: str, **_: Any) -> Any:
        """The one query a process sends before it starts: the tables of its database (those
        the shipped migrations create; the test migrates the database it compares)."""
        if "system.tables" not in sql:
            msg = f"the capture client answers only the start-up table check, not {sql!r}"
            raise NotImplementedError(msg)
        tables = sorted({name for mig in ch.load_migrations() for stmt in mig.statements
                         for name in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", stmt)})
        return SimpleNamespace(result_rows=[("plant", t) for t in tables])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def get_flow() -> Dataflow:
    capture = os.environ.get("PLANTSTREAM_TEST_CAPTURE")
    if capture:
        directory = Path(capture)

        def factory(cfg: Any, dsn: str | None = None) -> ch.ClientFactory:
            return lambda: CaptureClient(directory)

        ch.config_factory = factory  # type: ignore[assignment]
    return main.get_flow()

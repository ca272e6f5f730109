"""Printing result rows: a table for people, JSON or CSV for machines.

``--format table`` (default) prints a rich table that fits an 80-column terminal: a command's
default columns (:class:`View`), short headers, ratios as percentages, OEE coloured by the
shop-floor thresholds of KPI.md (green ≥ 90 %, yellow 80–90 %, red < 80 %). ``--columns a,b,c``
picks columns, ``--wide`` shows them all. Every value is printed literally: a machine id such as
``press-03[/bold]`` is text, never rich markup. ``--format json`` and ``--format csv`` carry every
column (or the ``--columns`` chosen) with raw values: ratios as fractions, times as RFC 3339 UTC.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from uuid import UUID

import orjson
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from plantstream.operators.report import oee_colour

FORMATS = ("table", "json", "csv")
_OEE_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red", "grey": "dim"}


def oee_style(v: Any) -> str:
    """The rich style of an OEE ratio: the shop-floor colour (KPI.md).

    >>> oee_style(0.91), oee_style(0.85), oee_style(0.5), oee_style(None)
    ('bold green', 'bold yellow', 'bold red', 'dim')
    """
    return _OEE_STYLE[oee_colour(None if v is None else float(v))]


@dataclass(frozen=True)
class Col:
    """How one column prints in a table: header, kind of value, optional style of a value."""

    header: str
    kind: str = "text"
    """``text``, ``int``, ``num`` (two decimals), ``min`` (one decimal), ``pct`` (a ratio), ``time``,
    ``raw`` (a number as it is)."""
    style: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class View:
    """A command's table: the columns shown by default and how each known column prints."""

    default: Sequence[str] = ()
    cols: Mapping[str, Col] = field(default_factory=dict)
    title: str | None = None


def json_value(v: Any) -> Any:
    """A value as JSON/CSV carries it: RFC 3339 UTC times, floats for decimals, no NaN."""
    if isinstance(v, dt.datetime):
        if v.tzinfo is None:  # chDB returns naive datetimes that are UTC
            v = v.replace(tzinfo=dt.UTC)
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="backslashreplace")
    if isinstance(v, UUID):
        return str(v)
    if isinstance(v, Mapping):
        return {str(k): json_value(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_value(x) for x in v]
    return v


def cell_text(v: Any, kind: str = "text") -> str:
    """A value as a table shows it.

    >>> cell_text(0.74791, "pct"), cell_text(None, "pct"), cell_text(1234.5, "min"), cell_text(2.0, "num")
    ('74.8%', '–', '1,234.5', '2.00')
    >>> cell_text(0.747915123), cell_text(1763791200000)
    ('0.747915', '1763791200000')
    >>> cell_text(dt.datetime(2026, 11, 22, 6, 0, 5), "time"), cell_text({"t": 1.234})
    ('2026-11-22 06:00:05', 't=1.23')
    """
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–" if kind in ("pct", "num", "min", "int") else ""
    if kind == "pct":
        return f"{float(v) * 100:.1f}%"
    if kind == "time" and isinstance(v, str):  # RFC 3339 text as the table shows times
        return v.replace("T", " ").removesuffix("Z")[:19]
    if isinstance(v, dt.datetime):
        if v.tzinfo is not None:
            v = v.astimezone(dt.UTC).replace(tzinfo=None)
        return v.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool):
        return "yes" if v else "no"
    if kind == "min" and isinstance(v, int | float | Decimal):
        return f"{float(v):,.1f}"
    if kind == "int" and isinstance(v, int | float | Decimal):
        return f"{round(float(v)):,}"
    if kind == "num" and isinstance(v, int | float | Decimal):
        return f"{float(v):,.2f}"
    if isinstance(v, float | Decimal):
        return f"{float(v):.6g}"
    if isinstance(v, Mapping):
        return " ".join(f"{k}={cell_text(x, 'num')}" for k, x in v.items())
    return str(v)


def pick_columns(columns: Sequence[str], view: View | None, *, fmt: str, selected: str | None,
                 wide: bool) -> list[str]:
    """The columns to print: ``--columns``, else all (``--wide``, JSON, CSV), else the view's default.

    >>> pick_columns(["a", "b", "c"], View(default=("c", "a")), fmt="table", selected=None, wide=False)
    ['c', 'a']
    >>> pick_columns(["a", "b", "c"], View(default=("c",)), fmt="json", selected=None, wide=False)
    ['a', 'b', 'c']
    >>> pick_columns(["a", "b", "c"], None, fmt="table", selected="b, a", wide=False)
    ['b', 'a']
    """
    if selected:
        chosen = [c.strip() for c in selected.split(",") if c.strip()]
        unknown = [c for c in chosen if c not in columns]
        if unknown:
            msg = f"--columns {', '.join(unknown)}: not a column here; choose from {', '.join(columns)}"
            raise typer.BadParameter(msg)
        return chosen
    if wide or fmt != "table" or view is None or not view.default:
        return list(columns)
    return [c for c in view.default if c in columns]


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        msg = f"--format {fmt!r}: choose table, json or csv"
        raise typer.BadParameter(msg)
    return fmt


def emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str = "table", *,
         view: View | None = None, selected: str | None = None, wide: bool = False,
         title: str | None = None) -> None:
    """Print ``rows`` (aligned with ``columns``) as a table, JSON array of objects or CSV."""
    check_format(fmt)
    names = pick_columns(columns, view, fmt=fmt, selected=selected, wide=wide)
    index = [list(columns).index(c) for c in names]
    picked = [[row[i] for i in index] for row in rows]
    if fmt == "json":
        data = [{c: json_value(v) for c, v in zip(names, row, strict=True)} for row in picked]
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in picked:
            writer.writerow([_csv_value(v) for v in row])
        return
    cols = view.cols if view else {}
    heading = title or (view.title if view else None)
    specs = [cols.get(name, Col(name, _kind_of(next((r[i] for r in picked if r[i] is not None), None))))
             for i, name in enumerate(names)]
    texts = [[Text(cell_text(v, spec.kind), style=spec.style(v) if spec.style else "")
              for v, spec in zip(row, specs, strict=True)] for row in picked]
    natural = [max([len(spec.header), *(t.cell_len for t in (r[i] for r in texts))])
               for i, spec in enumerate(specs)]
    console = Console()
    fixed = [spec.kind in ("int", "num", "min", "pct", "time", "raw") for spec in specs]
    limits: list[int | None] = [None] * len(names)
    room = console.width - _GAP * (len(names) - 1)
    if wide or selected:  # everything asked for is shown whole; the terminal wraps long lines
        console = Console(width=max(console.width, sum(natural) + _GAP * len(names)))
    elif sum(natural) > room:  # text columns share what the numbers leave, each at least its header
        limits = _text_limits(natural, fixed, [len(spec.header) for spec in specs], room)
    table = Table(title=Text(heading) if heading else None, box=box.SIMPLE_HEAD, show_edge=False,
                  padding=(0, 1, 0, 0), pad_edge=False)
    for spec, is_fixed, limit in zip(specs, fixed, limits, strict=True):
        table.add_column(Text(spec.header), justify="left" if spec.kind in ("text", "time") else "right",
                         min_width=len(spec.header), max_width=limit, no_wrap=is_fixed, overflow="fold")
    for row_texts in texts:
        table.add_row(*row_texts)
    console.print(table)


_GAP = 2
"""Space between two table columns: one of padding and SIMPLE_HEAD's blank rule; no edges."""


def _text_limits(natural: list[int], fixed: list[bool], floors: list[int], room: int) -> list[int | None]:
    """Widths for the text columns so that the row fits ``room``: the narrow keep theirs, the wide share.

    >>> _text_limits([10, 40, 6, 30], [False, False, True, False], [4, 7, 3, 6], 60)
    [10, 22, None, 22]
    """
    budget = room - sum(w for w, f in zip(natural, fixed, strict=True) if f)
    text = sorted((w, i) for i, (w, f) in enumerate(zip(natural, fixed, strict=True)) if not f)
    limits: list[int | None] = [None] * len(natural)
    for n, (w, i) in enumerate(text):
        share = budget // (len(text) - n) if len(text) > n else budget
        limits[i] = max(floors[i], min(w, share))
        budget -= limits[i] or 0
    return limits


def _kind_of(v: Any) -> str:
    """The kind of an unknown column from its first value: dates, numbers (right-aligned, whole) or text."""
    if isinstance(v, dt.date):
        return "time"
    if isinstance(v, int | float | Decimal) and not isinstance(v, bool):
        return "raw"
    return "text"


def _csv_value(v: Any) -> Any:
    v = json_value(v)
    if v is None:
        return ""
    if isinstance(v, dict | list):
        return orjson.dumps(v).decode()
    return v

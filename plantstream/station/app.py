"""The operator station: a Starlette app of server-rendered pages for the line's tablet.

Pages (docs/station.md): sign-in, the lines an operator may use, the line view (live through
server-sent events), a machine's stops of the shift with scrap entry, and a stop with the
reason tree, split and correction. ``/healthz``, ``/readyz`` (Kafka and ClickHouse) and
``/metrics`` as the other processes serve them.

One :class:`LineFeed` per line reads ClickHouse every ``station.refresh_s`` while at least one
tablet follows the line and renders the machines once; every tablet gets the same HTML.
Entries are validated against the config and ClickHouse before anything is sent
(:mod:`plantstream.station.model`), and accepted only when Kafka confirmed them
(:mod:`plantstream.station.sender`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from plantstream.connectors.metrics import Metrics, Sample
from plantstream.schemas.config import PlantConfig
from plantstream.schemas.station_config import Operator
from plantstream.station import auth
from plantstream.station.data import StationData
from plantstream.station.model import (
    Entry,
    EntryRefused,
    Stop,
    last_sent_ts,
    parse_quantity,
    reason_entry,
    reason_of,
    reason_tree,
    scrap_entry,
    scrap_ts,
    split_correction,
    split_entry,
)
from plantstream.station.sender import EntrySender

log = logging.getLogger("plantstream.station")

_HERE = resources.files("plantstream.station")
STATES = {
    "running": "run",
    "idle": "stop",
    "fault": "stop",
    "setup": "setup",
    "planned_stop": "planned",
    "off": "off",
}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ms_or_none(value: Any) -> int | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    return int(value) if ok else None


class LineFeed:
    """The live snapshot of one line, shared by every tablet that follows it."""

    def __init__(self, station: Station, line: str) -> None:
        self.station = station
        self.line = line
        self.html = ""
        self.version = 0
        self.updated = 0.0
        self.subscribers = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        html = await run_in_threadpool(self.station.render_machines, self.line)
        self.updated = time.monotonic()
        if html != self.html:
            async with self._changed:
                self.html = html
                self.version += 1
                self._changed.notify_all()

    async def current(self) -> str:
        if not self.html or time.monotonic() - self.updated > self.station.cfg.station.refresh_s:
            await self.refresh()
        return self.html

    async def _loop(self) -> None:
        period = self.station.cfg.station.refresh_s
        while self.subscribers > 0:
            t0 = time.monotonic()
            try:
                await self.refresh()
            except Exception as exc:  # ClickHouse away: keep the last snapshot, try again
                log.warning("line %s: cannot refresh (%s)", self.line, exc)
            await asyncio.sleep(max(0.05, period - (time.monotonic() - t0)))
        self._task = None

    async def follow(self, request: Request, until: float) -> AsyncIterator[dict[str, Any]]:
        """The line's HTML whenever it changes, until the client goes or its session ends at
        ``until`` (epoch s): then an ``expired`` event (the page reloads, which signs in again)."""
        self.subscribers += 1
        if self._task is None:
            self._task = asyncio.create_task(self._loop())
        try:
            seen = -1
            while True:
                if time.time() >= until:
                    yield {"event": "expired", "data": "/signin"}
                    break
                if seen != self.version:
                    seen = self.version
                    yield {"event": "machines", "data": self.html.replace("\n", " ")}
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        wait = min(15.0, max(0.05, until - time.time()))
                        await asyncio.wait_for(self._changed.wait(), timeout=wait)
                if await request.is_disconnected():
                    break
        finally:
            self.subscribers -= 1


class Station:
    """Everything the pages share: config, operators, ClickHouse reads, the Kafka sender."""

    def __init__(self, cfg: PlantConfig, data: StationData, sender: EntrySender) -> None:
        self.cfg = cfg
        self.data = data
        self.sender = sender
        self.ops = auth.operators(cfg.station)
        self.tz = ZoneInfo(cfg.timezone)
        self.lines = {line.id: line for line in cfg.lines}
        self.feeds = {line: LineFeed(self, line) for line in self.lines}
        self.templates = Jinja2Templates(directory=str(_HERE / "templates"))
        self.templates.env.filters["clock"] = self.clock
        self.templates.env.filters["minutes"] = _minutes
        self.limiter = MovingWindowRateLimiter(MemoryStorage())
        self.signin_rate = parse(cfg.station.signin_rate)
        self.entry_rate = parse(cfg.station.entry_rate)
        self.recent: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
        """Entries this station sent, per stop, until ClickHouse has them (``operator_entries``)."""
        self.metrics = Metrics("station")
        self.metrics.add(self._samples)
        self.refused_by_kind: dict[str, int] = {}

    # -- helpers ------------------------------------------------------------------------------------

    def clock(self, ms: int | None, fmt: str = "%H:%M:%S") -> str:
        if ms is None:
            return "–"
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone(self.tz).strftime(fmt)

    def oee_class(self, oee: float | None) -> str:
        rule = self.cfg.alerts.oee
        if oee is None:
            return "none"
        if oee >= rule.warning:
            return "good"
        return "warn" if oee >= rule.critical else "bad"

    def _samples(self) -> list[Sample]:
        out = [
            Sample(
                "gauge",
                "plantstream_station_kafka_ok",
                "1 while Kafka confirms entries (else read-only).",
                {},
                1 if self.sender.ok else 0,
            ),
            Sample(
                "counter",
                "plantstream_station_entries_accepted",
                "Entries Kafka confirmed.",
                {},
                self.sender.accepted,
            ),
            Sample(
                "gauge",
                "plantstream_station_live_clients",
                "Tablets following a line view.",
                {},
                sum(f.subscribers for f in self.feeds.values()),
            ),
        ]
        for kind, n in sorted(self.refused_by_kind.items()):
            out.append(
                Sample(
                    "counter",
                    "plantstream_station_entries_refused",
                    "Entries refused, by why (validation, csrf, rate, kafka).",
                    {"reason": kind},
                    n,
                )
            )
        return out

    def refused(self, kind: str) -> None:
        self.refused_by_kind[kind] = self.refused_by_kind.get(kind, 0) + 1

    # -- the line view ------------------------------------------------------------------------------

    def machines(self, line: str) -> dict[str, Any]:
        """The line's machines with state, open stop, shift OEE, part and work order."""
        status = {str(r["machine"]): r for r in self.data.line_status(line)}
        seen = [int(r["last_seen"]) for r in status.values() if r["last_seen"]]
        ref = max(seen) if seen else _now_ms()  # the line's event time (a replayed or simulated line too)
        start, _, shift = self.data.shift_window(ref)
        oee = self.data.shift_oee(line, start, ref + 1)
        cards = []
        for m in self.lines[line].machines:
            st = status.get(m.id, {})
            row = oee.get(m.id, {})
            since = st.get("downtime_since") if st.get("downtime_open") else None
            value = row.get("oee")
            cards.append(
                {
                    "id": m.id,
                    "type": m.type,
                    "state": st.get("state") or "unknown",
                    "state_class": STATES.get(str(st.get("state") or ""), "unknown"),
                    "stop_since": since,
                    "stop_min": (ref - int(since)) / 60_000 if since else None,
                    "stop_state": st.get("downtime_state", ""),
                    "fault_code": st.get("fault_code", ""),
                    "part": st.get("part_number", ""),
                    "work_order": st.get("work_order", ""),
                    "oee": value,
                    "oee_class": self.oee_class(value),
                    "availability": row.get("availability"),
                    "performance": row.get("performance"),
                    "quality": row.get("quality"),
                }
            )
        return {"cards": cards, "ref": ref, "shift": shift, "shift_start": start}

    def render_machines(self, line: str) -> str:
        ctx = self.machines(line)
        return self.templates.get_template("_machines.html").render(**ctx, line=line, station=self)


def _duration(seconds: float) -> str:
    """``28800`` → ``8 h``, ``90`` → ``1.5 min``, ``4`` → ``4 s``."""
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _minutes(value: float | None) -> str:
    if value is None:
        return "–"
    total = int(value * 60)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# -- sessions and CSRF ----------------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(request: Request, form: Mapping[str, Any]) -> None:
    expected = request.session.get("csrf")
    sent = form.get("csrf")
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        msg = ("this form has expired or was not sent by the station (CSRF token missing or wrong); "
               "reload the page")
        raise EntryRefused(msg, 403)


SESSION_ENDED = (
    "you are not signed in: your session has ended (a session lasts {ttl} after sign-in) or the station "
    "restarted; sign in again and repeat the entry"
)


def session_end(request: Request, station: Station) -> float:
    """When the request's session ends (epoch s): ``station.session_ttl_s`` after sign-in,
    however active the operator was since (no sliding expiry)."""
    return float(request.session.get("signed_in_at", 0)) + station.cfg.station.session_ttl_s


def operator_of(request: Request, station: Station) -> Operator | None:
    who = request.session.get("operator")
    if not who or time.time() >= session_end(request, station):
        if who:
            request.session.pop("operator", None)
            request.session["flash"] = "Your session has expired: please sign in again."
        return None
    return station.ops.get(str(who))


def client_of(request: Request) -> str:
    return request.client.host if request.client else "?"


# -- the app --------------------------------------------------------------------------------------


def create_app(station: Station, *, session_secret: str | None = None, https: bool = False) -> Starlette:
    """The station's ASGI app (``plantstream station`` serves it with uvicorn)."""
    cfg = station.cfg
    templates = station.templates

    def page(request: Request, name: str, code: int = 200, **ctx: Any) -> Response:
        op = operator_of(request, station)
        flash = request.session.pop("flash", None)
        return templates.TemplateResponse(
            request,
            name,
            {
                "op": op,
                "station": station,
                "csrf": csrf_token(request),
                "flash": flash,
                "readonly": not station.sender.ok,
                "readonly_reason": station.sender.reason,
                **ctx,
            },
            status_code=code,
        )

    def refusal(request: Request, exc: EntryRefused, back: str) -> Response:
        kind = {401: "session", 403: "forbidden", 429: "rate", 503: "kafka"}.get(exc.status, "validation")
        station.refused(kind)
        return page(request, "refused.html", exc.status, message=str(exc), back=back)

    def require(request: Request) -> Operator:
        op = operator_of(request, station)
        if op is None:
            raise _SignIn
        return op

    def machine_for(op: Operator, machine: str) -> tuple[str, str]:
        if not cfg.configured(machine):
            msg = f"unknown machine {machine!r}: it is not in the plant config"
            raise EntryRefused(msg, 404)
        info = cfg.machine(machine)
        if not op.may_use(info.line):
            msg = f"machine {machine} belongs to line {info.line}, which {op.name} may not use"
            raise EntryRefused(msg, 403)
        return info.line, info.site

    def line_for(op: Operator, line: str) -> None:
        if line not in station.lines:
            msg = f"unknown line {line!r}: it is not in the plant config"
            raise EntryRefused(msg, 404)
        if not op.may_use(line):
            msg = f"line {line} is not one {op.name} may use"
            raise EntryRefused(msg, 403)

    async def form_of(request: Request) -> dict[str, Any]:
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        check_csrf(request, data)
        return data

    # -- sign-in ---------------------------------------------------------------------------------

    async def index(request: Request) -> Response:
        op = operator_of(request, station)
        if op is None:
            return RedirectResponse("/signin", 303)
        lines = [line for line in station.lines if op.may_use(line)]
        if len(lines) == 1:
            return RedirectResponse(f"/line/{lines[0]}", 303)
        return page(request, "lines.html", lines=lines)

    async def signin(request: Request) -> Response:
        if request.method == "GET":
            return page(request, "signin.html", operators=sorted(station.ops.values(), key=lambda o: o.name))
        try:
            form = await form_of(request)
            if not station.limiter.hit(station.signin_rate, "signin", client_of(request)):
                msg = "too many sign-in attempts from this tablet; wait a minute and try again"
                raise EntryRefused(msg, 429)
        except EntryRefused as exc:
            return refusal(request, exc, "/signin")
        op = await run_in_threadpool(
            auth.sign_in, station.ops, form.get("operator", ""), form.get("secret", "")
        )
        if op is None:
            station.refused("signin")
            return page(
                request,
                "signin.html",
                401,
                error="Badge or PIN not recognised.",
                operators=sorted(station.ops.values(), key=lambda o: o.name),
            )
        request.session.clear()
        request.session.update(
            {"operator": op.id, "signed_in_at": time.time(), "csrf": secrets.token_urlsafe(32)}
        )
        log.info("signed in: %s (%s) from %s", op.id, op.role, client_of(request))
        return RedirectResponse("/", 303)

    async def signout(request: Request) -> Response:
        try:
            await form_of(request)
        except EntryRefused as exc:
            return refusal(request, exc, "/")
        request.session.clear()
        return RedirectResponse("/signin", 303)

    # -- pages -----------------------------------------------------------------------------------

    async def line_view(request: Request) -> Response:
        line = request.path_params["line"]
        try:
            op = require(request)
            line_for(op, line)
        except EntryRefused as exc:
            return refusal(request, exc, "/")
        html = await station.feeds[line].current()
        return page(request, "line.html", line=line, machines_html=html)

    async def line_events(request: Request) -> Response:
        line = request.path_params["line"]
        op = operator_of(request, station)
        if op is None:
            return Response("sign in first", 401)
        if line not in station.lines or not op.may_use(line):
            return Response("not your line", 403)
        until = session_end(request, station)
        return EventSourceResponse(station.feeds[line].follow(request, until), ping=15)

    async def line_fragment(request: Request) -> Response:
        line = request.path_params["line"]
        op = operator_of(request, station)
        if op is None:
            return Response("sign in first", 401)
        if line not in station.lines or not op.may_use(line):
            return Response("not your line", 403)
        return Response(await station.feeds[line].current(), media_type="text/html")

    def stop_list(machine: str) -> dict[str, Any]:
        status = station.data.line_status(cfg.machine(machine).line)
        st = next((r for r in status if r["machine"] == machine), {})
        ref = int(st["last_seen"]) if st.get("last_seen") else _now_ms()
        start, _, shift = station.data.shift_window(ref)
        stops = station.data.stops(machine, start)
        stops.sort(key=lambda s: (s.explained, -s.start))
        return {
            "stops": stops,
            "shift": shift,
            "status": st,
            "ref": ref,
            "scrap_reasons": _scrap_reasons(cfg),
        }

    async def machine_view(request: Request) -> Response:
        machine = request.path_params["machine"]
        try:
            op = require(request)
            line, _ = machine_for(op, machine)
        except EntryRefused as exc:
            return refusal(request, exc, "/")
        ctx = await run_in_threadpool(stop_list, machine)
        return page(request, "machine.html", machine=machine, line=line, **ctx)

    async def stops_fragment(request: Request) -> Response:
        machine = request.path_params["machine"]
        op = operator_of(request, station)
        if op is None:
            return Response("sign in first", 401)
        if not cfg.configured(machine) or not op.may_use(cfg.machine(machine).line):
            return Response("not your machine", 403)
        ctx = await run_in_threadpool(stop_list, machine)
        return templates.TemplateResponse(
            request, "_stops.html", {"machine": machine, "station": station, **ctx}
        )

    def stop_context(machine: str, start: int) -> dict[str, Any]:
        stop = station.data.stop(machine, start)
        if stop is None:
            msg = f"machine {machine} has no stop that started at {station.clock(start, '%Y-%m-%d %H:%M:%S')}"
            raise EntryRefused(msg, 404)
        tree = reason_tree(cfg, station.data.reason_uses())
        entries = station.data.entries(machine, start)
        stored = {e["entry_id"] for e in entries}
        mine = station.recent.get((machine, start), [])
        if mine and all(e["entry_id"] in stored for e in mine):
            station.recent.pop((machine, start), None)  # ClickHouse has them all now
        entries += [e for e in mine if e["entry_id"] not in stored]
        entries.sort(key=lambda e: e["ts"])
        return {"stop": stop, "tree": tree, "entries": entries}

    async def stop_view(request: Request) -> Response:
        machine = request.path_params["machine"]
        start = request.path_params["start"]
        try:
            op = require(request)
            line, _ = machine_for(op, machine)
            ctx = await run_in_threadpool(stop_context, machine, start)
        except EntryRefused as exc:
            return refusal(request, exc, f"/machine/{machine}" if cfg.configured(machine) else "/")
        return page(request, "stop.html", machine=machine, line=line, **ctx)

    async def stop_row(request: Request) -> Response:
        machine, start = request.path_params["machine"], request.path_params["start"]
        op = operator_of(request, station)
        if op is None:
            return Response("sign in first", 401)
        if not cfg.configured(machine) or not op.may_use(cfg.machine(machine).line):
            return Response("not your machine", 403)
        stop = await run_in_threadpool(station.data.stop, machine, start)
        return templates.TemplateResponse(request, "_stop_row.html", {"stop": stop, "station": station})

    # -- entries ---------------------------------------------------------------------------------

    async def enter(
        request: Request,
        action: str,
        build: Callable[[Operator, dict[str, Any], Entry], Entry],
        back: str,
        done: str,
    ) -> Response:
        machine = request.path_params["machine"]
        try:
            op = operator_of(request, station)
            if op is None:  # nothing is sent: the operator signs in again and repeats the entry
                raise EntryRefused(SESSION_ENDED.format(ttl=_duration(cfg.station.session_ttl_s)), 401)
            form = await form_of(request)
            line, site = machine_for(op, machine)
            if not station.limiter.hit(station.entry_rate, "entry", op.id):
                msg = f"too many entries by {op.name} in a short time; wait a minute and try again"
                raise EntryRefused(msg, 429)
            entry = Entry(
                action, machine, line, site, op.id, op.name, op.role, _now_ms(), client=client_of(request)
            )
            entry = await run_in_threadpool(build, op, form, entry)
            await run_in_threadpool(station.sender.send, entry)
        except EntryRefused as exc:
            return refusal(request, exc, "/signin" if exc.status == 401 else back)
        if len(station.recent) > 10_000:
            station.recent.clear()
        kept = station.recent.setdefault((machine, entry.stop_start), [])
        kept.append(entry.audit())
        if entry.stop_start is None:
            del kept[:-5]  # scrap (no stop): only the latest entries' timestamps matter
        log.info(
            "entry %s by %s: %s %s %s → %s", entry.entry_id, op.id, action, machine, entry.before, entry.after
        )
        request.session["flash"] = done.format(after=entry.after, quantity=entry.quantity)
        return RedirectResponse(back, 303)

    def authorize(op: Operator, entries: list[dict[str, Any]], split_at: int | None = None) -> int:
        """Refuse an operator changing another's entry on the same part of the stop (``split_at``
        None: its first part); returns how many entries that part has had."""
        mine = [e for e in entries if e["split_at"] == split_at]
        others = sorted(
            {str(e["operator_name"] or e["operator_id"]) for e in mine if e["operator_id"] != op.id}
        )
        if others and op.role != "supervisor":
            msg = f"this was entered by {', '.join(others)}: only a supervisor may correct it"
            raise EntryRefused(msg, 403)
        return len(mine)

    async def post_reason(request: Request) -> Response:
        machine, start = request.path_params["machine"], request.path_params["start"]

        def build(op: Operator, form: dict[str, Any], entry: Entry) -> Entry:
            choice = reason_of(cfg, form.get("code", ""))
            ctx = stop_context(machine, start)
            stop: Stop = ctx["stop"]
            entry.action = "correct" if authorize(op, ctx["entries"]) else "reason"
            nxt = station.data.next_stop_start(machine, start)
            previous = last_sent_ts(ctx["entries"])
            return reason_entry(entry, stop, choice, len(ctx["entries"]), nxt, previous)

        return await enter(
            request,
            "reason",
            build,
            f"/machine/{machine}/stop/{start}",
            "Saved: reason {after}. The stop is restated in a few seconds.",
        )

    async def post_split(request: Request) -> Response:
        machine, start = request.path_params["machine"], request.path_params["start"]

        def build(op: Operator, form: dict[str, Any], entry: Entry) -> Entry:
            choice = reason_of(cfg, form.get("code", ""))
            ctx = stop_context(machine, start)
            stop: Stop = ctx["stop"]
            at = _split_time(station, stop, form.get("at", ""))
            horizon = start + int(stop.duration_s * 1000)
            return split_entry(entry, stop, at, choice, horizon)

        return await enter(
            request,
            "split",
            build,
            f"/machine/{machine}/stop/{start}",
            "Saved: the stop is split; the part after it is {after}.",
        )

    async def post_segment(request: Request) -> Response:
        machine, start = request.path_params["machine"], request.path_params["start"]
        point = request.path_params["point"]

        def build(op: Operator, form: dict[str, Any], entry: Entry) -> Entry:
            choice = reason_of(cfg, form.get("code", ""))
            ctx = stop_context(machine, start)
            n = authorize(op, ctx["entries"], point)
            return split_correction(entry, ctx["stop"], point, choice, n)

        return await enter(
            request,
            "correct",
            build,
            f"/machine/{machine}/stop/{start}",
            "Saved: that part of the stop is now {after}.",
        )

    async def post_scrap(request: Request) -> Response:
        machine = request.path_params["machine"]

        def build(op: Operator, form: dict[str, Any], entry: Entry) -> Entry:
            quantity = parse_quantity(form.get("quantity", ""))
            status = next((r for r in station.data.line_status(entry.line) if r["machine"] == machine), {})
            entry.work_order = str(status.get("work_order") or "")
            previous = station.data.last_scrap_reason(machine)
            sent = last_sent_ts(station.data.scrap_entries(machine) + station.recent.get((machine, None), []))
            at = scrap_ts(_ms_or_none(status.get("last_seen")), sent, entry.now_ms)
            return scrap_entry(entry, at, quantity, form.get("reason", ""), previous, _scrap_reasons(cfg))

        return await enter(
            request, "scrap", build, f"/machine/{machine}", "Saved: {quantity:g} rejects, reason {after}."
        )

    # -- probes ----------------------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        return JSONResponse({"live": True, "ready": station.sender.ok})

    async def readyz(request: Request) -> Response:
        # Ready = the tablets can be served: pages come from ClickHouse. Without Kafka the station
        # still serves them, read-only with its banner (entries refused), so it stays in the Service.
        ch_ok = await run_in_threadpool(station.data.ping)
        body = {
            "live": True,
            "ready": ch_ok,
            "read_only": not station.sender.ok,
            "kafka": station.sender.ok,
            "kafka_reason": station.sender.reason,
            "clickhouse": ch_ok,
            "clickhouse_error": "" if ch_ok else station.data.last_error,
        }
        return JSONResponse(body, 200 if body["ready"] else 503)

    async def metrics(request: Request) -> Response:
        body, ctype = station.metrics.render()
        return Response(body, media_type=ctype)

    routes = [
        Route("/", index),
        Route("/signin", signin, methods=["GET", "POST"]),
        Route("/signout", signout, methods=["POST"]),
        Route("/line/{line}", line_view),
        Route("/line/{line}/events", line_events),
        Route("/line/{line}/machines", line_fragment),
        Route("/machine/{machine}", machine_view),
        Route("/machine/{machine}/stops", stops_fragment),
        Route("/machine/{machine}/scrap", post_scrap, methods=["POST"]),
        Route("/machine/{machine}/stop/{start:int}", stop_view),
        Route("/machine/{machine}/stop/{start:int}/row", stop_row),
        Route("/machine/{machine}/stop/{start:int}/reason", post_reason, methods=["POST"]),
        Route("/machine/{machine}/stop/{start:int}/split", post_split, methods=["POST"]),
        Route("/machine/{machine}/stop/{start:int}/segment/{point:int}", post_segment, methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static"),
    ]
    secret = session_secret or secrets.token_urlsafe(48)
    middleware = [
        Middleware(_SecurityHeaders),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="plantstream_station",
            # The session ends session_ttl_s after sign-in (operator_of, signed_in_at is signed);
            # the cookie outlives it by a day so that the tablet can say why it must sign in again.
            max_age=int(cfg.station.session_ttl_s) + 86_400,
            same_site="strict",
            https_only=https,
        ),
    ]
    return Starlette(routes=routes, middleware=middleware, exception_handlers={_SignIn: _to_signin})


class _SignIn(Exception):
    """Raised by a page that needs a signed-in operator."""


async def _to_signin(request: Request, exc: Exception) -> Response:
    return RedirectResponse("/signin", 303)


class _SecurityHeaders:
    """Pages only from the station itself: no inline script, no framing, no sniffing."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (
                        b"content-security-policy",
                        b"default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
                        b"form-action 'self'",
                    ),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store"),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


def _scrap_reasons(cfg: PlantConfig) -> list[str]:
    """The scrap reasons an operator can pick: ``scrap.reasons`` and ``scrap.startup_reasons``."""
    return sorted({*cfg.scrap.reasons, *cfg.scrap.startup_reasons})


def _split_time(station: Station, stop: Stop, text: str) -> int:
    """A split time typed as local ``HH:MM[:SS]`` on the stop's day(s) → epoch ms inside the stop."""
    text = text.strip()
    try:
        parts = [int(p) for p in text.split(":")]
        if len(parts) == 2:
            parts.append(0)
        h, m, s = parts
        if not (0 <= h < 24 and 0 <= m < 60 and 0 <= s < 60):
            raise ValueError
    except ValueError:
        msg = f"the split time must be a time of day HH:MM:SS, got {text!r}"
        raise EntryRefused(msg) from None
    start_local = datetime.fromtimestamp(stop.start / 1000, UTC).astimezone(station.tz)
    for day_offset in (0, 1):
        day = start_local.date().toordinal() + day_offset
        local = datetime.fromordinal(day).replace(hour=h, minute=m, second=s, tzinfo=station.tz)
        ms = int(local.timestamp() * 1000)
        if ms > stop.start:
            return ms
    return stop.start  # not inside: split_entry refuses it

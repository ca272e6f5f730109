"""``plantstream report daily`` on a simulated PLC day, rendered by headless Chromium and read by OCR.

Two 8-hour shifts of the PLC simulator (``simulators/plc.py``), with a bearing wear
injected on one machine, go through every flow via ``replay`` into a per-test chDB database.
The report's numbers are checked against the simulator's ground truth — good and reject counts,
downtime minutes and events by reason, rejects by reason with costs from a work-order file,
planned and run minutes — and against the KPI definitions (A × P × Q from the day's sums, the
colour thresholds). Then Chromium renders the HTML file to a PNG, which must have the requested
size, not be blank, and show the headline numbers (plant OEE, good parts, rejects, downtime
minutes, scrap cost) when Tesseract reads its pixels.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import plantstream.cli.report
from plantstream.cli.main import app
from plantstream.flows.replay import replay
from plantstream.operators.report import DailyReport, OeeRow, num, oee_colour, oee_figure, pct
from plantstream.schemas.config import build_config
from plantstream.simulators import plc

T0 = 1_763_791_200_000  # 2025-11-22T06:00Z, a Saturday
DAY = dt.date(2025, 11, 22)
SHIFT_MS = 8 * 3_600_000
BREAKS_MIN = 45 + 30
MATERIAL = {"P-100": 2.5, "P-200": 0.75, "P-300": 4.125}
LABOR_RATE, LABOR_S = 36.0, 2.0
CONFIG: dict[str, Any] = {
    "site": "plant-a",
    "timezone": "UTC",
    "shifts": [{"name": "day", "start": "06:00", "end": "14:00", "days": ["sat"],
                "breaks": [{"start": "09:00", "minutes": 15}, {"start": "11:30", "minutes": 30}]},
               {"name": "late", "start": "14:00", "end": "22:00", "days": ["sat"],
                "breaks": [{"start": "18:00", "minutes": 30}]}],
    "microstop_threshold_s": 120,
    "lateness": {"allowed_lateness_s": 60},
    "losses": plc.losses_config(),
}
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars")


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is needed for the report screenshot test: apt-get install -y chromium (see .ci/run)"
    return exe


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 2400) -> None:
    """Render ``html`` with headless Chromium into ``png`` (a fresh profile each time)."""
    with tempfile.TemporaryDirectory() as profile:
        res = subprocess.run([_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                              f"--screenshot={png}", f"--window-size={width},{height}", html.as_uri()],
                             capture_output=True, text=True, timeout=120, check=False)
    assert png.is_file(), res.stderr[-2000:]


def ocr(png: Path, rows: tuple[int, int] | None = None, *, scale: int = 1, psm: int = 11) -> str:
    """Tesseract's reading of the rendered pixels: the band ``rows`` (y from, to), upscaled.

    ``psm`` 11 (sparse text) reads the big headline tiles; 6 (one block) reads table rows.
    """
    exe = shutil.which("tesseract")
    assert exe, "tesseract is needed for the report screenshot test: apt-get install -y tesseract-ocr"
    src = png
    if rows is not None or scale != 1:
        src = png.with_name(f"{png.stem}_{rows}_x{scale}.png")
        with Image.open(png) as im:
            y0, y1 = rows or (0, im.height)
            part = im.convert("L").crop((0, y0, im.width, y1))
            part.resize((part.width * scale, part.height * scale), Image.Resampling.LANCZOS).save(src)
    res = subprocess.run([exe, str(src), "stdout", "--psm", str(psm)], capture_output=True, text=True,
                         timeout=120, check=True)
    return res.stdout


@pytest.fixture(scope="module")
def simulated_day(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, plc.GroundTruth, Path]:
    """The replay file of one simulated day, its ground truth and a work-order cost file."""
    tmp = tmp_path_factory.mktemp("day")
    config = build_config(CONFIG, {})
    wear = plc.AnomalySpec("press-01", "bearing_wear", T0 + 9 * 3_600_000, 3 * 3_600_000, peak=12.0)
    line = plc.PlcLine(seed=7, machines=3, start_ms=T0 - 1_800_000, config=config, sample_ms=60_000,
                       anomalies=[wear])
    data = tmp / "day.jsonl"
    line.write_replay_file(data, T0 + 2 * SHIFT_MS + 1_800_000)
    truth = line.ground_truth()
    wo_file = tmp / "workorders.jsonl"
    wo_file.write_bytes(b"".join(orjson.dumps({
        "work_order": w.work_order, "part_number": w.part_number, "material_cost": MATERIAL[w.part_number],
        "labor_rate": LABOR_RATE, "labor_s_per_unit": LABOR_S, "currency": "EUR"}) + b"\n"
        for w in truth.work_orders))
    return data, truth, wo_file


def expected(truth: plc.GroundTruth) -> dict[str, Any]:
    """The day's figures computed from the simulator's ground truth and the KPI definitions."""
    machines: dict[str, dict[str, float]] = {}
    for m in truth.machines:
        st = truth.state_ms(m, T0, T0 + 2 * SHIFT_MS)
        planned = (st.get("running", 0) + st.get("idle", 0) + st.get("fault", 0) + st.get("setup", 0)) / 60_000
        micro = sum(s.duration_ms for s in truth.states if s.machine == m and s.microstop) / 60_000
        run = st.get("running", 0) / 60_000 + micro
        ideal = sum(w.ideal_cycle_time_ms * (w.good + w.reject) for w in truth.work_orders
                    if w.machine == m) / 60_000
        good, reject = truth.counts[m]["good"], truth.counts[m]["reject"]
        machines[m] = {"planned": planned, "run": run, "ideal": ideal, "good": good, "reject": reject}
    s = {k: sum(v[k] for v in machines.values()) for k in ("planned", "run", "ideal", "good", "reject")}
    a, p, q = s["run"] / s["planned"], s["ideal"] / s["run"], s["good"] / (s["good"] + s["reject"])
    downtime: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for iv in truth.downtime():
        if not iv.microstop:
            downtime[iv.reason][0] += 1
            downtime[iv.reason][1] += iv.duration_ms / 60_000
    cost = {w.work_order: MATERIAL[w.part_number] + LABOR_RATE * LABOR_S / 3600 for w in truth.work_orders}
    scrap: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for sc in truth.scrap:
        scrap[sc.reason][0] += sc.quantity
        scrap[sc.reason][1] += sc.quantity * cost[sc.work_order]
    return {"machines": machines, "sums": s, "a": a, "p": p, "q": q, "oee": a * p * q,
            "downtime": dict(downtime), "scrap": dict(scrap)}


@pytest.mark.integration
def test_daily_report_matches_the_plc_ground_truth_and_chromium_shows_the_key_numbers(
    simulated_day: tuple[Path, plc.GroundTruth, Path], tmp_path: Path, ch_dsn: str, ch_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, truth, wo_file = simulated_day
    monkeypatch.chdir(tmp_path)
    cfg_dict = CONFIG | {"clickhouse": {"database": ch_db}, "scrap": {"workorders_file": str(wo_file)}}
    cfg_path = tmp_path / "plant.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_dict))
    summary = replay(data, build_config(cfg_dict, {}), dsn=ch_dsn, database=ch_db)
    assert summary.deadlettered == 0

    out = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["report", "daily", "--date", DAY.isoformat(), "--out", str(out),
                                   "--config", str(cfg_path), "--clickhouse", ch_dsn])
    assert res.exit_code == 0, res.output
    report: DailyReport = plantstream.cli.report.write_daily_report(
        tmp_path / "again.html", day=DAY, clickhouse_dsn=ch_dsn, config=cfg_path)
    want = expected(truth)

    # the data: counts exact, minutes within 0.1 %, ratios from the day's sums (A × P × Q)
    assert report.plant is not None
    plant = report.plant
    assert (plant.good, plant.reject) == (want["sums"]["good"], want["sums"]["reject"])
    assert plant.planned_min == pytest.approx(3 * (2 * 8 * 60 - BREAKS_MIN), rel=1e-3)
    assert plant.planned_min == pytest.approx(want["sums"]["planned"], rel=1e-3)
    assert plant.run_min == pytest.approx(want["sums"]["run"], rel=1e-3)
    for got, key in ((plant.availability, "a"), (plant.performance, "p"), (plant.quality, "q"),
                     (plant.oee, "oee")):
        assert got == pytest.approx(want[key], rel=2e-3), key
    per_machine = {m.name: m for m in report.machines}
    assert set(per_machine) == set(truth.machines)
    for name, w in want["machines"].items():
        m = per_machine[name]
        assert (m.good, m.reject) == (w["good"], w["reject"])
        assert m.availability == pytest.approx(w["run"] / w["planned"], rel=2e-3)
        assert m.quality == pytest.approx(w["good"] / (w["good"] + w["reject"]), rel=1e-12)
        assert m.oee == pytest.approx(w["run"] / w["planned"] * w["ideal"] / w["run"]
                                      * w["good"] / (w["good"] + w["reject"]), rel=2e-3)
    # a plant ratio is not the average of the machines' ratios (they differ here)
    assert abs(plant.oee - sum(m.oee or 0 for m in report.machines) / 3) > 1e-4  # type: ignore[operator]

    got_downtime = {c.reason: [c.events, c.minutes] for c in report.downtime}
    assert set(got_downtime) == set(want["downtime"]) and len(got_downtime) >= 4
    for reason, (events, minutes) in want["downtime"].items():
        assert got_downtime[reason][0] == events, reason
        assert got_downtime[reason][1] == pytest.approx(minutes, abs=1e-6), reason
    assert [c.minutes for c in report.downtime] == sorted((c.minutes for c in report.downtime), reverse=True)
    n_micro = sum(1 for iv in truth.downtime() if iv.microstop)
    assert report.small_stops[0] == n_micro

    got_scrap = {s.reason: [s.quantity, s.cost] for s in report.scrap}
    assert set(got_scrap) == set(want["scrap"])
    for reason, (qty, cost) in want["scrap"].items():
        assert got_scrap[reason][0] == qty
        assert got_scrap[reason][1] == pytest.approx(cost, rel=1e-9)
    assert report.currency == "EUR"
    # the injected bearing wear on press-01 (15:00–18:00) is among the day's anomalies
    [wear] = truth.anomalies
    assert wear.zone_c_ms, "the wear reaches ISO 10816 zone C"
    iso = [a for a in report.anomalies if a.machine == "press-01" and a.model == "iso10816"]
    assert iso, report.anomalies
    # the ISO zone-C episode opens within two samples (1 min each) of the true crossing
    assert abs(iso[0].start_ms - wear.zone_c_ms) <= 120_000, (iso[0], wear)

    # the file: self-contained (no external resource), charts embedded, same as the CLI wrote
    html = out.read_text(encoding="utf-8")
    assert html == (tmp_path / "again.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//|file:)""", html)
    assert "http://" not in html and "https://" not in html
    assert html.count('src="data:image/png;base64,') == 3
    colour = {"green": "#1b7f3b", "yellow": "#f2c200", "red": "#c62828"}[oee_colour(want["oee"])]
    assert re.search(rf'<div class="tile" style="background:{colour};[^"]*"><div class="k">Plant OEE', html)

    # what Chromium rendered: size, not blank, and the headline numbers in the pixels
    png = tmp_path / "report.png"
    screenshot(out, png)
    shutil.copy(png, Path(tempfile.gettempdir()) / "plantstream_daily_report.png")  # for a human look
    shutil.copy(out, Path(tempfile.gettempdir()) / "plantstream_daily_report.html")
    with Image.open(png) as im:
        assert im.size == (1280, 2400)
        grey = im.convert("L")
        hist = grey.histogram()
        dark = sum(hist[:128]) / (im.width * im.height)
        assert 0.01 < dark < 0.6, dark
        colours = len(im.convert("RGB").getcolors(1 << 24) or [])
        assert colours > 50  # text, tables and the charts' colours
    # the headline tiles (the top of the page, large type): each number a token of its own
    tiles = ocr(png, (0, 460), scale=2)
    tokens = set(tiles.split())
    headline = {
        "plant OEE": pct(want["oee"]).split()[0],
        "good parts": num(want["sums"]["good"]),
        "rejects": num(want["sums"]["reject"]),
        "downtime minutes": num(sum(mn for _, mn in want["downtime"].values())),
    }
    missing = {k: v for k, v in headline.items() if v not in tokens and v + "%" not in tokens}
    # a cost ending in half a cent may round either way depending on the order of the sum
    scrap_cost = sum(c for _, c in want["scrap"].values())
    if not {num(scrap_cost - 0.005, 2), num(scrap_cost + 0.005, 2)} & tokens:
        missing["scrap cost"] = num(scrap_cost, 2)
    if str(len(report.anomalies)) not in tokens:
        missing["anomalies"] = str(len(report.anomalies))
    assert not missing, f"not read in the screenshot: {missing}\n--- OCR ---\n{tiles}"
    for label in ("Plant OEE", "Good parts", "Rejects", "Downtime min", "Scrap cost EUR", "Anomalies"):
        assert label.replace(" ", "") in tiles.replace(" ", ""), label
    # the machine table below: each machine's row with its OEE, good parts and rejects
    table = {ln.split()[0]: ln.split() for ln in ocr(png, (200, 460), scale=2, psm=6).splitlines()
             if ln.strip()}
    for name, w in want["machines"].items():
        oee = w["ideal"] / w["planned"] * w["good"] / (w["good"] + w["reject"])
        row = " ".join(table.get(name, [])).replace(" %", "%")
        for value in (pct(oee).replace(" ", ""), num(w["good"]), num(w["reject"])):
            assert value in row.split(), (name, value, row)
    # the whole page: every section is there
    flat = ocr(png).replace(" ", "")
    for word in ("Daily insights", "Top downtime causes", "Scrap by reason", "Anomalies of the day"):
        assert word.replace(" ", "") in flat, word


# -- the A x P x Q = OEE chart stays readable for a real plant ---------------------------------------


def _plant_of(n: int) -> list[OeeRow]:
    """``n`` machines named like the demo's bakery and PLC lines, with ratios of every colour."""
    kinds = ("mixer", "divider", "proofer", "fryer", "glazer", "press")
    out = []
    for i in range(n):
        a, p, q = 0.70 + 0.3 * ((i * 7) % 10) / 10, 0.80 + 0.25 * ((i * 3) % 10) / 10, 0.95 + 0.05 * (i % 2)
        out.append(OeeRow(f"seattle-{kinds[i % len(kinds)]}-{i // len(kinds) + 1}", f"line-{i // 6 + 1}",
                          480, 480 * a, 0, 0, 0, 100, 2, 1, a, p, q, a * p * q))
    return out


def _layout(fig: Any) -> tuple[Any, list[Any], Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    return renderer, [t for t in ax.get_yticklabels() + ax.get_xticklabels() if t.get_text()], ax


def _overlaps(boxes: list[Any]) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes)) if boxes[i].overlaps(boxes[j])]


def test_oee_chart_of_18_machines_has_no_overlapping_labels_and_the_legend_outside_the_bars() -> None:
    machines = _plant_of(18)
    renderer, labels, ax = _layout(oee_figure(machines))
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == [m.name for m in machines]  # every machine labelled, first on top as in the table
    boxes = [t.get_window_extent(renderer) for t in ax.get_yticklabels()]
    assert _overlaps(boxes) == []
    assert min(b.height for b in boxes) > 5  # real text, not squeezed away
    legend = ax.figure.legends[0].get_window_extent(renderer)
    bars = [p.get_window_extent(renderer) for p in ax.patches]
    assert len(bars) == 4 * 18
    assert [i for i, b in enumerate(bars) if legend.overlaps(b)] == []
    assert not legend.overlaps(ax.get_window_extent(renderer))  # the legend sits outside the plot
    assert not legend.overlaps(ax.title.get_window_extent(renderer))
    assert _overlaps([t.get_window_extent(renderer) for t in labels]) == []


def test_the_overlap_check_catches_the_old_chart() -> None:
    """The same check on the chart before (vertical bars, 18 names along x, legend inside) fails."""
    from matplotlib.figure import Figure

    machines = _plant_of(18)
    fig = Figure(figsize=(9, 3.6))
    ax = fig.subplots()
    for i in range(4):
        ax.bar([x + (i - 1.5) * 0.2 for x in range(18)], [90.0] * 18, 0.2, label=f"s{i}")
    ax.set_xticks(range(18), [m.name for m in machines])
    ax.legend(ncols=4, fontsize=8, loc="lower center")
    renderer, _, ax = _layout(fig)
    assert _overlaps([t.get_window_extent(renderer) for t in ax.get_xticklabels()]) != []
    legend = ax.get_legend().get_window_extent(renderer)
    assert any(legend.overlaps(p.get_window_extent(renderer)) for p in ax.patches)


def test_report_of_18_machines_renders_its_chart_in_chromium(tmp_path: Path) -> None:
    """The page of an 18-machine plant renders; OCR of the chart alone reads every machine label."""
    import base64

    from plantstream.operators.report import render_html

    machines = _plant_of(18)
    report = DailyReport("seattle", DAY, "UTC", T0, T0 + 86_400_000, machines[0], machines)
    page = render_html(report)
    html = tmp_path / "plant.html"
    html.write_text(page, encoding="utf-8")
    png = tmp_path / "plant.png"
    screenshot(html, png, width=1280, height=3000)
    with Image.open(png) as im:
        assert im.size == (1280, 3000) and im.convert("L").getextrema()[0] < 100  # painted, not blank
    chart = tmp_path / "chart.png"
    uri = re.search(r'alt="OEE per machine" src="data:image/png;base64,([^"]+)"', page)
    assert uri, "the page carries the OEE chart"
    chart.write_bytes(base64.b64decode(uri.group(1)))
    text = ocr(chart, scale=2, psm=11)
    read = [m.name for m in machines if m.name in text]
    assert len(read) >= 16, (read, text)  # labels one per line, not one smear
    print(f"OCR read {len(read)} of 18 machine labels from the chart")

"""`modelmake report`: artifacts/report.html, one self-contained page about every recipe.

    modelmake report [recipe ...] [-o artifacts/report.html]

The page holds the metrics table of `modelmake compare`, an accuracy-versus-latency (p50) chart
with the Pareto front marked, each recipe's steps with their build times (from the build
records), and the provenance of each artifact (store key, content digest, library versions,
host, when it was finished). It reads only artifacts/, the records and the store, so it works
after any build, by doit or not. Everything is inline (CSS, SVG, a few lines of script) and all
text is escaped: the page opens anywhere, offline, from a CI artifact.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from dataclasses import dataclass
from html import escape
from pathlib import Path

from modelmake.commands import compare
from modelmake.core import digest
from modelmake.build import records
from modelmake.build.steps import PublishStep, SourceStep
from modelmake.build.steps import Step as BuildStep
from modelmake.core.files import atomic_file
from modelmake.store import Store

DEFAULT = "report.html"  # under artifacts/
X_METRIC, Y_METRIC = "latency_ms.p50", "accuracy"


def _e(v) -> str:
    return escape(str(v), quote=True)


# ---------------------------------------------------------------- the chart
@dataclass(frozen=True)
class Point:
    name: str
    latency: float   # x: lower is better
    accuracy: float  # y: higher is better


def pareto(points: list[Point]) -> list[Point]:
    """The points no other point beats on both axes (at least as accurate and at least as fast,
    better in one), by increasing latency."""
    def beaten(p: Point) -> bool:
        return any(q.accuracy >= p.accuracy and q.latency <= p.latency
                   and (q.accuracy > p.accuracy or q.latency < p.latency) for q in points)
    return sorted((p for p in points if not beaten(p)), key=lambda p: (p.latency, -p.accuracy))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _range(values: list[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.12 or abs(hi) * 0.1 or 1.0
    return lo - pad, hi + pad


def _tick_label(v: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step))) if step < 1 else 0
    return f"{v:.{decimals}f}"


def chart_svg(points: list[Point], width: int = 720, height: int = 420) -> str:
    """An inline SVG scatter plot: latency (x) against accuracy (y), Pareto front highlighted."""
    left, right, top, bottom = 70, 30, 20, 50
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = _range([p.latency for p in points])
    y0, y1 = _range([p.accuracy for p in points])
    x0 = max(x0, 0.0)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    front = pareto(points)
    out = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" '
           f'aria-label="accuracy against p50 latency, one point per recipe">']
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    for axis, (lo, hi) in (("x", (x0, x1)), ("y", (y0, y1))):
        ticks = _ticks(lo, hi)
        step = ticks[1] - ticks[0] if len(ticks) > 1 else (hi - lo)
        for t in ticks:
            label = _e(_tick_label(t, step))
            if axis == "x":
                x = sx(t)
                out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" class="grid"/>'
                           f'<text x="{x:.1f}" y="{top + ph + 16}" class="tick" text-anchor="middle">{label}</text>')
            else:
                y = sy(t)
                out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" class="grid"/>'
                           f'<text x="{left - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{label}</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 10}" class="axis" text-anchor="middle">'
               f'latency p50 (ms, lower is better)</text>')
    out.append(f'<text transform="translate(16 {top + ph / 2:.1f}) rotate(-90)" class="axis" '
               f'text-anchor="middle">accuracy (higher is better)</text>')
    if len(front) > 1:  # the front as a staircase: what you can get for a given latency budget
        path = [f"M{sx(front[0].latency):.1f},{sy(front[0].accuracy):.1f}"]
        for p in front[1:]:
            path.append(f"H{sx(p.latency):.1f}V{sy(p.accuracy):.1f}")
        out.append(f'<path d="{"".join(path)}" class="front"/>')
    on_front = {p.name for p in front}
    for p in sorted(points, key=lambda p: p.name):
        cls = "point front-point" if p.name in on_front else "point"
        x, y = sx(p.latency), sy(p.accuracy)
        anchor, dx = ("end", -9) if x > left + pw * 0.75 else ("start", 9)
        tip = f"{p.name}: accuracy {p.accuracy:.4f}, p50 {p.latency:.2f} ms" + (
            " (Pareto front)" if p.name in on_front else "")
        out.append(f'<g class="{cls}" data-recipe="{_e(p.name)}"><title>{_e(tip)}</title>'
                   f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6"/>'
                   f'<text x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}" class="label">{_e(p.name)}</text></g>')
    out.append("</svg>")
    return "".join(out)


def chart_points(comp: compare.Comparison) -> tuple[list[Point], list[str]]:
    """Points of recipes that have both metrics, and one line for each that has not."""
    points, left_out = [], []
    for r in comp.shown:
        acc, lat = r.metrics.get(Y_METRIC), r.metrics.get(X_METRIC)
        if compare.numeric(acc) and compare.numeric(lat):
            points.append(Point(r.name, float(lat), float(acc)))
        else:
            missing = [m for m, v in ((Y_METRIC, acc), (X_METRIC, lat)) if not compare.numeric(v)]
            left_out.append(f"{r.name} is not in the chart: its metrics have no {' and no '.join(missing)}")
    return points, left_out


# ---------------------------------------------------------------- steps and provenance
@dataclass
class StepRun:
    task: str
    spec: BuildStep
    record: dict | None
    build_seconds: float | None   # how long the result took when it was built (store meta)


def recipe_steps(project, steps: list[BuildStep], store: Store, names: list[str]) -> dict[str, list[StepRun]]:
    out: dict[str, list[StepRun]] = {n: [] for n in names}
    for step in steps:
        if step.recipe not in out:
            continue
        rec = records.read(step, project.root)
        out[step.recipe].append(StepRun(step.task, step, rec, _build_seconds(rec, store)))
    return out


def _build_seconds(rec: dict | None, store: Store) -> float | None:
    if not rec:
        return None
    if compare.numeric(rec.get("build_seconds")):
        return rec["build_seconds"]
    if rec.get("key") is None and rec.get("keys"):  # a source: one result per item
        metas = [store.meta(k) for k in rec["keys"]]
        if metas and all(m and compare.numeric(m.get("build_seconds")) for m in metas):
            return sum(m["build_seconds"] for m in metas)
    return None


def _seconds(v) -> str:
    return "" if not compare.numeric(v) else f"{v:.1f} s" if v >= 1 else f"{v:.2f} s"


def steps_html(steps: list[StepRun]) -> str:
    rows = []
    total_run = total_build = 0.0
    for s in steps:
        rec = s.record
        if rec is None:
            rows.append(f'<tr class="never"><td>{_e(s.task)}</td><td colspan="4">no record: not run here yet</td></tr>')
            continue
        how = "done" if isinstance(s.spec, PublishStep) else (
            "built" if rec.get("built") else "restored" if rec.get("keys") else "done")
        total_run += rec.get("seconds") or 0
        total_build += s.build_seconds or 0
        rows.append(f'<tr><td>{_e(s.task)}</td><td class="{_e(how)}">{_e(how)}</td>'
                    f'<td class="num">{_e(_seconds(rec.get("seconds")))}</td>'
                    f'<td class="num">{_e(_seconds(s.build_seconds))}</td><td>{_e(rec.get("finished", ""))}</td></tr>')
    rows.append(f'<tr class="total"><td>total</td><td></td><td class="num">{_e(_seconds(total_run))}</td>'
                f'<td class="num">{_e(_seconds(total_build))}</td><td></td></tr>')
    return ('<table class="steps"><thead><tr><th>step</th><th>last run</th><th class="num">last run took</th>'
            '<th class="num">build time</th><th>finished (UTC)</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _content(root: Path, rel: str) -> str:
    p = root / rel
    try:
        if p.is_dir():
            return digest.folder_content(p)
        return digest.file_digest(p) if p.is_file() else ""
    except OSError:
        return ""


def _host(settings: dict) -> str:
    h = settings.get("host")
    if not isinstance(h, dict):
        return ""
    return f"{h.get('cpu', '?')}, {h.get('cores', '?')} cores, {h.get('machine', '?')} (flags {h.get('cpu_flags', '?')})"


def _libraries(settings: dict) -> str:
    libs = settings.get("libraries")
    return ", ".join(f"{k} {v}" for k, v in sorted(libs.items())) if isinstance(libs, dict) else ""


def provenance_html(root: Path, steps: list[StepRun]) -> str:
    rows = []
    for s in steps:
        rec = s.record or {}
        settings = rec.get("settings") if isinstance(rec.get("settings"), dict) else {}
        key_list = [rec["key"]] if rec.get("key") else list(rec.get("keys") or [])
        inputs = rec.get("inputs") if isinstance(rec.get("inputs"), dict) else {}
        for i, out in enumerate(s.spec.outputs()):
            if isinstance(s.spec, SourceStep):  # one store object per item: name the item's own
                item_key = s.spec.items[i].key(root, s.spec.version)
                key_list = [item_key] if item_key in (rec.get("keys") or []) else []
            content = _content(root, out)
            detail = json.dumps({"inputs": inputs, "settings": settings}, indent=1, sort_keys=True)
            rows.append(
                f'<tr><td><code>{_e(out)}</code></td><td>{_e(s.task)}</td>'
                f'<td><code>{_e(", ".join(key_list)) or "&mdash;"}</code></td>'
                f'<td><code>{_e(content) or "missing"}</code></td><td>{_e(_libraries(settings))}</td>'
                f'<td>{_e(_host(settings))}</td><td>{_e(rec.get("finished", ""))}</td>'
                f'<td><details><summary>inputs, settings</summary><pre>{_e(detail)}</pre></details></td></tr>')
    return ('<table class="prov"><thead><tr><th>artifact</th><th>made by</th><th>store key</th>'
            '<th>content digest</th><th>libraries</th><th>host</th><th>finished (UTC)</th><th></th></tr></thead>'
            '<tbody>' + "".join(rows) + "</tbody></table>")


# ---------------------------------------------------------------- the page
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
 padding:0 16px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#59636e;margin:0}
table{border-collapse:collapse;margin:6px 0}th,td{padding:4px 10px;border-bottom:1px solid #e5e8eb;text-align:left;
 vertical-align:top}th{background:#f6f8fa}.num{text-align:right;font-variant-numeric:tabular-nums}
table.metrics td:not(:first-child),table.metrics th:not(:first-child){text-align:right;font-variant-numeric:tabular-nums}
.hl{background:#fff3c4}.built{color:#1a7f37}.restored{color:#0969da}.never td{color:#8c959f}
.total td{font-weight:600}.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
code{font-size:12px;word-break:break-all}pre{font-size:12px;max-width:520px;overflow:auto}
.notes li{color:#59636e}svg .plot{fill:#fbfcfd;stroke:#d0d7de}svg .grid{stroke:#eef1f4}
svg .tick{font-size:11px;fill:#59636e}svg .axis{font-size:12px;fill:#1f2328}
svg .point circle{fill:#fff;stroke:#6e7781;stroke-width:2}svg .front-point circle{fill:#fb8500;stroke:#b35c00}
svg .front{fill:none;stroke:#fb8500;stroke-width:1.5;stroke-dasharray:5 4}
svg .label{font-size:12px;fill:#1f2328}svg .point.hl circle{stroke:#0969da;stroke-width:3}
.legend span{margin-right:16px}.dot{display:inline-block;width:10px;height:10px;border-radius:50%;
 border:2px solid #6e7781;vertical-align:-1px;margin-right:4px}.dot.f{background:#fb8500;border-color:#b35c00}
"""

# hovering a recipe (a chart point or a table column) highlights it everywhere
SCRIPT = """
(function () {
  var items = document.querySelectorAll('[data-recipe]');
  function mark(name, on) {
    items.forEach(function (el) {
      if (el.getAttribute('data-recipe') === name) { el.classList.toggle('hl', on); }
    });
  }
  items.forEach(function (el) {
    var name = el.getAttribute('data-recipe');
    el.addEventListener('mouseenter', function () { mark(name, true); });
    el.addEventListener('mouseleave', function () { mark(name, false); });
  });
  // what the page's tests read back from the rendered DOM: the script ran, and how many points it saw
  document.documentElement.setAttribute('data-points', String(document.querySelectorAll('#chart .point').length));
})();
"""


def metrics_html(comp: compare.Comparison) -> str:
    t = compare.comparison_table(comp)
    shown = comp.shown
    head = "<th>metric</th>" + "".join(f'<th data-recipe="{_e(r.name)}">{_e(h)}</th>'
                                       for r, h in zip(shown, t.headers[1:]))
    body = []
    for row in t.rows:
        cells = []
        for r, c in zip(shown, row[1:]):
            cls = ' class="pass"' if c == "pass" else ' class="fail"' if c.startswith("FAIL") else ""
            cells.append(f'<td data-recipe="{_e(r.name)}"{cls}>{_e(c)}</td>')
        body.append(f"<tr><td>{_e(row[0])}</td>{''.join(cells)}</tr>")
    return (f'<table class="metrics" id="metrics"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            '<p class="meta">In parentheses: the change against the recipe\'s baseline step, measured in the same run.</p>')


def page(project, comp: compare.Comparison, steps: dict[str, list[StepRun]]) -> str:
    from modelmake.core.hostinfo import host_fingerprint

    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts = ['<!doctype html><html lang="en"><head><meta charset="utf-8">'
             '<meta name="viewport" content="width=device-width, initial-scale=1">'
             f'<title>modelmake report: {_e(project.root.name)}</title><style>{CSS}</style></head><body>',
             f'<h1>modelmake report</h1><p class="meta">project <code>{_e(project.root)}</code> &middot; '
             f'written {_e(now)} &middot; this host: {_e(_host({"host": host_fingerprint()}))}</p>']
    parts.append('<h2 id="compare">Metrics</h2>')
    parts.append(metrics_html(comp) if comp.shown else "<p>No recipe has metrics yet.</p>")
    points, left_out = chart_points(comp)
    parts.append('<h2 id="tradeoff">Accuracy against latency (p50)</h2>')
    if points:
        front = pareto(points)
        parts.append(chart_svg(points))
        parts.append('<p class="legend"><span><i class="dot f"></i>on the Pareto front (no recipe is both more '
                     'accurate and faster)</span><span><i class="dot"></i>dominated</span></p>')
        parts.append(f'<p>Pareto front: {_e(", ".join(p.name for p in front))}</p>')
    else:
        parts.append("<p>No recipe has both accuracy and p50 latency yet.</p>")
    notes = comp.notes + left_out
    if notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    parts.append('<h2 id="steps">Steps and build times</h2>'
                 '<p class="meta">"last run" is what the last run of each step did here: built (computed) or '
                 'restored (copied from the store); "build time" is how long the result took when it was built.</p>')
    for name, ss in steps.items():
        parts.append(f'<h3 data-recipe="{_e(name)}">{_e(name)}</h3>{steps_html(ss)}')
    parts.append('<h2 id="provenance">Provenance</h2>'
                 '<p class="meta">Each artifact\'s store key (what it was built from: input digests, settings, '
                 'versions) and the content digest of what is in artifacts/ now.</p>')
    for name, ss in steps.items():
        parts.append(f"<h3>{_e(name)}</h3>{provenance_html(project.root, ss)}")
    parts.append(f"<script>{SCRIPT}</script></body></html>\n")
    return "".join(parts)


def write_report(root: Path, names: list[str] | None = None, out: Path | None = None) -> tuple[Path, compare.Comparison]:
    from modelmake.build.compile import load_steps
    from modelmake.build.resolve import reading_store

    project, all_steps = load_steps(root)
    comp = compare.load_comparison(root, names)
    steps = recipe_steps(project, all_steps, reading_store(project), [r.name for r in comp.recipes])
    html = page(project, comp, steps)
    dest = Path(out) if out else project.artifacts / DEFAULT
    atomic_file(dest, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return dest, comp


def main(command: str, args: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="modelmake report",
                                 description="write artifacts/report.html: metrics, accuracy/latency chart, "
                                             "build times and provenance of every recipe")
    ap.add_argument("recipes", nargs="*", help="recipes to include (default: all)")
    ap.add_argument("-o", "--output", type=Path, help=f"where to write it (default: artifacts/{DEFAULT})")
    a = ap.parse_args(args)
    try:
        dest, comp = write_report(Path.cwd(), a.recipes, a.output)
    except OSError as e:
        print(f"error: {a.output or 'artifacts/' + DEFAULT}: cannot write the report: {e.strerror}", file=sys.stderr)
        return 2
    try:
        shown = dest.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        shown = dest
    print(f"wrote {shown} ({len(comp.shown)} of {len(comp.recipes)} recipes with metrics)")
    return 0

"""`modelmake report`: artifacts/report.html, one self-contained page about every recipe.

    modelmake report [recipe ...] [-o artifacts/report.html]

The page holds the metrics table of `modelmake compare`, an accuracy-versus-latency (p50) chart
with the Pareto front marked, for each recipe with a [search] its trials (a chart of them all with
the search's Pareto front, goals and pick marked, and a table sortable by any column, read from
artifacts/<recipe>/search.json), each recipe's steps with their build times (from the build
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
from modelmake.metrics import goals
from modelmake.metrics.catalogue import BOOKKEEPING
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


@dataclass
class Chart:
    """One scatter plot: its points, the front drawn through them, and how its marks are named.
    The recipes' chart uses the defaults; a search's chart names trials and marks goals and its pick."""
    points: list[Point]
    front: list[Point]                     # joined by a staircase, by increasing latency
    chart_id: str = "chart"
    subject: str = "recipe"                # one point per <subject>; its name in data-<subject>
    y_metric: str = "accuracy"
    y_higher: bool | None = True           # None: a metric whose direction modelmake does not know
    x_label: str = "latency p50 (ms, lower is better)"
    labels: dict[str, str] | None = None   # text beside a point, by name (None: every point's name)
    missing_goals: frozenset[str] = frozenset()
    selected: str | None = None            # ringed: the point a search chose


def _number(v: float) -> str:
    # three significant digits below 1: a tiny model's latencies differ in the third decimal
    return f"{v:.2f}" if abs(v) >= 1 else f"{v:.3g}"


def _grid_svg(sx, sy, x_range, y_range, box: tuple[float, float, float, float]) -> list[str]:
    left, top, pw, ph = box
    out = []
    for axis, (lo, hi) in (("x", x_range), ("y", y_range)):
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
    return out


def _point_svg(c: Chart, p: Point, x: float, y: float, on_front: bool, flip: bool) -> str:
    cls = "point front-point" if on_front else "point"
    cls += " misses" if p.name in c.missing_goals else ""
    cls += " selected" if p.name == c.selected else ""
    notes = [n for n, yes in (("Pareto front", on_front), ("misses goals", p.name in c.missing_goals),
                              ("selected", p.name == c.selected)) if yes]
    tip = (f"{p.name}: {c.y_metric} {p.accuracy:.4f}, p50 {_number(p.latency)} ms"
           + (f" ({', '.join(notes)})" if notes else ""))
    label = p.name if c.labels is None else c.labels.get(p.name, "")
    anchor, dx = ("end", -9) if flip else ("start", 9)
    ring = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="11" class="ring"/>' if p.name == c.selected else ""
    text = (f'<text x="{x + dx:.1f}" y="{y - 8:.1f}" text-anchor="{anchor}" class="label">{_e(label)}</text>'
            if label else "")
    return (f'<g class="{cls}" data-{c.subject}="{_e(p.name)}"><title>{_e(tip)}</title>{ring}'
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6"/>{text}</g>')


def draw(c: Chart, width: int = 720, height: int = 420) -> str:
    """An inline SVG scatter plot: latency (x) against a quality metric (y), the front as a staircase."""
    left, right, top, bottom = 70, 30, 20, 50
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = _range([p.latency for p in c.points])
    y0, y1 = _range([p.accuracy for p in c.points])
    x0 = max(x0, 0.0)

    def sx(v: float) -> float:
        return left + (v - x0) / (x1 - x0) * pw

    def sy(v: float) -> float:
        return top + (1 - (v - y0) / (y1 - y0)) * ph

    direction = {True: " (higher is better)", False: " (lower is better)", None: ""}[c.y_higher]
    out = [f'<svg id="{_e(c.chart_id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'width="{width}" height="{height}" role="img" '
           f'aria-label="{_e(c.y_metric)} against p50 latency, one point per {_e(c.subject)}">']
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" class="plot"/>')
    out += _grid_svg(sx, sy, (x0, x1), (y0, y1), (left, top, pw, ph))
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 10}" class="axis" text-anchor="middle">'
               f'{_e(c.x_label)}</text>')
    out.append(f'<text transform="translate(16 {top + ph / 2:.1f}) rotate(-90)" class="axis" '
               f'text-anchor="middle">{_e(c.y_metric + direction)}</text>')
    front = sorted(c.front, key=lambda p: (p.latency, -p.accuracy))
    if len(front) > 1:  # the front as a staircase: what you can get for a given latency budget
        path = [f"M{sx(front[0].latency):.1f},{sy(front[0].accuracy):.1f}"]
        for p in front[1:]:
            path.append(f"H{sx(p.latency):.1f}V{sy(p.accuracy):.1f}")
        out.append(f'<path d="{"".join(path)}" class="front"/>')
    on_front = {p.name for p in front}
    for p in sorted(c.points, key=lambda p: p.name):
        x, y = sx(p.latency), sy(p.accuracy)
        out.append(_point_svg(c, p, x, y, p.name in on_front, flip=x > left + pw * 0.75))
    out.append("</svg>")
    return "".join(out)


def chart_svg(points: list[Point], width: int = 720, height: int = 420) -> str:
    """The recipes' chart: latency (x) against accuracy (y), Pareto front highlighted."""
    return draw(Chart(points, pareto(points)), width, height)


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


# ---------------------------------------------------------------- searches
# artifacts/<recipe>/search.json, as search:<recipe> writes it (build/search_run.py, _summary)
SEARCH_FILE = "search.json"
STATUS_CLASS = {"meets goals": "pass", "misses goals": "fail", "failed": "fail"}


def read_search(path: Path, name: str) -> tuple[dict | None, str | None]:
    """A recipe's search summary, or the one line that says why it cannot be shown."""
    again = f"`doit search:{name}` writes it again"
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        return None, f"artifacts/{name}/{SEARCH_FILE} is unreadable ({e.__class__.__name__}); {again}"
    trials = data.get("trials") if isinstance(data, dict) else None
    if not isinstance(trials, list) or not all(isinstance(t, dict) and isinstance(t.get("trial"), str)
                                               for t in trials):
        return None, f"artifacts/{name}/{SEARCH_FILE} has no list of trials; {again}"
    return data, None


def _failed(t: dict) -> bool:
    return t.get("status") == "failed" or not isinstance(t.get("metrics"), dict)


def _dict(v) -> dict:
    return v if isinstance(v, dict) else {}


def trial_value(t: dict, metric: str):
    """A trial's metric as its search's selection saw it: the finalists' re-timed value, if any."""
    v = _dict(t.get("retimed")).get(metric, _dict(t.get("metrics")).get(metric))
    return v if compare.numeric(v) else None


def search_y_metric(data: dict) -> str | None:
    """accuracy when the trials have it, else the first objective metric that is not a latency."""
    if any(trial_value(t, Y_METRIC) is not None for t in data["trials"]):
        return Y_METRIC
    objective = _dict(data.get("search")).get("objective")
    return next((m for m in objective or [] if isinstance(m, str) and not m.startswith("latency_ms.")), None)


def _trial_name(recipe: str, t: dict) -> str:
    # the name its tasks carry (eval:<recipe>@<trial>): unique across every search on the page
    return f"{recipe}@{t['trial']}"


def search_points(name: str, data: dict, y: str | None) -> tuple[list[Point], list[str]]:
    """A point per trial that has latency and the y metric, and a line for each that has none."""
    points, left_out = [], []
    for t in data["trials"]:
        if _failed(t):
            left_out.append(f"{t['trial']} failed, so it has no point: {t.get('error') or 'no reason recorded'}")
            continue
        x, v = trial_value(t, X_METRIC), (trial_value(t, y) if y else None)
        if x is None or v is None:
            missing = [m for m, val in ((y or "a quality metric", v), (X_METRIC, x)) if val is None]
            left_out.append(f"{t['trial']} is not in the chart: its metrics have no {' and no '.join(missing)}")
            continue
        points.append(Point(_trial_name(name, t), float(x), float(v)))
    return points, left_out


def search_chart(name: str, data: dict, index: int) -> tuple[str, list[str]]:
    """The trials' chart with its legend (or why there is none), and the trials it leaves out."""
    y = search_y_metric(data)
    points, left_out = search_points(name, data, y)
    if not points:
        return f"<p>No trial has both {_e(X_METRIC)} and {_e(y or 'a quality metric')}.</p>", left_out
    by_name = {_trial_name(name, t): t for t in data["trials"]}
    selected = _trial_name(name, {"trial": data["selected"]}) if isinstance(data.get("selected"), str) else None
    retimed = any(by_name[p.name].get("retimed") for p in points)
    chart = Chart(
        points, [p for p in points if by_name[p.name].get("pareto") is True], chart_id=f"search-chart-{index}",
        subject="trial", y_metric=y, y_higher=goals.builtin_direction(y),
        x_label="latency p50 (ms, lower is better" + ("; finalists timed again together)" if retimed else ")"),
        labels={selected: "selected"} if selected else {},
        missing_goals=frozenset(p.name for p in points if by_name[p.name].get("status") == "misses goals"),
        selected=selected)
    objective = ", ".join(map(str, _dict(data.get("search")).get("objective") or []))
    legend = ('<p class="legend"><span><i class="dot f"></i>on the search\'s Pareto front '
              f'(objective: {_e(objective)})</span><span><i class="dot"></i>meets the goals</span>'
              '<span><i class="dot m"></i>misses a goal</span><span><i class="dot s"></i>selected</span></p>')
    return draw(chart) + legend, left_out


def _param_text(v) -> str:
    return json.dumps(v) if isinstance(v, bool) or v is None else str(v)


def _sort_head(label: str, numeric: bool, higher: bool | None = None) -> str:
    """A header that sorts its table when clicked: numbers by value, best first where the metric
    has a direction; other columns as text."""
    attrs = ' class="num"' if numeric else ""
    attrs += f' data-higher="{int(higher)}"' if higher is not None else ""
    return f'<th{attrs}><button type="button">{_e(label)}</button></th>'


def table_metrics(trials: list[dict]) -> list[str]:
    """The metrics worth comparing trials on, in the metrics table's order; the median's confidence
    bounds and how it was measured stay in search.json."""
    merged = [{**_dict(t.get("metrics")), **_dict(t.get("retimed"))} for t in trials if not _failed(t)]
    return [k for k in compare.metric_names(merged) if k not in BOOKKEEPING and "_ci_" not in k]


def _status_cell(t: dict) -> str:
    status = str(t.get("status") or ("failed" if _failed(t) else ""))
    text = status
    if status == "misses goals":  # which goals: goals_text says "FAIL (metric, ...)"
        text += compare.goals_text(compare.goals_of(t)).removeprefix("FAIL")
    title = f' title="{_e(t["error"])}"' if t.get("error") else ""
    return f'<td class="{STATUS_CLASS.get(status, "")}"{title}>{_e(text)}</td>'


def _metric_cell(t: dict, metric: str) -> str:
    v = trial_value(t, metric)
    if v is None:
        return '<td class="num"></td>'
    if metric not in _dict(t.get("retimed")):
        return f'<td class="num" data-sort="{v!r}">{_e(compare.fmt(metric, v))}</td>'
    own = compare.fmt(metric, _dict(t.get("metrics")).get(metric)) or "none"
    return (f'<td class="num retimed" data-sort="{v!r}" title="timed again with the other finalists; its own '
            f'evaluation: {_e(own)}">{_e(compare.fmt(metric, v))}<span class="mark">&dagger;</span></td>')


def _trial_row(name: str, t: dict, params: list[str], metrics: list[str], selected: str | None) -> str:
    badges = [b for b, yes in (("selected", t["trial"] == selected), ("Pareto front", t.get("pareto") is True)) if yes]
    cells = [f'<td data-sort="{_e(t["trial"])}"><code>{_e(t["trial"])}</code>'
             + "".join(f' <span class="badge">{_e(b)}</span>' for b in badges) + "</td>", _status_cell(t)]
    given = _dict(t.get("params"))
    for k in params:
        v = given.get(k)
        sort = f' data-sort="{v!r}"' if compare.numeric(v) else ""
        cells.append(f"<td{sort}>{_e(_param_text(v)) if k in given else ''}</td>")
    cells += [_metric_cell(t, m) for m in metrics]
    cls = ' class="selected"' if t["trial"] == selected else ""
    return f'<tr data-trial="{_e(_trial_name(name, t))}"{cls}>{"".join(cells)}</tr>'


def trials_html(name: str, data: dict) -> str:
    """Every trial with its status, parameters and main metrics; a header click sorts the rows."""
    trials = data["trials"]
    params = list(dict.fromkeys(k for t in trials for k in _dict(t.get("params"))))
    metrics = table_metrics(trials)
    numeric_params = {k for k in params if all(compare.numeric(_dict(t.get("params")).get(k)) for t in trials)}
    head = ([_sort_head("trial", False), _sort_head("status", False)]
            + [_sort_head(k, k in numeric_params) for k in params]
            + [_sort_head(m, True, goals.builtin_direction(compare.measured_metric(m))) for m in metrics])
    rows = [_trial_row(name, t, params, metrics, data.get("selected")) for t in trials]
    return (f'<div class="wide"><table class="trials sortable"><thead><tr>{"".join(head)}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


def _why_none(trials: list[dict]) -> str:
    if trials and all(_failed(t) for t in trials):
        return "every trial failed"
    if not any(t.get("status") == "meets goals" for t in trials):
        return "no trial meets the goals"
    return "the search did not finish"


def search_html(name: str, data: dict, index: int) -> str:
    settings = _dict(data.get("search"))
    trials = data["trials"]
    parts = [f'<h3 data-recipe="{_e(name)}">{_e(name)}: {_e(settings.get("sampler", "?"))} search, '
             f'{len(trials)} trial{"s" if len(trials) != 1 else ""}</h3>']
    if isinstance(data.get("selected"), str):
        parts.append(f'<p>Selected: <code>{_e(data["selected"])}</code> ({_e(data.get("selected_by") or "")}); '
                     f'its model, metrics and package are in <code>artifacts/{_e(name)}/</code>.</p>')
    else:
        parts.append(f"<p>No trial was selected: {_e(_why_none(trials))}.</p>")
    if data.get("warning"):
        parts.append(f'<p class="fail">{_e(data["warning"])}</p>')
    chart, left_out = search_chart(name, data, index)
    parts.append(chart)
    if left_out:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in left_out) + "</ul>")
    parts.append(trials_html(name, data))
    if data.get("timing"):
        parts.append(f'<p class="meta">&dagger; {_e(data["timing"])}. Click a column to sort the trials by it.</p>')
    return "".join(parts)


def searches_html(artifacts: Path, names: list[str]) -> str:
    """A section per recipe that has a search.json; nothing when no recipe has one."""
    parts = []
    for name in names:
        path = artifacts / name / SEARCH_FILE
        if not path.is_file():
            continue
        data, problem = read_search(path, name)
        parts.append(search_html(name, data, len(parts)) if data else
                     f'<h3>{_e(name)}</h3><ul class="notes"><li>{_e(problem)}</li></ul>')
    if not parts:
        return ""
    return ('<h2 id="search">Searches</h2><p class="meta">Each trial of a recipe\'s [search], built as its own '
            'chain; latency as the selection saw it.</p>' + "".join(parts))


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
svg .point.misses circle{stroke:#cf222e;stroke-dasharray:3 2}
svg .point circle.ring{fill:none;stroke:#0969da;stroke-width:3}
.dot.m{border:2px dashed #cf222e}.dot.s{border:3px solid #0969da;background:#fff}
.wide{overflow-x:auto}table.trials td{white-space:nowrap}table.trials code{white-space:nowrap;word-break:normal}
tr.selected td{background:#ddf4ff}
.badge{font-size:11px;padding:0 6px;border-radius:8px;background:#eef1f4;white-space:nowrap}
tr.selected .badge:first-of-type{background:#0969da;color:#fff}.mark{color:#59636e;font-size:11px}
table.sortable th button{font:inherit;font-weight:600;border:0;background:none;padding:0;cursor:pointer;color:inherit}
table.sortable th[aria-sort=ascending] button::after{content:" \\25B2"}
table.sortable th[aria-sort=descending] button::after{content:" \\25BC"}
"""

# hovering a recipe or a trial (a chart point, a table column or row) highlights it everywhere;
# clicking a header of a trials table sorts its rows by that column
SCRIPT = """
(function () {
  var items = document.querySelectorAll('[data-recipe], [data-trial]');
  function nameOf(el) {  // a trial's name holds '@', a recipe's cannot: the two never collide
    return el.getAttribute('data-recipe') || el.getAttribute('data-trial');
  }
  function mark(name, on) {
    items.forEach(function (el) {
      if (nameOf(el) === name) { el.classList.toggle('hl', on); }
    });
  }
  items.forEach(function (el) {
    var name = nameOf(el);
    el.addEventListener('mouseenter', function () { mark(name, true); });
    el.addEventListener('mouseleave', function () { mark(name, false); });
  });
  function sortKey(cell, numeric) {
    var raw = cell.hasAttribute('data-sort') ? cell.getAttribute('data-sort') : cell.textContent.trim();
    if (!numeric) { return raw === '' ? null : raw; }
    var v = parseFloat(raw);
    return isNaN(v) ? null : v;
  }
  document.querySelectorAll('table.sortable').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.querySelector('button').addEventListener('click', function () {
        var numeric = th.classList.contains('num');
        // first click: best first where the metric has a direction, else ascending; then reverse
        var first = th.getAttribute('data-higher') === '1' ? 'descending' : 'ascending';
        var now = th.getAttribute('aria-sort');
        var order = now ? (now === 'ascending' ? 'descending' : 'ascending') : first;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', order);
        var body = table.tBodies[0];
        var rows = Array.prototype.map.call(body.rows, function (row, i) {
          return {row: row, key: sortKey(row.cells[col], numeric), i: i};
        });
        rows.sort(function (a, b) {
          if (a.key === null || b.key === null) {  // rows without a value go last either way
            return (a.key === null) - (b.key === null) || a.i - b.i;
          }
          var c = numeric ? a.key - b.key : a.key.localeCompare(b.key, undefined, {numeric: true});
          return (order === 'ascending' ? c : -c) || a.i - b.i;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      });
    });
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
    parts.append(searches_html(project.artifacts, [r.name for r in comp.recipes]))
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

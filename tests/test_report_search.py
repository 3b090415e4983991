"""`modelmake report` on a recipe with a [search]: every trial on an accuracy-versus-latency chart
and in a table sortable by any column, checked as written and as headless Chromium renders it.

The project holds a 2x2 grid search over the tiny model (tinys) and the same chain without a
search (tiny): the search gets its own section, the recipe without one keeps the page it had.
A copy of search.json with a failed trial and one that misses a goal checks how those are shown.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest

from buildkit import copy_project, make_project, recipe_text
from test_compare import build, modelmake, shared_store
from test_report import chromium, console_messages, needs_chromium, tables_of

SEARCH = '''
[search]
sampler = "grid"

[search.space]
"quantize.per_channel" = [true, false]
"quantize.reduce_range" = [false, true]
'''


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    store = shared_store(tmp_path_factory)
    project = make_project(tmp_path_factory.mktemp("search-report") / "proj",
                           {"tinys": recipe_text() + SEARCH, "tiny": recipe_text()})
    build(project, store)
    report(project, store)
    return project, store


def report(project: Path, store: Path) -> str:
    r = modelmake(project, "report", store=store)
    assert r.returncode == 0, r.stderr
    return (project / "artifacts/report.html").read_text()


def search_of(project: Path) -> dict:
    return json.loads((project / "artifacts/tinys/search.json").read_bytes())


def latency(trial: dict) -> float:
    """The p50 the search's selection used: re-timed for a finalist, else the trial's own."""
    return (trial.get("retimed") or trial["metrics"])["latency_ms.p50"]


# ---------------------------------------------------------------- reading the page
def search_svg(text: str) -> str:
    m = re.search(r'<svg id="search-chart-0".*?</svg>', text, re.S)
    assert m, "the search has no chart"
    return m.group(0)


def points(svg: str) -> dict[str, dict]:
    """Each point of a search chart: its classes and where it is drawn, by trial (the part after '@')."""
    out = {}
    for cls, name, body in re.findall(r'<g class="([^"]*)" data-trial="([^"]*)">(.*?)</g>', svg, re.S):
        cx, cy = re.search(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="6"', body).groups()
        out[html.unescape(name).split("@", 1)[1]] = {"classes": set(cls.split()), "x": float(cx), "y": float(cy)}
    return out


def trial_rows(text: str) -> dict[str, dict[str, str]]:
    """The trials table: {trial: {column: cell text}}, the trial cell without its badges."""
    rows = tables_of(text)["trials sortable"]
    head = rows[0]
    return {re.sub(r"\s.*", "", r[0]): dict(zip(head, r)) for r in rows[1:]}


def row_order(text: str) -> list[str]:
    body = re.search(r'<table class="trials sortable">.*?<tbody>(.*?)</tbody>', text, re.S).group(1)
    return [html.unescape(n).split("@", 1)[1] for n in re.findall(r'<tr data-trial="([^"]*)"', body)]


# ---------------------------------------------------------------- the page as written
def test_search_section_shows_every_trial_and_the_selected_one(searched):
    project, _ = searched
    text = (project / "artifacts/report.html").read_text()
    search = search_of(project)
    names = [t["trial"] for t in search["trials"]]
    assert len(names) == 4 and search["selected"] in names

    # one section, for the recipe with a search only
    assert text.count('<h2 id="search">') == 1
    assert re.findall(r"<h3[^>]*>([^<]*search[^<]*)</h3>", text) == ["tinys: grid search, 4 trials"]
    assert f"Selected: <code>{html.escape(search['selected'])}</code> ({search['selected_by']})" in text

    # the table: every trial once, with its parameters and metrics; the selected one marked
    rows = trial_rows(text)
    assert list(rows) == names
    for t in search["trials"]:
        row = rows[t["trial"]]
        assert row["status"] == "meets goals"  # the tiny recipe sets no goals
        assert row["quantize.per_channel"] == json.dumps(t["params"]["quantize.per_channel"])
        assert row["quantize.reduce_range"] == json.dumps(t["params"]["quantize.reduce_range"])
        assert row["accuracy"] == f"{t['metrics']['accuracy']:.4f}"
        assert ("selected" in row["trial"]) == (t["trial"] == search["selected"])
        assert row["latency_ms.p50"].endswith("\u2020") == ("retimed" in t)   # the finalists' re-timed p50
    assert len(re.findall(r'<tr data-trial="[^"]*" class="selected">', text)) == 1

    # the chart: a point per trial, placed by the latency the selection used; front and pick marked
    pts = points(search_svg(text))
    assert set(pts) == set(names)
    by_x = sorted(names, key=lambda n: pts[n]["x"])
    assert by_x == sorted(names, key=lambda n: latency(next(t for t in search["trials"] if t["trial"] == n)))
    assert {n for n, p in pts.items() if "front-point" in p["classes"]} == {
        t["trial"] for t in search["trials"] if t["pareto"]}
    assert {n for n, p in pts.items() if "selected" in p["classes"]} == {search["selected"]}
    assert not any("misses" in p["classes"] for p in pts.values())


def test_recipes_chart_keeps_both_recipes(searched):
    project, _ = searched
    text = (project / "artifacts/report.html").read_text()
    recipe_chart = re.search(r'<svg id="chart".*?</svg>', text, re.S).group(0)
    assert sorted(re.findall(r'data-recipe="([^"]+)"', recipe_chart)) == ["tiny", "tinys"]
    assert "data-trial" not in recipe_chart
    metrics = {r[0]: r[1:] for r in tables_of(text)["metrics"]}
    assert metrics["metric"] == ["tiny", "tinys"]


@pytest.fixture
def doctored(searched, tmp_path):
    """A copy of the project whose search.json has a failed trial (its error holds markup) and one
    that misses its accuracy goal; every trial that has metrics a different accuracy."""
    project, store = searched
    copy = copy_project(project, tmp_path)
    path = copy / "artifacts/tinys/search.json"
    search = json.loads(path.read_bytes())
    others = [t for t in search["trials"] if t["trial"] != search["selected"]]
    failed, missing = others[0], others[1]
    for k in ("metrics", "goals", "pareto", "retimed"):
        failed.pop(k, None)
    failed.update(status="failed", error=f'pass:tinys@{failed["trial"]}/quantize: <b>scale</b> & "zero"')
    missing.update(status="misses goals", pareto=False, goals={"passed": False, "results": [
        {"metric": "accuracy", "goal": "at_least", "target": 0.9, "value": 0.5, "baseline": None,
         "measured": 0.5, "passed": False}]})
    for i, t in enumerate(t for t in search["trials"] if "metrics" in t):
        t["metrics"]["accuracy"] = 0.5 + 0.1 * i
    path.write_text(json.dumps(search, indent=1))
    return copy, store, search, failed["trial"], missing["trial"]


def test_failed_trial_is_listed_without_a_point(doctored):
    project, store, search, failed, missing = doctored
    text = report(project, store)
    pts = points(search_svg(text))
    assert set(pts) == {t["trial"] for t in search["trials"]} - {failed}
    assert "misses" in pts[missing]["classes"] and "front-point" not in pts[missing]["classes"]

    # higher accuracy is drawn higher (SVG y grows downwards)
    acc = {t["trial"]: t["metrics"]["accuracy"] for t in search["trials"] if "metrics" in t}
    assert sorted(pts, key=lambda n: -pts[n]["y"]) == sorted(acc, key=acc.get)

    notes = re.findall(r"<li>([^<]*)</li>", text)
    reason = f'pass:tinys@{failed}/quantize: <b>scale</b> & "zero"'
    assert f"{failed} failed, so it has no point: {reason}" in [html.unescape(n) for n in notes]
    assert "<b>scale</b>" not in text   # the error is text, not markup

    rows = trial_rows(text)
    assert list(rows) == [t["trial"] for t in search["trials"]]   # still in the table
    assert rows[failed]["status"] == "failed" and rows[failed]["accuracy"] == "" and rows[failed]["latency_ms.p50"] == ""
    assert rows[missing]["status"] == "misses goals (accuracy)"


def test_y_axis_falls_back_to_the_first_objective_that_is_not_a_latency():
    from modelmake.commands.report import search_html

    trials = [{"trial": f"bits:{b}", "params": {"quantize.bits": b}, "status": "meets goals", "pareto": True,
               "goals": None, "metrics": {"latency_ms.p50": 10.0 / b, "size_mb": 2.0 * b}} for b in (4, 8)]
    data = {"search": {"sampler": "grid", "objective": ["latency_ms.p50", "size_mb"]}, "trials": trials,
            "selected": "bits:4", "selected_by": "fastest of the trials meeting the goals", "timing": "own"}
    svg = search_svg(search_html("emb", data, 0))
    assert "size_mb (lower is better)</text>" in svg
    assert len(points(svg)) == 2


def test_an_unreadable_search_json_is_one_note(tmp_path):
    from modelmake.commands.report import searches_html

    (tmp_path / "tinys").mkdir()
    (tmp_path / "tinys/search.json").write_text("{not json")
    text = searches_html(tmp_path, ["tinys", "tiny"])
    assert re.findall(r"<li>([^<]*)</li>", text) == [
        "artifacts/tinys/search.json is unreadable (JSONDecodeError); `doit search:tinys` writes it again"]
    assert searches_html(tmp_path, ["tiny"]) == ""   # no search.json: no section at all


# ---------------------------------------------------------------- in a real browser
@needs_chromium
def test_search_renders_in_chromium_without_console_errors(searched, tmp_path):
    project, _ = searched
    r = chromium(project / "artifacts/report.html", tmp_path, "--dump-dom")
    assert r.returncode == 0, r.stderr
    assert console_messages(r.stderr) == []
    assert 'data-points="2"' in r.stdout   # the page's script ran to its end (the recipes' chart)
    assert len(points(search_svg(r.stdout))) == 4


CLICK = """<script>
(function () {
  function click(label) {
    var th = Array.prototype.find.call(document.querySelectorAll('table.trials th'),
                                       function (h) { return h.textContent.trim() === label; });
    th.querySelector('button').click();
    return Array.prototype.map.call(document.querySelectorAll('table.trials tbody tr'),
                                    function (r) { return r.getAttribute('data-trial'); });
  }
  var seen = {p50: click('latency_ms.p50'), p50_again: click('latency_ms.p50'), accuracy: click('accuracy')};
  document.documentElement.setAttribute('data-orders', JSON.stringify(seen));
})();
</script></body>"""


@needs_chromium
def test_clicking_a_header_sorts_the_trials(doctored, tmp_path):
    project, store, search, failed, _ = doctored
    text = report(project, store)
    clicked = tmp_path / "clicked.html"   # the page as written, plus a script that clicks its headers
    clicked.write_text(text.replace("</body>", CLICK, 1))
    r = chromium(clicked, tmp_path, "--dump-dom")
    assert console_messages(r.stderr) == [], r.stderr
    orders = {k: [n.split("@", 1)[1] for n in v]
              for k, v in json.loads(html.unescape(re.search(r'data-orders="([^"]*)"', r.stdout).group(1))).items()}

    done = [t for t in search["trials"] if "metrics" in t]
    fastest_first = [t["trial"] for t in sorted(done, key=latency)]
    # latency: fastest first, then slowest first; the failed trial (no latency) last either way
    assert orders["p50"] == fastest_first + [failed]
    assert orders["p50_again"] == fastest_first[::-1] + [failed]
    assert orders["p50"] != row_order(text) or orders["p50_again"] != row_order(text)
    # accuracy: most accurate first
    assert orders["accuracy"] == [t["trial"] for t in sorted(done, key=lambda t: -t["metrics"]["accuracy"])] + [failed]
    assert re.search(r'<th class="num" data-higher="1" aria-sort="descending"><button type="button">accuracy<', r.stdout)

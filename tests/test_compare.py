"""`modelmake compare`: metrics across recipes (terminal, markdown, json) and between git revisions.

Two tiny recipes (with and without int8) are built once per module; tests that change the
project work on a copy. Every project of these tests shares one store, so the copies and the
git project restore what an earlier build made instead of rebuilding it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildkit import doit, make_project, recipe_text

RECIPES = {"tiny": recipe_text(), "tiny-fp32": recipe_text("")}


def shared_store(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "compare-report-store"


def modelmake(project: Path, *args: str, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MODELMAKE_STORE": str(store)}
    return subprocess.run([sys.executable, "-m", "modelmake.commands.cli", *args], cwd=project, capture_output=True,
                          text=True, env=env, timeout=120)


def build(project: Path, store: Path, *tasks: str) -> None:
    run = doit(project, *(tasks or ("optimize",)), env={"MODELMAKE_STORE": str(store)})
    assert run.rc == 0, run


def metrics_of(project: Path, recipe: str) -> dict:
    return json.loads((project / "artifacts" / recipe / "metrics.json").read_bytes())


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    store = shared_store(tmp_path_factory)
    project = make_project(tmp_path_factory.mktemp("pair") / "proj", RECIPES)
    build(project, store)
    return project, store


@pytest.fixture
def pair_copy(pair, tmp_path):
    dest = tmp_path / "proj"
    shutil.copytree(pair[0], dest, symlinks=True)
    return dest, pair[1]


def row(text: str, metric: str) -> list[str]:
    """The cells of a plain-text table row (columns are separated by two or more spaces)."""
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == metric:
            return cells
    raise AssertionError(f"no row {metric!r} in:\n{text}")


def test_terminal_table_shows_each_recipe_against_its_baseline(pair):
    project, store = pair
    r = modelmake(project, "compare", store=store)
    assert r.returncode == 0, r.stderr
    header = row(r.stdout, "metric")
    assert header == ["metric", "tiny", "tiny-fp32"]
    assert "\x1b[" not in r.stdout and "┃" not in r.stdout  # not a terminal: plain text
    for i, name in enumerate(["tiny", "tiny-fp32"], start=1):
        m = metrics_of(project, name)
        assert row(r.stdout, "accuracy")[i] == f"{m['accuracy']:.4f} ({m['delta.accuracy']:+.4f})"
        assert row(r.stdout, "size_mb")[i] == f"{m['size_mb']:.2f} ({m['delta.size_mb']:+.2f})"
        assert row(r.stdout, "speedup_x.latency_p50")[i] == f"{m['speedup_x.latency_p50']:.2f}x"
        assert row(r.stdout, "baseline")[i] == "step export"
    assert r.stderr == ""


def test_markdown_table_for_a_ci_comment(pair):
    project, store = pair
    r = modelmake(project, "compare", "--format", "markdown", "tiny-fp32", "tiny", store=store)
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stdout.splitlines() if l.startswith("|")]
    assert lines[0] == "| metric | tiny-fp32 | tiny |"   # the order asked for
    assert lines[1] == "| --- | ---: | ---: |"
    fp32, int8 = metrics_of(project, "tiny-fp32"), metrics_of(project, "tiny")
    assert f"| compression_x.size | {fp32['compression_x.size']:.2f}x | {int8['compression_x.size']:.2f}x |" in lines


def test_json_has_every_numeric_metric(pair):
    project, store = pair
    r = modelmake(project, "compare", "--format", "json", store=store)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert set(data["recipes"]) == {"tiny", "tiny-fp32"}
    for name in ("tiny", "tiny-fp32"):
        assert data["recipes"][name]["metrics"] == metrics_of(project, name)
        assert data["recipes"][name]["stale"] is None
        assert data["recipes"][name]["baseline"] == {"step": "export"}


def test_names_recipes_without_metrics_and_how_to_build_them(pair_copy):
    project, store = pair_copy
    (project / "recipes/tiny-new.toml").write_text(recipe_text().replace("epochs = 2", "epochs = 1"))
    r = modelmake(project, "compare", store=store)
    assert r.returncode == 0, r.stderr
    assert row(r.stdout, "metric") == ["metric", "tiny", "tiny-fp32"]
    assert r.stderr.strip() == "note: tiny-new: no metrics yet; build them with `doit optimize:tiny-new`"

    r = modelmake(project, "compare", "tiny-new", store=store)
    assert r.returncode == 1 and r.stdout == ""
    r = modelmake(project, "compare", "nope", store=store)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: recipes/: no recipe 'nope' (recipes: tiny, tiny-fp32, tiny-new)"


def test_metrics_older_than_the_recipe_are_marked_stale(pair_copy):
    project, store = pair_copy
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    r = modelmake(project, "compare", store=store)
    assert row(r.stdout, "metric") == ["metric", "tiny (stale)", "tiny-fp32"]
    assert "tiny: artifacts/tiny/metrics.json is out of date" in r.stderr
    assert "`doit optimize:tiny` refreshes it" in r.stderr
    build(project, store, "optimize:tiny")
    r = modelmake(project, "compare", store=store)
    assert row(r.stdout, "metric") == ["metric", "tiny", "tiny-fp32"] and r.stderr == ""


def test_goals_show_pass_or_fail_per_recipe():
    from modelmake.commands import compare

    ok = {"accuracy": 0.9, "goals": {"passed": True, "results": []}}
    bad = {"accuracy": 0.5, "label": "text is ignored",
           "goals": {"passed": False, "results": [{"metric": "accuracy", "passed": False},
                                                  {"metric": "latency_ms.p50", "passed": True}]}}
    comp = compare.Comparison([compare.RecipeMetrics("a", ok, None, True), compare.RecipeMetrics("b", bad, None, True)])
    table = compare.comparison_table(comp)
    assert ["goals", "pass", "FAIL (accuracy)"] in table.rows
    assert [r[0] for r in table.rows] == ["accuracy", "goals"]   # non-numeric values are left out


# ---------------------------------------------------------------- git revisions
def git(project: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True, env=env).stdout


def test_metrics_of_a_recipe_between_git_revisions(tmp_path_factory, pair):
    store = pair[1]  # the first commit's results are restored from the module's build
    project = make_project(tmp_path_factory.mktemp("git") / "proj", {"tiny": recipe_text()})
    (project / ".gitignore").write_text("artifacts/\n")
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "per-channel int8")
    build(project, store, "optimize:tiny")
    before = metrics_of(project, "tiny")
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    git(project, "commit", "-qam", "per-tensor int8")
    build(project, store, "optimize:tiny")
    after = metrics_of(project, "tiny")
    assert before["size_mb"] != after["size_mb"]  # the setting changed the model

    r = modelmake(project, "compare", "--rev", "HEAD~1", "--format", "json", store=store)
    assert r.returncode == 0, r.stderr
    diff = json.loads(r.stdout)["tiny"]["metrics"]
    for k, v in diff.items():
        assert v["old"] == before[k] and v["new"] == after[k], k
    r = modelmake(project, "compare", "--rev", "HEAD~1", "tiny", store=store)
    assert r.returncode == 0, r.stderr
    sha = git(project, "rev-parse", "HEAD~1").strip()
    size = next(re.split(r"\s{2,}", l.strip()) for l in r.stdout.splitlines() if " size_mb " in l)
    assert size[:4] == ["tiny", "size_mb", f"{before['size_mb']:.2f}", f"{after['size_mb']:.2f}"]
    assert f"HEAD~1 ({sha[:8]})" in r.stdout and "workspace" in r.stdout

    # between two revisions, neither of them the workspace
    r = modelmake(project, "compare", "--rev", "HEAD~1", "--rev2", "HEAD", "--format", "json", store=store)
    assert r.returncode == 0, r.stderr
    assert {k: v["new"] for k, v in json.loads(r.stdout)["tiny"]["metrics"].items()} == after

    # a revision nobody built: one line that says so and how to build it
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3"))
    git(project, "commit", "-qam", "longer fine-tuning")
    head = git(project, "rev-parse", "HEAD").strip()
    r = modelmake(project, "compare", "--rev", "HEAD", store=store)
    assert r.returncode == 1
    assert r.stdout.count("\n") == 1, r.stdout
    assert r.stdout.startswith(f"tiny: not built at HEAD ({head[:8]}) on this host; build it with: git worktree add ")

    r = modelmake(project, "compare", "--rev", "no-such-rev", store=store)
    assert r.returncode == 2 and r.stderr.strip() == "error: --rev: 'no-such-rev' is not a git revision here"

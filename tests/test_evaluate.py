"""Evaluation as a user sees it: goals that pass, fail (one line, non-zero exit, no metrics.json)
or warn; relaxing a goal re-measures nothing; a baseline from another recipe; custom metrics
from the project's own code; peak memory; latency with its confidence interval.

Build tests drive the real `doit` CLI on the tiny BERT. One cold build is made per module and
copied (with its store and doit DB) into each test that changes something.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from buildkit import build_project, copy_project, doit, file_bytes, recipe_text
from modelmake.metrics import goals
from modelmake.runtime import timing

METRICS = 'metrics = ["accuracy", "f1", "latency", "size"]'
assert METRICS in recipe_text()

CUSTOM = """
[[evaluate.custom]]
name = "agreement"
function = "mymetrics:agreement"
higher_is_better = true

[[evaluate.custom]]
name = "counts"
function = "mymetrics:counts"
higher_is_better = true
"""

GOALS = """
[[evaluate.goal]]
metric = "accuracy"
max_drop = 1.0

[[evaluate.goal]]
metric = "size_mb"
at_most = 1000.0

[[evaluate.goal]]
metric = "agreement"
at_least = 0.0
"""

MYMETRICS = '''\
"""Custom metrics of the test project."""


def agreement(predict, texts, labels):
    """Accuracy through the predict helper: it must equal the built-in accuracy."""
    logits = predict(texts)
    return sum(int(row.argmax()) == y for row, y in zip(logits, labels)) / len(labels)


def counts(texts, labels, **given):
    return {"texts": len(texts), "positives": sum(labels), "has_model": int(given["model"].is_file())}
'''

# deterministic: a quantized model is never 99.9 % smaller than its fp32 baseline
FAILING = 'metric = "size_mb"\nmin_improvement_percent = 99.9'
RELAXED = 'metric = "size_mb"\nmin_improvement_percent = 1.0'


def tiny_recipe(goals_text: str = GOALS, custom: str = CUSTOM, evaluate_extra: str = "") -> str:
    text = recipe_text().replace(METRICS, METRICS[:-1] + ', "memory"]' + evaluate_extra)
    return text.replace("[package]", custom + goals_text + "\n[package]")


def measurement_labels(run) -> tuple[list[str], list[str]]:
    """(built, restored) measurements of eval:tiny, e.g. 'eval:tiny model quality'."""
    return ([b for b in run.built if b.startswith("eval:tiny ")],
            [r for r in run.restored if r.startswith("eval:tiny ")])


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    return build_project(tmp_path_factory.mktemp("evaluate") / "proj", {"tiny": tiny_recipe()},
                         files={"mymetrics.py": MYMETRICS}, target="optimize:tiny")


@pytest.fixture
def project(cold, tmp_path):
    return copy_project(cold[0], tmp_path)


def metrics_of(project: Path, recipe: str = "tiny") -> dict:
    return json.loads(file_bytes(project, f"artifacts/{recipe}/metrics.json"))


def set_goals(project: Path, goals_text: str, **kw) -> None:
    (project / "recipes/tiny.toml").write_text(tiny_recipe(goals_text, **kw))


def error_lines(run) -> list[str]:
    return [ln for ln in (run.out + run.err).splitlines() if ln.startswith("error: ")]


# ---------------------------------------------------------------- a passing build
def test_passing_goals_and_every_metric_in_metrics_json(cold):
    project, run = cold
    m = metrics_of(project)
    verdict = m["goals"]
    assert verdict["passed"] is True
    assert [(r["metric"], r["goal"]) for r in verdict["results"]] == \
        [("accuracy", "max_drop"), ("size_mb", "at_most"), ("agreement", "at_least")]
    for r in verdict["results"]:
        assert set(r) == {"metric", "goal", "target", "value", "baseline", "measured", "passed"} and r["passed"]
    drop = verdict["results"][0]
    assert drop["value"] == m["accuracy"] and drop["baseline"] == m["baseline.accuracy"]
    assert drop["measured"] == pytest.approx(m["baseline.accuracy"] - m["accuracy"])
    assert verdict["results"][1]["baseline"] is None
    # numbers stay flat: every key but the verdict is a number
    assert all(isinstance(v, (int, float)) for k, v in m.items() if k != "goals")
    assert "goals of tiny: 3 of 3 met" in run.out

    # memory: a positive peak for the model and its baseline, in MB
    assert m["memory_mb"] > 0 and m["baseline.memory_mb"] > 0
    # latency: at least the configured runs, at most max_runs, the median inside its interval
    assert 5 <= m["runs"] <= 20 and m["runs"] == m["baseline.runs"]
    for prefix in ("", "baseline."):
        assert m[f"{prefix}latency_ms.p50_ci_low"] <= m[f"{prefix}latency_ms.p50"] <= m[f"{prefix}latency_ms.p50_ci_high"]
    # custom metrics, for the model and its baseline
    assert m["agreement"] == pytest.approx(m["accuracy"]) and m["baseline.agreement"] == pytest.approx(m["baseline.accuracy"])
    assert m["counts.texts"] == m["samples"] and m["counts.has_model"] == 1
    assert 0 <= m["counts.positives"] <= m["samples"]
    # the package carries host-independent numbers only: no timings, memory, custom metrics or verdict
    with zipfile.ZipFile(project / "artifacts/tiny/package.zip") as zf:
        packaged = json.loads(zf.read("metrics.json"))
    assert "accuracy" in packaged and "goals" not in packaged
    assert not any(k.split(".")[-1].startswith(("memory", "latency", "agreement", "texts")) for k in packaged)


# ---------------------------------------------------------------- failing, warning, relaxing
def test_failing_goal_is_one_line_leaves_no_metrics_and_relaxing_it_measures_nothing(project):
    before = metrics_of(project)
    set_goals(project, GOALS + "\n[[evaluate.goal]]\n" + FAILING + "\n")
    run = doit(project, "optimize:tiny")
    assert run.rc != 0, run
    assert "Traceback" not in run.out + run.err
    lines = error_lines(run)
    assert len(lines) == 1, run
    assert lines[0] == ("error: eval:tiny failed: goal size_mb min_improvement_percent 99.9 vs baseline: "
                        f"measured improvement {100 * (before['baseline.size_mb'] - before['size_mb']) / before['baseline.size_mb']:.3g}% "
                        f"({before['size_mb']:.4g} vs {before['baseline.size_mb']:.4g})"), lines[0]
    assert "goals of tiny: 3 of 4 met" in run.out and "FAILED goal size_mb" in run.out
    assert not (project / "artifacts/tiny/metrics.json").exists()   # the old one is gone too
    assert "package:tiny" not in run.executed
    built, restored = measurement_labels(run)
    assert built == [] and "eval:tiny latency" in restored and "eval:tiny model quality" in restored, run

    # failures are not cached: the same build fails again, the same way
    again = doit(project, "optimize:tiny")
    assert again.rc != 0 and error_lines(again) == lines, again

    # relaxing the goal: the verdict is computed again from stored measurements
    set_goals(project, GOALS + "\n[[evaluate.goal]]\n" + RELAXED + "\n")
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    built, restored = measurement_labels(run)
    assert built == [], run
    assert {"eval:tiny latency", "eval:tiny model quality", "eval:tiny baseline quality",
            "eval:tiny model memory", "eval:tiny baseline memory", "eval:tiny model agreement"} <= set(restored), run
    assert [b for b in run.built if b.startswith("pass:")] == []
    after = metrics_of(project)
    assert after["goals"]["passed"] is True and len(after["goals"]["results"]) == 4
    assert {k: v for k, v in after.items() if k != "goals"} == {k: v for k, v in before.items() if k != "goals"}


def test_warn_mode_prints_a_warning_and_keeps_the_verdict(project):
    set_goals(project, "\n[[evaluate.goal]]\n" + FAILING + "\n", evaluate_extra='\non_goal_failure = "warn"')
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    warnings = [ln for ln in run.out.splitlines() if ln.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(
        "warning: eval:tiny: goal size_mb min_improvement_percent 99.9 vs baseline: measured improvement "), run
    assert error_lines(run) == []
    verdict = metrics_of(project)["goals"]
    assert verdict["passed"] is False and [r["passed"] for r in verdict["results"]] == [False]
    assert (project / "artifacts/tiny/package.zip").is_file()


# ---------------------------------------------------------------- baseline from another recipe
def test_baseline_recipe_is_measured_and_built_first(project):
    (project / "recipes/tiny-fp32.toml").write_text(recipe_text(""))   # the same chain, no quantize
    text = tiny_recipe().replace('baseline = "export"', 'baseline_recipe = "tiny-fp32"')
    (project / "recipes/tiny.toml").write_text(text)
    run = doit(project, "eval:tiny")
    assert run.rc == 0, run
    assert "pass:tiny-fp32/fuse" in run.executed   # the eval task depends on the other recipe's model
    m = metrics_of(project)
    fuse = project / "artifacts/tiny-fp32/steps/fuse/model.onnx"
    assert m["baseline.size_mb"] == fuse.stat().st_size / 1e6
    assert m["baseline.accuracy"] == pytest.approx(m["baseline.agreement"])
    # the model and its tokenizer did not change: its measurements come back from the store
    assert "eval:tiny model quality" in run.restored and "eval:tiny baseline quality" in run.built, run


@pytest.mark.parametrize("value, extra, hint", [
    ('"nope"', "", "unknown recipe 'nope'"),
    ('"tiny"', "", "names this recipe"),
    ('"hf"', "", "a baseline must be an ONNX model"),
    ('"tiny-fp32"', 'baseline = "export"\n', "not both"),
])
def test_bad_baseline_recipe_is_one_line(project, value, extra, hint):
    (project / "recipes/tiny-fp32.toml").write_text(recipe_text(""))
    (project / "recipes/hf.toml").write_text('[model]\npath = "models/tiny"\n')
    text = tiny_recipe().replace('baseline = "export"', extra + f"baseline_recipe = {value}")
    (project / "recipes/tiny.toml").write_text(text)
    run = doit(project, "list")
    assert run.rc == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: recipes/tiny.toml: evaluate.baseline_recipe: "), run
    assert hint in lines[0], lines[0]


# ---------------------------------------------------------------- custom metrics
def test_editing_a_custom_metric_module_remeasures_only_its_metrics(project):
    (project / "mymetrics.py").write_text(MYMETRICS.replace('"texts": len(texts)', '"texts": 2 * len(texts)'))
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    built, restored = measurement_labels(run)
    # the module's content is in the key of every metric it defines
    assert sorted(built) == ["eval:tiny baseline agreement", "eval:tiny baseline counts",
                             "eval:tiny model agreement", "eval:tiny model counts"], run
    assert "eval:tiny model quality" in restored and "eval:tiny latency" in restored
    m = metrics_of(project)
    assert m["counts.texts"] == 2 * m["samples"]


@pytest.mark.parametrize("code, needles", [
    ("def agreement(texts):\n    return 1 / 0\n",
     ["mymetrics:agreement raised ZeroDivisionError: division by zero", "(traceback: "]),
    ("def agreement(texts):\n    return 'high'\n", ["mymetrics:agreement returned 'high'; expected a finite number"]),
    ("def agreement(texts):\n    return {'a b': 1}\n", ["returned a dict with key 'a b'"]),
    ("def agreement(text):\n    return 1\n", ["mymetrics:agreement takes 'text', which evaluation does not give"]),
    ("def other():\n    return 1\n", ["has no function 'agreement'"]),
    ("import no_such_module_here\n", ["raised ModuleNotFoundError: No module named 'no_such_module_here'"]),
])
def test_custom_metric_errors_are_one_line_naming_the_key(project, code, needles):
    (project / "mymetrics.py").write_text(code + "\n\ndef counts(texts):\n    return 1\n")
    run = doit(project, "optimize:tiny")
    assert run.rc != 0, run
    assert "Traceback" not in run.out + run.err
    lines = error_lines(run)
    assert len(lines) == 1, run
    assert lines[0].startswith("error: eval:tiny failed: recipes/tiny.toml: evaluate.custom[0].function: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert not (project / "artifacts/tiny/metrics.json").exists()


def test_missing_custom_metric_module_stops_before_anything_runs(project):
    (project / "mymetrics.py").unlink()
    run = doit(project, "list")
    assert run.rc == 2, run
    assert run.err.strip() == ("error: recipes/tiny.toml: evaluate.custom[0].function: no module 'mymetrics' "
                               "in the project folder (expected mymetrics.py)"), run


# ---------------------------------------------------------------- recipe validation
BAD = {
    "unknown-metric": ('[[evaluate.goal]]\nmetric = "acuracy"\nmax_drop = 0.1\n',
                       "evaluate.goal[0].metric", "did you mean 'accuracy'"),
    "not-measured": ('[[evaluate.goal]]\nmetric = "throughput_per_s"\nmin_speedup = 1.1\n',
                     "evaluate.goal[0].metric", "add 'throughput' to evaluate.metrics"),
    "two-kinds": ('[[evaluate.goal]]\nmetric = "accuracy"\nmax_drop = 0.1\nat_least = 0.5\n',
                  "evaluate.goal[0]", "exactly one of"),
    "no-kind": ('[[evaluate.goal]]\nmetric = "accuracy"\n', "evaluate.goal[0]", "found none"),
    "negative-drop": ('[[evaluate.goal]]\nmetric = "accuracy"\nmax_drop = -0.1\n',
                      "evaluate.goal[0].max_drop", ">= 0.0"),
    "speedup-of-accuracy": ('[[evaluate.goal]]\nmetric = "accuracy"\nmin_speedup = 1.1\n',
                            "evaluate.goal[0].min_speedup", "min_improvement_percent"),
    "typo-kind": ('[[evaluate.goal]]\nmetric = "accuracy"\nmax_drop = 0.1\nmax_dorp = 1\n',
                  "evaluate.goal[0].max_dorp", "did you mean 'max_drop'"),
    "goal-not-array": ('goal = 3\n', "evaluate.goal", "array of tables"),
    "custom-reserved": ('[[evaluate.custom]]\nname = "accuracy"\nfunction = "m:f"\nhigher_is_better = true\n',
                        "evaluate.custom[0].name", "already uses"),
    "custom-no-direction": ('[[evaluate.custom]]\nname = "mine"\nfunction = "m:f"\n',
                            "evaluate.custom[0].higher_is_better", "missing"),
    "custom-bad-function": ('[[evaluate.custom]]\nname = "mine"\nfunction = "m.py:f"\nhigher_is_better = true\n',
                            "evaluate.custom[0].function", "module:function"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_goal_or_custom_metric_is_one_line_exit_2(project, case):
    tables, key, hint = BAD[case]
    if tables.startswith("goal ="):
        text = tiny_recipe("", custom="", evaluate_extra="\n" + tables)
    else:
        text = tiny_recipe(tables, custom="")
    (project / "recipes/tiny.toml").write_text(text)
    run = doit(project, "list")
    assert run.rc == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: recipes/tiny.toml: {key}: "), run
    assert hint in lines[0], lines[0]


@pytest.mark.parametrize("edit, key, hint", [
    ("no-baseline", "evaluate.goal[0].max_drop", "compares with a baseline"),
    ("warn-without-goals", "evaluate.on_goal_failure", "only used with goals"),
    ("max-runs", "evaluate.latency.max_runs", "must be >= latency.runs (6)"),
])
def test_settings_that_cannot_work_are_refused(project, edit, key, hint):
    if edit == "no-baseline":
        text = tiny_recipe('[[evaluate.goal]]\nmetric = "accuracy"\nmax_drop = 0.1\n', custom="")
        text = text.replace('baseline = "export"\n', "")
    elif edit == "warn-without-goals":
        text = tiny_recipe("", custom="", evaluate_extra='\non_goal_failure = "warn"')
    else:
        text = tiny_recipe("", custom="").replace("runs = 5,", "runs = 6, max_runs = 5,")
    (project / "recipes/tiny.toml").write_text(text)
    run = doit(project, "list")
    assert run.rc == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: recipes/tiny.toml: {key}: "), run
    assert hint in lines[0], lines[0]


# ---------------------------------------------------------------- goal arithmetic
def _verdict(goal: str, target: float, metric: str, value: float, base: float | None) -> dict:
    metrics = {metric: value} | ({f"baseline.{metric}": base} if base is not None else {})
    return goals.check([{"metric": metric, "goal": goal, "target": target}], metrics, [])["results"][0]


def test_drop_improvement_and_speedup_follow_the_metric_direction():
    # accuracy: higher is better, so a drop is a lower value
    assert _verdict("max_drop", 0.01, "accuracy", 0.80, 0.81)["passed"]          # exactly 0.01, despite rounding
    assert not _verdict("max_drop", 0.01, "accuracy", 0.79, 0.81)["passed"]
    assert _verdict("max_drop_percent", 2.0, "accuracy", 0.80, 0.81)["measured"] == pytest.approx(100 / 81)
    # latency: lower is better, so a drop is a higher value, and a speed-up is baseline / model
    assert not _verdict("max_drop_percent", 10.0, "latency_ms.p50", 12.0, 10.0)["passed"]
    assert _verdict("min_improvement", 4.0, "latency_ms.p50", 5.0, 10.0)["measured"] == 5.0
    assert _verdict("min_speedup", 2.0, "latency_ms.p50", 5.0, 10.0)["passed"]
    assert not _verdict("min_speedup", 2.5, "latency_ms.p50", 5.0, 10.0)["passed"]
    # throughput: higher is better, so a speed-up is model / baseline
    assert _verdict("min_speedup", 1.5, "throughput_per_s", 30.0, 20.0)["measured"] == 1.5
    # thresholds ignore the baseline
    r = _verdict("at_most", 20.0, "size_mb", 23.0, None)
    assert not r["passed"] and goals.describe(r) == "goal size_mb at_most 20: measured 23"
    r = _verdict("max_drop", 0.01, "accuracy", 0.791, 0.814)
    assert goals.describe(r) == "goal accuracy max_drop 0.01 vs baseline: measured drop 0.023 (0.791 vs 0.814)"


def test_median_interval_uses_order_statistics():
    xs = list(range(1, 101))                     # 1..100: ranks 40 and 61 for n = 100
    assert timing.median_ci(xs) == (40, 61)
    assert timing.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)   # too few runs: the whole range
    assert timing.ci_percent([10.0] * 20) == 0

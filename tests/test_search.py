"""Search ([search]): the space checked like any recipe key, trials as ordinary tasks that share
their prefixes, failures and missed goals recorded instead of stopping the build, selection,
seeded samplers, and re-runs that compute nothing (or only what is new)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from buildkit import copy_project, doit, make_project, recipe_text, steps_of, wipe_outputs

GRID = """
[search]
sampler = "grid"

[search.space]
"quantize.per_channel" = [true, false]
"quantize.reduce_range" = [false]
"""
SIZE_GOAL = """
[[evaluate.goal]]
metric = "size_mb"
min_improvement_percent = 50
"""


def modelmake(project, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelmake.commands.cli", *args], cwd=project,
                          capture_output=True, text=True)


def search_recipe(search: str, goals: str = "") -> str:
    return recipe_text() + goals + search


def error_of(project, search: str, goals: str = "") -> str:
    from modelmake.inputs.recipe import RecipeError

    (project / "recipes" / "tinys.toml").write_text(search_recipe(search, goals))
    with pytest.raises(RecipeError) as info:
        steps_of(project)
    line = str(info.value)
    assert "\n" not in line and line.startswith("recipes/tinys.toml: "), line
    return line


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A project with the tiny model, for checks that compile recipes without building."""
    return make_project(tmp_path_factory.mktemp("scratch") / "p", {"tinys": search_recipe(GRID)})


# ---------------------------------------------------------------- the space is checked before anything runs
@pytest.mark.parametrize("search, expected", [
    ('[search.space]\n"quantize.per_chanel" = [true]\n',
     """search.space."quantize.per_chanel": pass type 'dynamic-int8' has no key 'per_chanel' (did you mean 'quantize.per_channel'?)"""),
    ('[search.space]\n"quantise.per_channel" = [true]\n',
     """search.space."quantise.per_channel": no step 'quantise' (did you mean 'quantize.per_channel'?)"""),
    ('[search.space]\n"quantize.per_channel" = [true, "no"]\n',
     """search.space."quantize.per_channel"[1]: expected a boolean, got a string 'no'"""),
    ('[search.space]\n"quantize.samples" = [64]\n',
     """search.space."quantize.samples": pass type 'dynamic-int8' has no key 'samples'"""),
    ('[search.space]\n"quantize.type" = ["dynamic-int9"]\n',
     """search.space."quantize.type"[0]: unknown pass type 'dynamic-int9' (did you mean 'dynamic-int8'?)"""),
    ('[search.space]\n"quantize.type" = ["static-int8"]\n',
     """search.space."quantize.type": pass type 'static-int8' needs quantize.data; give it in the space"""),
    ('[search.space]\n',
     "search.space: is empty"),
    ('[search]\nsamplr = "grid"\n[search.space]\n"quantize.per_channel" = [true]\n',
     "search.samplr: unknown key (did you mean 'sampler'?)"),
    ('[search]\nsampler = "tpe"\n[search.space]\n"quantize.per_channel" = [true]\n',
     "search.max_trials: sampler 'tpe' needs max_trials"),
    ('[search.space]\n"finetune.learning_rate" = { low = 1e-4, high = 1e-3 }\n',
     """search.space."finetune.learning_rate": a range is for sampler 'random' or 'tpe'"""),
    ('[search]\nobjective = ["latency.p50"]\n[search.space]\n"quantize.per_channel" = [true]\n',
     "search.objective[0]: unknown metric 'latency.p50' (did you mean 'latency_ms.p50'?)"),
    ('[search]\nselect = "best:acuracy"\n[search.space]\n"quantize.per_channel" = [true]\n',
     "search.select: unknown metric 'acuracy' (did you mean 'accuracy'?)"),
])
def test_a_bad_space_is_one_line_naming_the_key(scratch, search, expected):
    assert expected in error_of(scratch, search)


def test_grid_trials_are_tasks_sharing_their_prefix(scratch):
    (scratch / "recipes" / "tinys.toml").write_text(search_recipe(GRID.replace("[false]", "[false, true]")))
    steps = steps_of(scratch)
    trials = sorted(t.removeprefix("eval:tinys@") for t in steps if t.startswith("eval:"))
    assert trials == sorted(f"per_channel:{a},reduce_range:{b}" for a in ("true", "false") for b in ("false", "true"))
    # the chain as written keeps the recipe's names; steps every trial shares are one task each
    for name in ("finetune", "export", "fuse", "quantize"):
        assert [t for t in steps if t.startswith("pass:") and t.endswith(f"/{name}")
                and t.split("/")[0] == "pass:tinys"] == [f"pass:tinys/{name}"]
    assert sum(t.endswith("/finetune") for t in steps) == 1
    assert sum(t.endswith("/quantize") for t in steps) == 4
    assert not steps["pass:tinys/fuse"].tolerant and steps["pass:tinys/quantize"].tolerant
    assert "search:tinys" in steps and steps["optimize:tinys"].needs == ("search:tinys",)


def test_keys_of_other_pass_types_apply_only_to_them(scratch):
    (scratch / "recipes" / "tinys.toml").write_text(search_recipe("""
[search.space]
"quantize.type" = ["dynamic-int8", "static-int8"]
"quantize.per_channel" = [true, false]
"quantize.data" = ["reviews"]
"quantize.samples" = [8, 16]
"""))
    steps = steps_of(scratch)
    trials = sorted(t.removeprefix("eval:tinys@") for t in steps if t.startswith("eval:"))
    # samples and data are static-int8's: two dynamic trials, four static ones
    assert len(trials) == 6, trials
    assert sum(t.startswith("quantize:dynamic-int8,") for t in trials) == 2
    static = steps["pass:tinys@quantize:static-int8,per_channel:false,data:reviews,samples:16/quantize"]
    assert static.type == "static-int8" and static.config["samples"] == 16 and static.config["per_channel"] is False


# ---------------------------------------------------------------- a grid search built
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("grid") / "p", {"tinys": search_recipe(GRID)})
    run = doit(project, "-n", "2", "optimize:tinys")
    assert run.rc == 0, run
    return project, run


def test_search_selects_a_trial_and_places_its_model_metrics_and_package(built):
    project, run = built
    art = project / "artifacts" / "tinys"
    search = json.loads((art / "search.json").read_text())
    names = [t["trial"] for t in search["trials"]]
    assert sorted(names) == ["per_channel:false,reduce_range:false", "per_channel:true,reduce_range:false"]
    assert search["selected"] in names and all(t["status"] == "meets goals" for t in search["trials"])
    # both trials are timed again together and the selection uses those figures
    assert sorted(search["finalists"]) == sorted(names)
    retimed = {t["trial"]: t["retimed"]["latency_ms.p50"] for t in search["trials"]}
    assert search["selected"] == min(retimed, key=retimed.get)
    chosen = search["selected"]
    folder = art / "steps" / "quantize" if chosen == "per_channel:true,reduce_range:false" else \
        art / "trials" / chosen / "steps" / "quantize"
    assert (art / "model.onnx").read_bytes() == (folder / "model.onnx").read_bytes()
    metrics = json.loads((art / "metrics.json").read_text())
    assert metrics["search"]["trial"] == chosen and metrics["accuracy"] == next(
        t for t in search["trials"] if t["trial"] == chosen)["metrics"]["accuracy"]
    assert (art / "package.zip").is_file()
    # fine-tuning, export and fusion ran once for both trials
    for step in ("finetune", "export", "fuse"):
        assert f"pass:tinys/{step}" in run.built, run
    assert sum(b.endswith("/finetune") for b in run.built) == 1, run.built


def test_a_rerun_runs_nothing_and_status_knows_the_trials(built):
    project, _ = built
    run = doit(project, "optimize:tinys")
    assert run.rc == 0 and not run.executed, run
    out = modelmake(project, "status")
    assert out.returncode == 0, out.stderr
    assert "up to date   eval:tinys@per_channel:false,reduce_range:false" in out.stdout, out.stdout
    assert "up to date   search:tinys" in out.stdout
    why = modelmake(project, "why", "search:tinys")
    assert why.returncode == 0 and "selected trial" in why.stdout, why.stdout + why.stderr
    trial = "tinys@per_channel:false,reduce_range:false"
    why = modelmake(project, "why", f"eval:{trial}")
    assert why.returncode == 0 and f"eval:{trial}: up to date" in why.stdout, why.stdout + why.stderr
    # a trial is a column of `compare`, next to the recipe (whose metrics are the selected trial's)
    compare = modelmake(project, "compare", "--format", "json", trial, "tinys")
    assert compare.returncode == 0, compare.stderr
    columns = json.loads(compare.stdout)["recipes"]
    assert set(columns) == {trial, "tinys"} and columns[trial]["metrics"]["accuracy"] > 0


def test_adding_a_value_builds_exactly_the_new_trials(built, tmp_path):
    project = copy_project(built[0], tmp_path)
    (project / "recipes" / "tinys.toml").write_text(search_recipe(GRID.replace("[false]", "[false, true]")))
    run = doit(project, "optimize:tinys")
    assert run.rc == 0, run
    assert sorted(b for b in run.built if b.startswith(("pass:", "eval:")) and " " not in b) == [
        "eval:tinys@per_channel:false,reduce_range:true", "eval:tinys@per_channel:true,reduce_range:true",
        "pass:tinys@per_channel:false,reduce_range:true/quantize",
        "pass:tinys@per_channel:true,reduce_range:true/quantize"], run.built
    assert len(json.loads((project / "artifacts/tinys/search.json").read_text())["trials"]) == 4


def test_after_a_fresh_checkout_everything_is_restored(built, tmp_path):
    project = copy_project(built[0], tmp_path)
    before = (project / "artifacts/tinys/search.json").read_text()
    wipe_outputs(project)
    run = doit(project, "optimize:tinys")
    assert run.rc == 0, run
    assert not [b for b in run.built if b.startswith(("pass:", "eval:", "search:"))], run.built
    assert "search:tinys finalists: restored from store" in run.out
    assert (project / "artifacts/tinys/search.json").read_text() == before


# ---------------------------------------------------------------- failures and goals
FAILING = """
[search.space]
"quantize.type" = ["dynamic-int8", "test-fail-if-marker"]
"quantize.marker" = ["FAIL", "absent"]
"""


def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path):
    project = make_project(tmp_path / "p", {"tinys": search_recipe(FAILING, SIZE_GOAL)})
    (project / "FAIL").write_text("")
    env = {"MODELMAKE_PLUGINS": "failing_pass"}
    run = doit(project, "optimize:tinys", env=env)
    assert run.rc == 0, run
    search = json.loads((project / "artifacts/tinys/search.json").read_text())
    status = {t["trial"]: t["status"] for t in search["trials"]}
    assert status == {"quantize:dynamic-int8": "meets goals",
                      "quantize:test-fail-if-marker,marker:FAIL": "failed",
                      "quantize:test-fail-if-marker,marker:absent": "misses goals"}, status
    failed = next(t for t in search["trials"] if t["status"] == "failed")
    assert "marker file FAIL exists" in failed["error"]
    assert search["selected"] == "quantize:dynamic-int8"
    assert "the trial is recorded as failed and the search goes on" in run.out
    # nothing of the failure is kept: the next build tries that trial again, and only it
    again = doit(project, "optimize:tinys", env=env)
    assert again.rc == 0, again
    assert "pass:tinys@quantize:test-fail-if-marker,marker:FAIL/quantize" in again.executed, again
    assert not {t for t in again.executed if t.startswith("pass:") and "FAIL" not in t}, again.executed
    (project / "FAIL").unlink()
    fixed = doit(project, "optimize:tinys", env=env)
    assert fixed.rc == 0, fixed
    search = json.loads((project / "artifacts/tinys/search.json").read_text())
    assert {t["status"] for t in search["trials"]} == {"meets goals", "misses goals"}


def test_no_trial_meeting_the_goals_fails_naming_the_closest(built, tmp_path):
    project = copy_project(built[0], tmp_path)
    impossible = "\n[[evaluate.goal]]\nmetric = \"size_mb\"\nat_most = 0.0001\n"
    (project / "recipes" / "tinys.toml").write_text(search_recipe(GRID, impossible))
    run = doit(project, "optimize:tinys")
    assert run.rc != 0
    line = next(x for x in run.out.splitlines() if x.startswith("error: search:tinys failed"))
    assert "no trial meets the goals; closest: per_channel:" in line and "size_mb at_most" in line, line
    assert not (project / "artifacts/tinys/model.onnx").exists()
    assert json.loads((project / "artifacts/tinys/search.json").read_text())["selected"] is None
    # measurements do not depend on goals: nothing was measured again
    assert not [b for b in run.built if " " in b], run.built
    text = search_recipe(GRID, impossible).replace('[evaluate]\ndata = "reviews"', '[evaluate]\non_goal_failure = "warn"\ndata = "reviews"')
    (project / "recipes" / "tinys.toml").write_text(text)
    run = doit(project, "optimize:tinys")
    assert run.rc == 0, run
    assert "selected it anyway (on_goal_failure = \"warn\")" in run.out
    assert (project / "artifacts/tinys/model.onnx").is_file()


# ---------------------------------------------------------------- tpe: seeded, replayed from the store
TPE = """
[search]
sampler = "tpe"
max_trials = 6
seed = 3

[search.space]
"quantize.per_channel" = [true, false]
"quantize.reduce_range" = [false, true]
"quantize.weight_type" = ["qint8", "quint8"]
"""


def test_tpe_search_is_planned_and_replayed_without_computing(built, tmp_path):
    project = copy_project(built[0], tmp_path)
    (project / "recipes" / "tinys.toml").write_text(search_recipe(TPE))
    first = doit(project, "optimize:tinys")
    assert first.rc == 0, first
    plan = json.loads((project / "artifacts/tinys/search-plan.json").read_text())
    assert len(plan["assignments"]) == 6
    search = json.loads((project / "artifacts/tinys/search.json").read_text())
    assert "tpe asks for trial" in first.out   # trials after the random start are chosen while it runs
    # the plan names every trial now: restored (not computed), and then nothing runs at all
    second = doit(project, "optimize:tinys")
    assert second.rc == 0, second
    assert not [b for b in second.built if b.startswith(("pass:", "eval:"))], second.built
    assert "tpe asks for trial" not in second.out
    assert json.loads((project / "artifacts/tinys/search.json").read_text())["trials"] == search["trials"]
    third = doit(project, "optimize:tinys")
    assert third.rc == 0 and not third.executed, third


def test_samplers_are_seeded():
    from modelmake.search import sampler
    from modelmake.search.space import Param, SearchSpec

    params = (Param("quantize.per_channel", "quantize", "per_channel", (True, False), kind="bool"),
              Param("finetune.learning_rate", "finetune", "learning_rate", None, 1e-5, 1e-3, True, kind="float"))
    spec = SearchSpec("random", 5, 0, ("latency_ms.p50",), "fastest-meeting-goals", 3, params)
    first = sampler.random_plan(spec)
    assert first == sampler.random_plan(spec) and len(first) == 5
    assert first != sampler.random_plan(SearchSpec("random", 5, 1, *[getattr(spec, f) for f in
                                                   ("objective", "select", "finalists", "params")]))
    assert all(1e-5 <= a["finetune.learning_rate"] <= 1e-3 and float(f"{a['finetune.learning_rate']:.3g}")
               == a["finetune.learning_rate"] for a in first)

    tpe = SearchSpec("tpe", 8, 0, ("latency_ms.p50",), "fastest-meeting-goals", 3, params)

    def result(a):  # a made-up but deterministic landscape
        return [a["finetune.learning_rate"] * (2 if a["quantize.per_channel"] else 1)], 0.0
    runs = [sampler.tpe_run(tpe, [False], result) for _ in range(2)]
    assert runs[0] == runs[1]
    # the random start planned when tasks load is what the run asks first
    assert sampler.startup_plan(tpe) == runs[0][:sampler.startup(tpe)]


# ---------------------------------------------------------------- selection rules
def _outcome(name, latency, accuracy, passed=True):
    from modelmake.search.select import Outcome

    goals = {"passed": passed, "results": [{"metric": "accuracy", "goal": "at_least", "target": 0.8,
                                            "value": accuracy, "baseline": None, "measured": accuracy,
                                            "passed": passed}]}
    return Outcome(name, {}, {"latency_ms.p50": latency, "accuracy": accuracy, "goals": goals})


def _higher(metric):
    return metric == "accuracy"


def test_selection_rules():
    from modelmake.search import select

    trials = [_outcome("slow-accurate", 10.0, 0.90), _outcome("fast", 4.0, 0.82), _outcome("mid", 6.0, 0.86),
              _outcome("dominated", 8.0, 0.84), _outcome("fastest-bad", 2.0, 0.70, passed=False)]
    objective = ("latency_ms.p50", "accuracy")
    pick = lambda rule, metric: select.select(trials, rule, metric, objective, _higher, "fail").selected.suffix  # noqa: E731
    assert pick("fastest-meeting-goals", "latency_ms.p50") == "fast"
    assert pick("best:accuracy", "accuracy") == "slow-accurate"
    assert pick("pareto", None) == "mid"   # the front's balanced point
    front = select.pareto_front([t for t in trials if t.meets_goals], objective, _higher)
    assert [t.suffix for t in front] == ["slow-accurate", "fast", "mid"]
    # finalists: the best few by the timed metric, re-timed figures then decide
    fin = select.finalists([t for t in trials if t.meets_goals], "latency_ms.p50", objective, _higher, 2)
    assert [t.suffix for t in fin] == ["fast", "mid"]
    fin[1].retimed = {"latency_ms.p50": 3.0}
    assert pick("fastest-meeting-goals", "latency_ms.p50") == "mid"
    # once timed together, only the finalists compete: another trial's own figure (from another
    # moment) does not beat their joint timing
    fin[0].retimed, fin[1].retimed = {"latency_ms.p50": 5.0}, {"latency_ms.p50": 5.5}
    trials.append(_outcome("lucky", 4.5, 0.83))
    together = select.select(trials, "fastest-meeting-goals", "latency_ms.p50", objective, _higher, "fail", fin)
    assert together.selected.suffix == "fast"

    misses = [_outcome("a", 3.0, 0.70, passed=False), _outcome("b", 2.0, 0.75, passed=False)]
    with pytest.raises(select.NoTrialSelected, match=r"^no trial meets the goals; closest: b \(0 of 1 met; goal accuracy"):
        select.select(misses, "fastest-meeting-goals", "latency_ms.p50", objective, _higher, "fail")
    fallback = select.select(misses, "fastest-meeting-goals", "latency_ms.p50", objective, _higher, "warn")
    assert fallback.selected.suffix == "b" and "selected it anyway" in fallback.warning
    failed = [select.Outcome("x", {}, None, "pass:t/q: boom")]
    with pytest.raises(select.NoTrialSelected, match="every trial failed; x: pass:t/q: boom"):
        select.select(failed, "pareto", None, objective, _higher, "fail")


def test_the_shipped_search_recipe_compiles_to_eight_trials():
    from pathlib import Path

    from buildkit import REPO
    from modelmake.build.compile import load_steps

    _, steps = load_steps(Path(REPO))
    trials = [s.task for s in steps if s.task.startswith("eval:bert-int8-search@")]
    assert len(trials) == 8, trials
    finetunes = [s.task for s in steps if s.task.startswith("pass:bert-int8-search") and s.task.endswith("/finetune")]
    assert finetunes == ["pass:bert-int8-search/finetune"]


def test_an_alternative_pass_type_keeps_what_the_recipe_set(scratch):
    # the recipe sets per_channel = false (not dynamic-int8's default); static-int8 has the key too
    text = search_recipe('[search.space]\n"quantize.type" = ["dynamic-int8", "static-int8"]\n"quantize.data" = ["reviews"]\n')
    (scratch / "recipes" / "tinys.toml").write_text(text.replace("per_channel = true", "per_channel = false"))
    steps = steps_of(scratch)
    static = next(s for t, s in steps.items() if t.startswith("pass:tinys@quantize:static-int8"))
    from modelmake import passes

    defaults = {f.name: f.default for f in passes.get("static-int8").fields}
    assert static.config["per_channel"] is False
    assert static.config["activation_type"] == defaults["activation_type"]


def test_a_clone_with_the_remote_store_restores_the_whole_search(built, tmp_path):
    """`modelmake push` carries the finalists' joint timing and the package too: CI computes nothing."""
    remote = tmp_path / "remote"
    remote.mkdir()
    env = {"MODELMAKE_REMOTE": f"file://{remote}"}
    push = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "push"], cwd=built[0],
                          capture_output=True, text=True, env={**os.environ, **env})
    assert push.returncode == 0, push.stdout + push.stderr
    assert "search:tinys (" in push.stdout and "package:tinys (" in push.stdout, push.stdout
    clone = make_project(tmp_path / "clone", {"tinys": search_recipe(GRID)})
    run = doit(clone, "optimize:tinys", env=env)
    assert run.rc == 0, run
    assert not run.built, run.built
    assert "search:tinys finalists: restored from store" in run.out
    assert (clone / "artifacts/tinys/package.zip").read_bytes() == (built[0] / "artifacts/tinys/package.zip").read_bytes()


def test_no_recipe_can_start_from_a_searching_recipe(scratch):
    (scratch / "recipes" / "tinys.toml").write_text(search_recipe(GRID))
    (scratch / "recipes" / "after.toml").write_text('[model]\nrecipe = "tinys"\n')
    try:
        from modelmake.inputs.recipe import RecipeError

        with pytest.raises(RecipeError, match=r"^recipes/after.toml: model.recipe: recipe 'tinys' searches: "):
            steps_of(scratch)
    finally:
        (scratch / "recipes" / "after.toml").unlink()

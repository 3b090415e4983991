"""The action of search:<recipe>: judge every trial, time the finalists again together, select
one, and place its model, metrics and package as the recipe's own; write search.json.

Trial metrics were each measured in their own evaluation, at different moments on a shared
machine; the finalists (the best few by the timed metric the selection uses) are timed again in
one run, in turns, as one stored measurement keyed by their content and the host, so a re-run
restores it instead of timing again. A tpe search asks Optuna for its trials in order, telling
each result; trials its plan did not name are built here, through the same steps and store as
doit's tasks (build/trial_steps.py), and the plan is written for the next run.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from modelmake.build import targets
from modelmake.build.steps import EvalStep, SearchStep, Step, TrialRef
from modelmake.core import digest
from modelmake.core.digest import folder_content
from modelmake.core.files import atomic_file
from modelmake.core.progress import say
from modelmake.metrics import goals
from modelmake.search import select
from modelmake.search.select import Outcome
from modelmake.store import Store

TIMING_VERSION = 1
TIMING_LIBRARIES = ("onnxruntime", "tokenizers")


def outcome_of(t: TrialRef) -> Outcome:
    failure = targets.failure_of(Path(t.metrics))
    if failure is not None:
        return Outcome(t.suffix, t.params, None, f"{failure['task']}: {failure['error']}")
    return Outcome(t.suffix, t.params, json.loads(Path(t.metrics).read_bytes()))


def run_search(step: SearchStep, store: Store, run_step: Callable[[Step], Any], local: Callable) -> dict:
    spec = step.spec
    custom = step.evaluate["custom"]

    def higher(metric: str) -> bool:
        return bool(goals.direction(metric, custom))

    refs = list(step.trials)
    if spec.sampler == "tpe":
        refs = _tpe(step, refs, higher, run_step)
    elif spec.sampler == "random":
        from modelmake.search import sampler

        sampler.write_plan(Path(step.plan), spec, list(step.assignments))
    outcomes = [outcome_of(t) for t in refs]
    by_suffix = {t.suffix: t for t in refs}
    for o in outcomes:
        if o.failed:
            say(f"  {step.task}: trial {o.suffix} failed ({o.error})")
    eligible = [o for o in outcomes if o.meets_goals]
    finalists = select.finalists(eligible, spec.select_metric, spec.objective, higher, spec.finalists)
    timing_key, built = None, False
    if len(finalists) > 1:
        timing_key, timings, built = _retime(step, store, [by_suffix[o.suffix] for o in finalists], local)
        for o in finalists:
            o.retimed = timings[o.suffix]
    try:
        chosen = select.select(outcomes, spec.select, spec.select_metric, spec.objective, higher,
                               step.evaluate["on_goal_failure"], finalists if len(finalists) > 1 else None)
    except select.NoTrialSelected:
        _write_json(Path(step.out), _summary(step, outcomes, finalists, None))
        for out in step.outputs()[1:]:   # an earlier winner would pass for this search's
            targets.remove(Path(out))
        raise
    if chosen.warning:
        say(f"warning: {step.task}: {chosen.warning}")
    winner = by_suffix[chosen.selected.suffix]
    _write_json(Path(step.out), _summary(step, outcomes, finalists, chosen))
    targets.place_file(local(winner.model) / "model.onnx", Path(step.model_out))
    metrics = dict(chosen.selected.metrics)
    metrics["search"] = {"trial": winner.suffix, "params": winner.params, "selected_by": chosen.rule,
                         "retimed": chosen.selected.retimed or None}
    _write_json(Path(step.metrics_out), metrics)
    say(f"  {step.task}: selected {winner.suffix} ({chosen.rule}); model at {step.model_out}")
    if step.package is not None:
        result = run_step(dataclasses.replace(step.package, model=winner.model, tokenizer=winner.tokenizer))
        if not isinstance(result, dict):
            raise RuntimeError(f"packaging the selected trial failed: {result}")
    return {"key": timing_key, "built": built}


def _write_json(path: Path, data: dict) -> None:
    atomic_file(path, lambda tmp: tmp.write_bytes(json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"))
    targets.record(path)


# ---------------------------------------------------------------- finalists timed together
def _retime(step: SearchStep, store: Store, trials: list[TrialRef], local: Callable) -> tuple[str, dict, bool]:
    """{trial suffix: {timed metric: value}} of the finalists (and the baseline, for speed-ups),
    timed in turns in one run; stored under a key of their content, the settings and the host."""
    lat = step.evaluate["latency"]
    models = {t.suffix: (t.model, t.tokenizer) for t in trials}
    if step.baseline:
        models["baseline"] = (step.baseline, step.baseline_tokenizer or trials[0].tokenizer)
    key = digest.key_of({
        "kind": "search-timing", "latency": lat, "host": step.host, "version": TIMING_VERSION,
        "libraries": digest.library_versions(TIMING_LIBRARIES), "data": folder_content(step.data_dir),
        "data_spec": step.data, "max_samples": step.evaluate["max_samples"],
        "models": {role: [folder_content(m), folder_content(tok)] for role, (m, tok) in models.items()}})

    def measure(folder: Path) -> None:
        from modelmake.core.textenc import TOKENIZER_FILES
        from modelmake.inputs.data import evaluation_rows
        from modelmake.metrics import evaluate

        texts, _ = evaluation_rows(local(step.data_dir), step.data, step.evaluate["max_samples"])
        say(f"  {step.task}: timing {len(trials)} finalists together: {', '.join(t.suffix for t in trials)}")
        paths = {role: (local(m) / "model.onnx", local(tok, TOKENIZER_FILES)) for role, (m, tok) in models.items()}
        result = evaluate.time_in_turns(paths, texts, lat)
        (folder / "result.json").write_bytes(digest.canonical(result))

    obj, built = store.get_or_build(key, measure, f"{step.task} finalists")
    say(f"  {step.task} finalists: {'timed' if built else 'restored from store'} (key {key[:12]})")
    measured = json.loads((obj / "result.json").read_bytes())
    base = measured.get("baseline", {})
    out = {}
    for t in trials:
        m = measured[t.suffix]
        timed = {k: v for k, v in m.items() if k.startswith("latency_ms.") or k == "throughput_per_s"}
        if base.get("latency_ms.p50") and m.get("latency_ms.p50"):
            timed["speedup_x.latency_p50"] = base["latency_ms.p50"] / m["latency_ms.p50"]
        out[t.suffix] = timed
    return key, out, built


# ---------------------------------------------------------------- search.json
def _summary(step: SearchStep, outcomes: list[Outcome], finalists: list[Outcome],
             chosen: select.Selection | None) -> dict:
    spec = step.spec
    front = {o.suffix for o in (chosen.front if chosen else [])}
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"trial": o.suffix, "params": o.params}
        if o.failed:
            row.update(status="failed", error=o.error)
        else:
            row.update(status="meets goals" if o.meets_goals else "misses goals",
                       metrics={k: v for k, v in o.metrics.items() if k != "goals"},
                       goals=o.verdict, pareto=o.suffix in front)
            if o.retimed:
                row["retimed"] = o.retimed
        rows.append(row)
    return {
        "recipe": step.recipe, "recipe_file": step.recipe_file, "search": spec.settings(),
        "trials": rows,
        "finalists": [o.suffix for o in finalists],
        "timing": ("the finalists' latency and throughput were timed again together, in turns, in one run; "
                   "the selection used those figures" if len(finalists) > 1 else
                   "each trial's own evaluation (no finalists timed together)"),
        "selected": chosen.selected.suffix if chosen else None,
        "selected_by": chosen.rule if chosen else None,
        "warning": chosen.warning if chosen else None,
    }


# ---------------------------------------------------------------- tpe: ask, build, tell
def _tpe(step: SearchStep, refs: list[TrialRef], higher: Callable[[str], bool],
         run_step: Callable[[Step], Any]) -> list[TrialRef]:
    """Replay Optuna's TPE over the trials built so far, building in this process the trials it
    asks for beyond them; returns every trial of the search in the order asked."""
    from modelmake.search import sampler

    spec = step.spec
    known = {t.suffix: t for t in refs}
    order: list[TrialRef] = []
    asked: list[dict] = []

    def result_of(assignment: dict) -> tuple[list[float] | None, float]:
        asked.append(assignment)
        ref = _trial_of(step, asked, known, run_step)
        if ref.suffix not in {t.suffix for t in order}:
            order.append(ref)
        o = outcome_of(ref)
        if o.failed:
            return None, 0.0
        values = [o.value(m) for m in spec.objective]
        if any(v is None for v in values):
            return None, 0.0
        return values, float(len(o.verdict["results"]) - o.goals_met) if o.verdict else 0.0

    sampler.tpe_run(spec, [higher(m) for m in spec.objective], result_of)
    sampler.write_plan(Path(step.plan), spec, asked)
    return order


def _trial_of(step: SearchStep, asked: list[dict], known: dict[str, TrialRef], run_step) -> TrialRef:
    """The trial of the last assignment asked for: one doit built, or one built here now."""
    from modelmake.build.compile import load_plugins
    from modelmake.build.layout import layouts
    from modelmake.build.project import find_project
    from modelmake.build.trial_steps import search_steps
    from modelmake.inputs.recipe import load_recipes
    from modelmake.search import space, trials

    project = find_project(Path("."))
    load_plugins()
    recipes = load_recipes(project.recipes_dir, project.root)
    lay = layouts(project, recipes)[step.recipe]
    r = lay.recipe
    spec = space.parse(r, step.recipe_file)
    suffix = trials.derive(r, spec, step.recipe_file, asked[-1]).suffix
    if suffix in known:
        return known[suffix]
    common = {"recipe": r.name, "base": str(lay.base), "store": step.store, "remote": step.remote}
    steps = search_steps(project, lay, common, extra=asked)
    ref = next(s for s in steps if isinstance(s, SearchStep)).trials
    ref = next(t for t in ref if t.suffix == suffix)
    say(f"  {step.task}: tpe asks for trial {suffix}; building it")
    for s in _chain(steps, ref):
        if _in_place(s):
            continue
        result = run_step(s)
        if not isinstance(result, dict):
            raise RuntimeError(f"trial {suffix}: {result}")
    known[suffix] = ref
    return ref


def _chain(steps: list[Step], ref: TrialRef) -> list[Step]:
    """The passes and the evaluation a trial needs, in build order."""
    from modelmake.build.steps import PassStep

    maker = {s.out: s for s in steps if isinstance(s, PassStep)}
    ev = next(s for s in steps if isinstance(s, EvalStep) and s.out == ref.metrics)
    need, todo = {ev.task}, list(ev.inputs().values())
    while todo:
        s = maker.get(todo.pop())
        if s is not None and s.task not in need:
            need.add(s.task)
            todo += list(s.inputs().values())
    return [s for s in steps if s.task in need]


def _in_place(s: Step) -> bool:
    """Its targets hold the result of its current key (doit ran it this build); a failed trial's
    targets never do (they have no record of what was placed)."""
    from modelmake.build import records

    try:
        key = s.key(folder_content)
    except OSError:
        return False
    return all(records.placed(s, out, key) for out in s.outputs())

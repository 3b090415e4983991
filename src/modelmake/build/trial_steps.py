"""A recipe with a [search] -> its steps: the source, every trial's passes and evaluation, the
search step, and optimize:<recipe> after it.

Trials share what they have in common. A pass whose chain up to it (every step's type and
config) is the same in two trials is one task with one folder: the recipe's own name for it
(`pass:<recipe>/finetune`) while it is the recipe's chain as written, else the first trial that
needs it (`pass:<recipe>@<trial>/quantize`). Steps that all trials share are ordinary tasks; the
others are tolerant: their failure marks the trials that need them failed (runner._guarded,
targets.place_failure) and the search goes on.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from modelmake.build import compile as compiling
from modelmake.build.layout import Layout, trial_chain
from modelmake.build.project import Project
from modelmake.build.steps import PublishStep, SearchStep, Step, TrialRef
from modelmake.core import digest
from modelmake.core.hostinfo import host_fingerprint
from modelmake.inputs.recipe import RecipeError
from modelmake.search import space, trials as trialset

SEARCH_VERSION = 1
SEARCH_LIBRARIES = ("onnxruntime", "optuna")
PLAN_FILE = "search-plan.json"


def plan_path(lay: Layout) -> Path:
    return lay.base / PLAN_FILE


def assignments(project: Project, lay: Layout, spec: space.SearchSpec) -> tuple[list[dict[str, Any]], bool]:
    """(the assignments whose trials doit builds, whether they are all of them). Grid: the
    product. Random and tpe: the plan of the last run with these settings; without one, random's
    draws, or tpe's random first trials (the search step asks for the rest while it runs)."""
    if spec.sampler == "grid":
        return trialset.grid(spec), True
    from modelmake.search import sampler   # Optuna only when no plan says what it chose

    planned = sampler.read_plan(project.root / plan_path(lay), spec)
    if planned is not None:
        return planned, spec.sampler == "random"
    try:
        if spec.sampler == "random":
            return sampler.random_plan(spec), True
        return sampler.startup_plan(spec), False
    except sampler.OptunaMissing as e:
        raise RecipeError(compiling._shown(project, lay.recipe), "search.sampler", str(e)) from None


def search_steps(project: Project, lay: Layout, common: dict, extra: list[dict[str, Any]] | None = None
                 ) -> list[Step]:
    """Every step of a searching recipe (`extra`: assignments asked for while the search runs)."""
    r = lay.recipe
    shown = compiling._shown(project, r)
    spec = space.parse(r, shown)
    planned, complete = assignments(project, lay, spec)
    chosen = trialset.trials(r, spec, shown, planned + (extra or []))
    steps: list[Step] = []
    source = compiling.source_step(project, lay, common)
    if source is not None:
        steps.append(source)
    chains = [_signatures(t.steps) for t in chosen]
    shared = _shared_length(chains)
    owners: dict[str, tuple[str, Path]] = {}    # chain signature -> (owning task's recipe part, folder)
    refs, baselines = [], set()
    own_chain = _signatures(r.steps)
    for t, sigs in zip(chosen, chains):
        tname, tbase = t.name(r.name), lay.base / "trials" / t.suffix
        outputs, new = [], []
        for i, sig in enumerate(sigs):
            if sig not in owners:
                mine = sig == own_chain[i]
                owners[sig] = (r.name if mine else tname,
                               (lay.base if mine else tbase) / "steps" / t.steps[i].name)
                new.append(i)
            outputs.append(owners[sig][1])
        trial_recipe = dataclasses.replace(r, name=tname, steps=list(t.steps), evaluate=_tolerant(r.evaluate))
        tlay = trial_chain(lay, trial_recipe, tbase, outputs)
        tcommon = {**common, "base": str(tbase)}
        for i, ps in enumerate(compiling.pass_steps(tlay, tcommon, project.executor)):
            if i not in new:
                continue
            owner = owners[sigs[i]][0]
            obase = lay.base if owner == r.name else tbase
            steps.append(dataclasses.replace(ps, task=f"pass:{owner}/{ps.name}", base=str(obase),
                                             recipe=r.name, tolerant=i >= shared))
        ev = compiling.eval_step(project, tlay, tcommon)
        steps.append(dataclasses.replace(ev, recipe=r.name, tolerant=True))
        baselines.add((ev.baseline, ev.baseline_tokenizer))
        refs.append(TrialRef(t.suffix, t.params, ev.out, str(tlay.final), str(tlay.tokenizer)))
    steps.append(_search_step(project, lay, common, spec, refs, baselines, complete, planned))
    steps.append(PublishStep(task=f"optimize:{r.name}", **common, description=r.description or f"search recipe {r.name}",
                             needs=(f"search:{r.name}",)))
    return steps


def _signatures(steps) -> list[str]:
    """For each step, a digest of the chain up to it (every step's type and config)."""
    return [digest.key_of([[s.type, s.config] for s in steps[:i + 1]]) for i in range(len(steps))]


def _shared_length(chains: list[list[str]]) -> int:
    """How many leading steps every trial has the same (chains: each trial's _signatures)."""
    n = 0
    while chains and all(len(c) > n for c in chains) and len({c[n] for c in chains}) == 1:
        n += 1
    return n


def _tolerant(ev: dict) -> dict:
    """A trial that misses a goal is recorded as such: the search judges it, its evaluation does not fail."""
    return {**ev, "on_goal_failure": "warn"} if ev.get("goal") else ev


def _search_step(project: Project, lay: Layout, common: dict, spec: space.SearchSpec, refs: list[TrialRef],
                 baselines: set, complete: bool, planned: list[dict[str, Any]]) -> SearchStep:
    r = lay.recipe
    base = lay.base
    # the baseline is timed with the finalists only when every trial measured the same one
    baseline, baseline_tok = next(iter(baselines)) if len(baselines) == 1 else (None, None)
    package = None
    if r.package:
        package = dataclasses.replace(compiling.package_step(lay, common), model="", tokenizer="",
                                      metrics=str(base / "metrics.json"))
    ev = r.evaluate
    return SearchStep(
        task=f"search:{r.name}", **common, spec=spec, trials=tuple(refs), planned=complete,
        assignments=tuple(planned) if spec.sampler != "grid" else (), evaluate=ev,
        model_task=r.task, data=compiling._data_spec(r.data[ev["data"]]), data_dir=str(lay.data[ev["data"]]),
        baseline=baseline, baseline_tokenizer=baseline_tok, host=host_fingerprint(), version=SEARCH_VERSION,
        libraries=_libraries(spec), recipe_file=compiling._shown(project, r), package=package,
        plan=str(plan_path(lay)), out=str(base / "search.json"), model_out=str(base / "model.onnx"),
        metrics_out=str(base / "metrics.json"))


def _libraries(spec: space.SearchSpec) -> dict[str, str]:
    return digest.library_versions(SEARCH_LIBRARIES if spec.sampler != "grid" else SEARCH_LIBRARIES[:1])

"""Random and TPE trials through Optuna (imported only here, only when such a search is planned or run).

Optuna's samplers are seeded and, for TPE, see trial results in the order the trials were asked
for, so the same recipe, data and host suggest the same trials. A suggested number is rounded to
three significant digits before it becomes a trial: names stay short and a value is the same
on every run. Each search keeps the trials it chose in a plan file (artifacts/<recipe>/
search-plan.json), so that loading tasks needs no Optuna: the plan names the trials doit builds,
and the search step asks the sampler again, in order, to check or extend it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from modelmake.core import digest
from modelmake.core.files import atomic_file
from modelmake.search.space import SearchSpec

PLAN_VERSION = 1
STARTUP = 4   # TPE's random trials before it models the results (Optuna's default is 10)


class OptunaMissing(Exception):
    plain = True


def require_optuna(sampler: str) -> None:
    """Raises OptunaMissing (one line: what to install) when Optuna is not installed."""
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        raise OptunaMissing(f"sampler {sampler!r} needs Optuna: pip install \"modelmake[search]\" (or optuna)")


def plan_id(spec: SearchSpec) -> str:
    """What the sampler's suggestions follow from (the results aside)."""
    return digest.key_of({"search": spec.settings(), "version": PLAN_VERSION})


def read_plan(path: Path, spec: SearchSpec) -> list[dict[str, Any]] | None:
    """The assignments of the last run of this search, or None (no plan, or one of other settings)."""
    try:
        plan = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("id") != plan_id(spec) or not isinstance(plan.get("assignments"), list):
        return None
    return plan["assignments"]


def write_plan(path: Path, spec: SearchSpec, assignments: list[dict[str, Any]]) -> None:
    body = json.dumps({"id": plan_id(spec), "sampler": spec.sampler, "assignments": assignments},
                      indent=1, sort_keys=True).encode() + b"\n"
    atomic_file(Path(path), lambda tmp: tmp.write_bytes(body))


def _distributions(spec: SearchSpec) -> dict:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out = {}
    for p in spec.params:
        if not p.is_range:   # by index: a choice may be a list, which Optuna does not take
            out[p.key] = CategoricalDistribution(list(range(len(p.values))))
        elif p.kind == "int":
            out[p.key] = IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step_size or 1))
        else:
            out[p.key] = FloatDistribution(p.low, p.high, log=p.log, step=p.step_size)
    return out


def assignment_of(spec: SearchSpec, params: dict[str, Any]) -> dict[str, Any]:
    """Optuna's suggestion -> space key -> value."""
    out = {}
    for p in spec.params:
        v = params[p.key]
        if not p.is_range:
            out[p.key] = p.values[v]
        elif p.kind == "int":
            out[p.key] = int(v)
        else:
            out[p.key] = min(p.high, max(p.low, float(f"{v:.3g}")))
    return out


def _quiet() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def random_plan(spec: SearchSpec) -> list[dict[str, Any]]:
    """max_trials seeded random assignments (they do not depend on results)."""
    require_optuna(spec.sampler)
    import optuna

    _quiet()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    dists = _distributions(spec)
    return [assignment_of(spec, study.ask(dists).params) for _ in range(spec.max_trials)]


def startup(spec: SearchSpec) -> int:
    return min(STARTUP, spec.max_trials)


class TPE:
    """Optuna's TPE sampler asked in order and told every result (minimizing or maximizing each
    objective; goals as constraints, so a trial that misses one counts as infeasible)."""

    def __init__(self, spec: SearchSpec, higher: list[bool]):
        require_optuna(spec.sampler)
        import optuna

        _quiet()
        self.spec = spec
        sampler = optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=startup(spec))
        self.study = optuna.create_study(sampler=sampler,
                                         directions=["maximize" if h else "minimize" for h in higher])
        self.dists = _distributions(spec)

    def ask(self):
        trial = self.study.ask(self.dists)
        return trial, assignment_of(self.spec, trial.params)

    def tell(self, trial, values: list[float] | None, shortfall: float) -> None:
        """values: the objective's metrics (None: the trial failed); shortfall > 0: goals missed."""
        import optuna

        if values is None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        trial.set_constraint("goals", shortfall)   # > 0: infeasible; TPE prefers feasible trials
        self.study.tell(trial, values)


def tpe_run(spec: SearchSpec, higher: list[bool], result_of: Callable[[dict], tuple[list[float] | None, float]]
            ) -> list[dict[str, Any]]:
    """Ask max_trials times, each time telling the result of the trial asked before (result_of
    builds or reads it). Returns the assignments in the order asked."""
    tpe = TPE(spec, higher)
    out = []
    for _ in range(spec.max_trials):
        trial, assignment = tpe.ask()
        values, shortfall = result_of(assignment)
        tpe.tell(trial, values, shortfall)
        out.append(assignment)
    return out


def startup_plan(spec: SearchSpec) -> list[dict[str, Any]]:
    """TPE's first trials: random, so they do not depend on results and doit can build them ahead."""
    tpe = TPE(spec, [False] * len(spec.objective))
    return [tpe.ask()[1] for _ in range(startup(spec))]

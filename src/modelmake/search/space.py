"""A recipe's `[search]` table -> a validated SearchSpec: what may vary, how trials are chosen,
and what makes one trial better than another.

Every space key names a step and one of its keys (`"quantize.per_channel"`), or the step's `type`
to try alternative passes at that position. Every value is checked against the pass declarations
before anything runs, like any recipe key, and a problem is one RecipeError naming
`search.space."<key>"` (with the close match of a misspelt step or key).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelmake import passes as registry
from modelmake.core import values
from modelmake.core.values import show
from modelmake.inputs import dataspec
from modelmake.inputs.recipe import Recipe, check_metric, measured_metrics
from modelmake.inputs.tables import RecipeError, Table, close_matches, key_segment
from modelmake.passes.fields import Field

SAMPLERS = ("grid", "random", "tpe")
SELECT_MODES = ("fastest-meeting-goals", "pareto")   # and "best:<metric>"
RANGE_KEYS = ("low", "high", "log", "step")
FASTEST = "latency_ms.p50"


@dataclass(frozen=True)
class Param:
    """One key of the space: `values` for a list of choices, else a range (random and tpe only)."""

    key: str                       # as written: "quantize.per_channel"
    step: str                      # the step's name
    name: str                      # the step's key, or "type"
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step_size: float | None = None
    kind: str = "str"              # int | float for a range

    @property
    def is_range(self) -> bool:
        return self.values is None


@dataclass(frozen=True)
class SearchSpec:
    sampler: str
    max_trials: int | None         # None: grid, the whole product
    seed: int
    objective: tuple[str, ...]     # metrics; each one's direction is the catalogue's
    select: str                    # "fastest-meeting-goals" | "pareto" | "best:<metric>"
    finalists: int                 # trials re-timed together before the selection
    params: tuple[Param, ...]

    @property
    def select_metric(self) -> str | None:
        """The metric `select` orders by (None for "pareto")."""
        if self.select == "fastest-meeting-goals":
            return FASTEST
        return self.select.partition(":")[2] or None

    def settings(self) -> dict[str, Any]:
        """What the search's key and `modelmake why` see."""
        return {"sampler": self.sampler, "max_trials": self.max_trials, "seed": self.seed,
                "objective": list(self.objective), "select": self.select, "finalists": self.finalists,
                "space": {p.key: list(p.values) if p.values is not None else
                          {"low": p.low, "high": p.high, "log": p.log, "step": p.step_size} for p in self.params}}


SEARCH = {f.name: f for f in (
    Field("sampler", "str", "grid", "how trials are chosen: every combination (grid), seeded random "
          "draws, or Optuna's TPE sampler (seeded), which learns from the trials before", choices=SAMPLERS),
    Field("max_trials", "int", None, "trials to build at most (random and tpe: required; grid: "
          "the first ones of the product)", min=1),
    Field("seed", "int", 0, "seed of the random and tpe samplers"),
    Field("objective", "list[str]", None, "metrics that make a trial better, each in its own "
          "direction (default: latency_ms.p50 and accuracy where measured); the Pareto front is over them",
          min_items=1),
    Field("select", "str", "fastest-meeting-goals", "which trial wins among those meeting the goals: "
          "'fastest-meeting-goals', 'pareto' (the front's balanced point) or 'best:<metric>'"),
    Field("finalists", "int", 3, "the best trials by their own evaluation that are timed again "
          "together, in turns, before the selection", min=1, max=16),
)}


def parse(r: Recipe, shown: str) -> SearchSpec | None:
    """The recipe's search, or None when it has no [search] table. Raises RecipeError."""
    if r.search is None:
        return None
    t = Table(shown, "search", r.search)
    if r.evaluate is None:
        raise RecipeError(shown, "search", "a search compares trials by their evaluation; add an [evaluate] table")
    sampler = t.field(SEARCH["sampler"])
    max_trials = t.field(SEARCH["max_trials"])
    if sampler != "grid" and max_trials is None:
        raise RecipeError(shown, t.key("max_trials"), f"sampler {sampler!r} needs max_trials (how many trials to build)")
    seed = t.field(SEARCH["seed"])
    measured = measured_metrics(r.evaluate)
    objective = t.field(SEARCH["objective"])
    if objective is None:
        objective = [m for m in (FASTEST, "accuracy") if m in measured] or [measured[0]]
    for i, m in enumerate(objective):
        check_metric(shown, f"{t.key('objective')}[{i}]", m, r.evaluate, r.task)
    if len(set(objective)) != len(objective):
        raise RecipeError(shown, t.key("objective"), "names a metric twice")
    select = t.field(SEARCH["select"])
    if select not in SELECT_MODES:
        metric = select.partition(":")[2] if select.startswith("best:") else None
        if not metric:
            raise RecipeError(shown, t.key("select"), f"expected 'fastest-meeting-goals', 'pareto' or "
                              f"'best:<metric>', got {show(select)}")
        check_metric(shown, t.key("select"), metric, r.evaluate, r.task)
    if select == "fastest-meeting-goals" and FASTEST not in measured:
        raise RecipeError(shown, t.key("select"), "'fastest-meeting-goals' needs latency; add 'latency' to "
                          "evaluate.metrics or select 'best:<metric>'")
    finalists = t.field(SEARCH["finalists"])
    space = t.table("space", required=True)
    if not space.value:
        raise RecipeError(shown, space.path, "is empty; name at least one key to vary, e.g. "
                          '"quantize.per_channel" = [true, false]')
    params = tuple(_param(r, space, key, sampler) for key in space.value)
    t.done(list(SEARCH) + ["space"])
    return SearchSpec(sampler, max_trials, seed, tuple(objective), select, finalists, params)


def _param(r: Recipe, space: Table, key: str, sampler: str) -> Param:
    shown, where = space.file, space.key(key)
    step_name, dot, name = key.partition(".")
    names = [s.name for s in r.steps]
    if not dot or not name:
        raise RecipeError(shown, where, "expected '<step>.<key>' (e.g. \"quantize.per_channel\") or '<step>.type'")
    if step_name not in names:
        hint = close_matches(step_name, names, n=1)
        tip = f" (did you mean '{hint[0]}.{name}'?)" if hint else f" (steps: {', '.join(names) or 'none'})"
        raise RecipeError(shown, where, f"no step {show(step_name)}{tip}")
    step = r.steps[names.index(step_name)]
    raw = space.value[key]
    space.seen.add(key)
    if name == "type":
        return Param(key, step_name, "type", _type_values(r, space, key, raw), kind="str")
    types = alternative_types(space.value, step_name, step.type)
    declared = {f.name: f for t in types for f in registry.get(t).fields}
    if name not in declared:
        hint = close_matches(name, sorted(declared), n=1)
        of = " or ".join(map(repr, types))
        tip = f" (did you mean '{step_name}.{hint[0]}'?)" if hint else ""
        raise RecipeError(shown, where, f"pass type {of} has no key {show(name)}{tip}")
    fields = [f for t in types for f in registry.get(t).fields if f.name == name]
    if isinstance(raw, dict):
        return _range(space, key, step_name, name, raw, fields[0], sampler)
    if not isinstance(raw, list) or not raw:
        raise RecipeError(shown, where, "expected a non-empty list of values (or, for random and tpe, "
                          "a range such as { low = 1e-5, high = 1e-3, log = true })")
    checked = []
    for i, v in enumerate(raw):
        for f in fields:
            try:
                v2 = f.check(v)
            except values.Problem as p:
                raise RecipeError(shown, f"{where}[{i}]{p.where}", p.message) from None
            if f.kind == "dataset":
                _check_dataset(shown, f"{where}[{i}]", r, v2, [t for t in types if f in registry.get(t).fields])
        checked.append(v2)
    if len({repr(v) for v in checked}) != len(checked):
        raise RecipeError(shown, where, "lists a value twice")
    return Param(key, step_name, name, tuple(checked), kind=fields[0].kind)


def alternative_types(space: dict, step_name: str, own: str) -> list[str]:
    """The pass types a step may have in a search: its own, or those its `type` key lists."""
    listed = space.get(f"{step_name}.type")
    if isinstance(listed, list) and all(isinstance(t, str) and registry.get(t) for t in listed):
        return list(dict.fromkeys(listed))
    return [own]


def _type_values(r: Recipe, space: Table, key: str, raw: Any) -> tuple:
    where = space.key(key)
    if not isinstance(raw, list) or not raw:
        raise RecipeError(space.file, where, "expected a non-empty list of pass types")
    for i, v in enumerate(raw):
        if not isinstance(v, str):
            raise RecipeError(space.file, f"{where}[{i}]", f"expected a pass type (string), got {show(v)}")
        if registry.get(v) is None:
            hint = close_matches(v, list(registry.REGISTRY), n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(registry.REGISTRY))})"
            raise RecipeError(space.file, f"{where}[{i}]", f"unknown pass type {show(v)}{tip}")
        allowed = registry.get(v).tasks
        if allowed is not None and r.task not in allowed:
            raise RecipeError(space.file, f"{where}[{i}]", f"{v!r} is for model.task {' or '.join(map(repr, allowed))}, "
                              f"and this recipe's is {r.task!r}")
    if len(set(raw)) != len(raw):
        raise RecipeError(space.file, where, "lists a pass type twice")
    return tuple(raw)


def _check_dataset(shown: str, key: str, r: Recipe, name: str, types: list[str]) -> None:
    """A dataset value is one of the recipe's, with the split and labels the pass reads."""
    if name not in r.data:
        raise RecipeError(shown, key, f"unknown dataset {show(name)} (defined: {', '.join(r.data) or 'none'})")
    for t in types:
        p = registry.get(t)
        dataspec.check_use(shown, key, name, r.data[name], "train", p.needs_labels, t)


def _range(space: Table, key: str, step_name: str, name: str, raw: dict, f: Field, sampler: str) -> Param:
    rt = Table(space.file, space.key(key), raw)
    if sampler == "grid":
        raise RecipeError(space.file, space.key(key), "a range is for sampler 'random' or 'tpe'; "
                          "grid takes a list of values")
    if f.kind not in ("int", "float"):
        raise RecipeError(space.file, space.key(key), f"{name} is {values.WANT[f.kind]}; a range is for numbers (list its values)")
    low = rt.get("low", f.kind, required=True, min=f.min, max=f.max)
    high = rt.get("high", f.kind, required=True, min=f.min, max=f.max)
    log = rt.get("log", "bool", False)
    step = rt.get("step", f.kind, None, min=0)
    rt.done(list(RANGE_KEYS))
    if not low < high:
        raise RecipeError(space.file, rt.key("high"), f"must be > low ({low}), got {high}")
    if log and low <= 0:
        raise RecipeError(space.file, rt.key("low"), f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise RecipeError(space.file, rt.key("step"), "a log range takes no step")
    return Param(key, step_name, name, None, low, high, log, step, kind=f.kind)


def shown_key(key: str) -> str:
    """`search.space."<key>"` as a key path."""
    return f"search.space.{key_segment(key)}"


"""Trials: a recipe's steps with one assignment of the space's values, under a stable name.

A trial is an ordinary chain: its steps are the recipe's with the assigned keys (or pass type)
changed and every other key as the recipe has it, normalized like any recipe step. Its name is
`<recipe>@<key>:<value>,...` over the keys that apply to it (a key of an alternative pass type
that this trial does not use is not part of it, so two assignments that differ only there are one
trial). Names avoid `=`, which doit reads as a command-line variable.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any

from modelmake import passes as registry
from modelmake.core import digest
from modelmake.core.values import toml_value
from modelmake.inputs import recipe as recipes
from modelmake.inputs.recipe import Recipe, Step
from modelmake.inputs.tables import RecipeError
from modelmake.search.space import SearchSpec, shown_key

NAME_OK = re.compile(r"^[A-Za-z0-9_.:,+-]{1,100}\Z")


@dataclass(frozen=True)
class Trial:
    suffix: str                    # the part after "@": "per_channel:false,reduce_range:true"
    params: dict[str, Any]         # space key -> value, for the keys that apply to this trial
    steps: tuple[Step, ...]        # the recipe's steps with those values

    def name(self, recipe: str) -> str:
        return f"{recipe}@{self.suffix}"


def grid(spec: SearchSpec) -> list[dict[str, Any]]:
    """Every combination of the listed values, the first key varying slowest, capped at max_trials."""
    combos = itertools.product(*(p.values for p in spec.params))
    out = [dict(zip((p.key for p in spec.params), c)) for c in combos]
    return out[:spec.max_trials] if spec.max_trials else out


def derive(r: Recipe, spec: SearchSpec, shown: str, assignment: dict[str, Any]) -> Trial:
    """The trial of one assignment (space key -> value). Raises RecipeError naming the space key
    whose value makes a chain that cannot be built (a missing required key, a format mismatch)."""
    steps, params = [], {}
    for s in r.steps:
        mine = {p.name: assignment[p.key] for p in spec.params if p.step == s.name and p.key in assignment}
        type_name = mine.pop("type", s.type)
        if f"{s.name}.type" in assignment:
            params[f"{s.name}.type"] = type_name
        p = registry.get(type_name)
        declared = {f.name for f in p.fields}
        full = {f.name: s.config.get(f.name, f.default) for f in p.fields} if type_name == s.type \
            else _carried(s, p)
        applied = {k: v for k, v in mine.items() if k in declared}
        full.update(applied)
        config = {f.name: list(full[f.name]) if isinstance(full[f.name], list) else full[f.name]
                  for f in p.fields if f.applies(full)}
        for f in p.fields:
            if f.required and config.get(f.name) is None:
                raise RecipeError(shown, shown_key(f"{s.name}.type"), f"pass type {type_name!r} needs "
                                  f"{s.name}.{f.name}; give it in the space: \"{s.name}.{f.name}\" = [...]")
        params.update({f"{s.name}.{k}": v for k, v in applied.items() if k in config})
        steps.append(Step(s.name, type_name, dict(sorted(config.items()))))
    ordered = {p.key: params[p.key] for p in spec.params if p.key in params}
    trial_recipe = dataclasses.replace(r, steps=steps)
    if r.model.kind != "recipe":
        try:
            recipes._check_flow(trial_recipe, r.model_format, shown)
        except RecipeError as e:
            key = next((k for k in ordered if k.endswith(".type")), None)
            if key is None:
                raise
            raise RecipeError(shown, shown_key(key), f"with {key} = {toml_value(ordered[key])}: {e.message}") from None
    return Trial(suffix_of(spec, ordered), ordered, tuple(steps))


def _carried(s: Step, p) -> dict[str, Any]:
    """An alternative pass type's config at step s: the keys the recipe set there (to other than
    their default) where this type has them too, this type's defaults for the rest."""
    own = {f.name: f.default for f in registry.get(s.type).fields}
    return {f.name: s.config[f.name] if f.name in s.config and s.config[f.name] != own.get(f.name) else f.default
            for f in p.fields}


def suffix_of(spec: SearchSpec, params: dict[str, Any]) -> str:
    """`per_channel:false,quantize:static-int8`: a key by its own name where that is unambiguous,
    a pass type by its step's name. Too long or unusual values: a digest of the assignment."""
    names = [p.name for p in spec.params]
    parts = []
    for p in spec.params:
        if p.key not in params:
            continue
        short = p.step if p.name == "type" else p.name if names.count(p.name) == 1 else p.key
        parts.append(f"{short}:{_value(params[p.key])}")
    text = ",".join(parts) or "as-written"
    if NAME_OK.match(text):
        return text
    return "t" + digest.key_of(params)[:10]


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return format(v, "g")
    if isinstance(v, list):
        return "+".join(map(_value, v)) or "none"
    return str(v)


def trials(r: Recipe, spec: SearchSpec, shown: str, assignments: list[dict[str, Any]]) -> list[Trial]:
    """The distinct trials of these assignments, in order."""
    out: dict[str, Trial] = {}
    for a in assignments:
        t = derive(r, spec, shown, a)
        out.setdefault(t.suffix, t)
    return list(out.values())

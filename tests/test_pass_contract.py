"""What every registered pass owes the rest of modelmake, checked pass by pass over the registry:
its config survives normalized dict -> typed config -> dict unchanged, every key is documented,
its part of the generated docs and schema is current, and importing it loads no heavy library."""
from __future__ import annotations

import json
import subprocess
import sys
import typing

import pytest

from buildkit import REPO
from modelmake import passes
from modelmake.commands import docgen, schema
from modelmake.core.values import ITEM_KIND, toml_value
from modelmake.inputs.recipe import RecipeError, parse_recipe
from modelmake.passes.base import GGUF, HF, ONNX, Field, Pass

PASSES = [passes.REGISTRY[t] for t in sorted(passes.REGISTRY)]
by_type = pytest.mark.parametrize("p", PASSES, ids=lambda p: p.type)
# libraries a no-op build must not pay for (house rules), and the ML libraries passes use
HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "datasets", "optuna", "dask", "fsspec",
         "onnxscript", "onnx_ir", "peft", "tokenizers", "safetensors")


def _other_value(f: Field, controls: dict):
    """A valid value of `f` other than its default (the gating value when `f` gates other keys)."""
    if f.name in controls:
        return controls[f.name]
    if f.kind == "dataset":
        return "reviews"
    item = ITEM_KIND.get(f.kind)
    if item is not None:
        return [f.choices[-1]] if f.choices else ([int(f.min or 0), int(f.min or 0) + 1] if item == "int" else ["x"])
    if f.choices:
        return next(c for c in f.choices if c != f.default)
    if f.kind == "bool":
        return not f.default
    if f.kind == "int":
        return f.default + 1 if f.max is None or f.default + 1 <= f.max else f.default - 1
    if f.kind == "float":
        return (f.default + f.max) / 2 if f.max is not None else f.default * 2 + 1
    return f"{f.default}x"


def _settings(p: Pass, variant: str) -> dict:
    """The keys a recipe step sets: only the required ones, or every key at another valid value
    (with each `when` made to hold, so that its gated keys may be set too)."""
    if variant == "required":
        return {f.name: _other_value(f, {}) for f in p.fields if f.required}
    controls = {f.when[0]: f.when[1] for f in p.fields if f.when is not None}
    return {f.name: _other_value(f, controls) for f in p.fields}


def _parsed_config(p: Pass, settings: dict, tmp_path) -> dict:
    """Step.config of a recipe whose one step is a `p` with `settings`."""
    model = {HF: "models/m", GGUF: "models/m.gguf"}.get(p.input_format, "models/m.onnx")
    task = "" if p.tasks is None else f'task = "{p.tasks[0]}"\n'
    keys = "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())
    text = (f'[model]\npath = "{model}"\n{task}\n[data.reviews]\npath = "data/r.csv"\nlabel = {{ map = {{ a = 0 }} }}\n\n'
            f'[[pass]]\nname = "step"\ntype = "{p.type}"\n{keys}')
    file = tmp_path / "recipes" / "contract.toml"
    file.parent.mkdir(exist_ok=True)
    file.write_text(text, encoding="utf-8")
    [step] = parse_recipe(file).steps
    return step.config


@by_type
@pytest.mark.parametrize("variant", ["required", "every key set"])
def test_config_round_trip(p, variant, tmp_path):
    settings = _settings(p, variant)
    normalized = _parsed_config(p, settings, tmp_path)
    cfg = p.config_class.from_dict(normalized)
    # the dict that goes into store keys comes back byte for byte, and the typed values are its own
    assert json.dumps(cfg.to_dict()) == json.dumps(normalized)
    assert cfg == p.config_class.make(**settings)
    hints = typing.get_type_hints(type(cfg))
    for f in p.fields:
        value = getattr(cfg, f.name)
        if f.name not in normalized:     # a `when` that does not hold: None in the config
            assert f.when is not None and value is None, f.name
            continue
        assert value == (tuple(normalized[f.name]) if f.kind in ITEM_KIND else normalized[f.name]), f.name
        assert _conforms(value, hints[f.name]), (f.name, value, hints[f.name])
    with pytest.raises(Exception):
        setattr(cfg, p.fields[0].name, None)   # frozen


def _conforms(value, hint) -> bool:
    """Whether `value` is of the annotated type (the few forms config_class writes)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        return any(_conforms(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, tuple) and all(_conforms(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


@by_type
def test_config_refuses_what_the_recipe_refuses(p, tmp_path):
    f = next((f for f in p.fields if not f.required and f.when is None), None)
    if f is not None:   # a pass without keys (gguf-to-hf) has only unknown ones to refuse
        settings = {**_settings(p, "required"), f.name: "not a number" if f.kind in ("bool", "int", "float") else 3.5}
        with pytest.raises(TypeError) as typed:
            p.config_class.make(**settings)
        with pytest.raises(RecipeError) as parsed:
            _parsed_config(p, settings, tmp_path)
        assert parsed.value.key == f"pass[0].{f.name}"
        assert str(typed.value) == f"{p.type}.{f.name}: {parsed.value.message}"
    with pytest.raises(TypeError, match="unknown config key"):
        p.config_class.make(no_such_key=1)


@by_type
def test_every_key_is_documented(p):
    assert p.summary and "\n" not in p.summary and len(p.summary) <= 100, p.summary
    assert p.summary[0].isupper() and not p.summary.endswith("."), p.summary
    assert not p.notes or (p.notes[0].isupper() and p.notes.endswith(".")), p.notes
    for f in p.fields:
        assert f.doc.strip() == f.doc and f.doc and not f.doc.endswith(".") and "\n" not in f.doc, (p.type, f.name)
    section = docgen.pass_section(p)
    assert all(f"| `{f.name}` |" in section for f in p.fields)


@by_type
def test_generated_docs_and_schema_are_current(p):
    assert docgen.pass_section(p) in (REPO / "docs/recipes.md").read_text(encoding="utf-8"), \
        "docs/recipes.md is stale: run python -m modelmake.commands.docgen --write docs/recipes.md"
    written = json.loads((REPO / "docs/recipe.schema.json").read_text(encoding="utf-8"))
    assert written["definitions"][f"pass-{p.type}"] == schema.pass_schema(p), \
        "docs/recipe.schema.json is stale: run modelmake schema --write docs/recipe.schema.json"


@by_type
def test_pass_modules_import_no_heavy_library(p):
    module = p.run.partition(":")[0]
    code = ("import importlib, pkgutil, sys\n"
            f"m = importlib.import_module({module!r})\n"
            "for info in pkgutil.walk_packages(getattr(m, '__path__', []), m.__name__ + '.'):\n"
            "    importlib.import_module(info.name)\n"
            f"print(sorted(h for h in {HEAVY!r} if h in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", (module, out.stdout)


def test_every_format_has_passes():
    """The registry the contract runs over is the real one (not emptied by an import mistake)."""
    assert len(PASSES) >= 10
    assert {p.input_format for p in PASSES} >= {HF, ONNX}

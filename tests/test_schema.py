"""docs/recipe.schema.json: current, valid JSON Schema that the shipped recipes pass and broken
recipes fail, as the recipe parser does."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from buildkit import REPO, to_toml
from modelmake.commands import schema
from modelmake.inputs.recipe import RecipeError, parse_recipe

SCHEMA_FILE = REPO / "docs/recipe.schema.json"
RECIPES = sorted((REPO / "recipes").glob("*.toml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    loaded = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(loaded)
    return jsonschema.Draft7Validator(loaded)


def test_schema_file_is_current():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema.render(), \
        "docs/recipe.schema.json is stale: run modelmake schema --write docs/recipe.schema.json"


def test_modelmake_schema_prints_it():
    out = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "schema"], capture_output=True,
                         text=True, check=True, cwd=REPO)
    assert out.stdout == SCHEMA_FILE.read_text(encoding="utf-8")


def test_there_are_shipped_recipes():
    assert len(RECIPES) == 12, RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_validates(recipe, validator):
    errors = [e.message for e in validator.iter_errors(tomllib.loads(recipe.read_text(encoding="utf-8")))]
    assert errors == [], errors


def _set(key: str, value):
    def edit(doc):
        *path, last = key.split(".")
        target = doc
        for p in path:
            target = target[int(p)] if isinstance(target, list) else target[p]
        target[last] = value
    return edit


def _drop(key: str):
    def edit(doc):
        *path, last = key.split(".")
        target = doc
        for p in path:
            target = target[p]
        del target[last]
    return edit


def _add_step(**step):
    return lambda doc: doc["pass"].append(step)


# (what, edit of bert-lora-int8.toml, recipe key the parser names): each is refused by both
BROKEN = {
    "unknown top-level key": (_set("extra", 1), "extra"),
    "unknown pass key": (_set("pass.0.epoch", 2), "pass[0].epoch"),
    "wrong type": (_set("pass.3.per_channel", "yes"), "pass[3].per_channel"),
    "below minimum": (_set("pass.0.epochs", 0), "pass[0].epochs"),
    "not a choice": (_set("pass.1.exporter", "jit"), "pass[1].exporter"),
    "unknown pass type": (_set("pass.2.type", "fusion"), "pass[2].type"),
    "gated key, condition unmet": (_set("pass.0.method", "full"), "pass[0].lora_r"),
    "two model sources": (_set("model.hub", "org/model"), "model"),
    "wheel without its digest": (_drop("model.sha256"), "model.sha256"),
    "unknown metric": (_set("evaluate.metrics", ["accuracy", "speed"]), "evaluate.metrics"),
    "string thread count": (_add_step(name="tune", type="session-tune", intra_op_threads=[1, "2"]),
                            "pass[4].intra_op_threads[1]"),
    "no thread count": (_add_step(name="tune", type="session-tune", intra_op_threads=[]), "pass[4].intra_op_threads"),
    "two goal targets": (_set("evaluate.goal", [{"metric": "accuracy", "at_least": 0.5, "at_most": 0.9}]),
                         "evaluate.goal[0]"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_recipe_fails_schema_and_parser(case, validator, tmp_path):
    edit, key = BROKEN[case]
    doc = tomllib.loads((REPO / "recipes/bert-lora-int8.toml").read_text(encoding="utf-8"))
    assert list(validator.iter_errors(doc)) == []
    doc = copy.deepcopy(doc)
    edit(doc)
    assert list(validator.iter_errors(doc)), f"the schema accepts: {case}"
    file = tmp_path / "recipes" / "broken.toml"
    file.parent.mkdir()
    file.write_text(to_toml(doc), encoding="utf-8")
    assert tomllib.loads(file.read_text(encoding="utf-8")) == doc
    with pytest.raises(RecipeError) as e:
        parse_recipe(file)
    assert e.value.key == key, (case, str(e.value))


def test_every_pass_type_is_one_alternative():
    from modelmake import passes

    got = schema.recipe_schema()
    alternatives = got["properties"]["pass"]["items"]["oneOf"]
    assert [a["$ref"] for a in alternatives] == [f"#/definitions/pass-{t}" for t in sorted(passes.REGISTRY)]
    for t, p in passes.REGISTRY.items():
        d = got["definitions"][f"pass-{t}"]
        assert d["properties"]["type"] == {"enum": [t], "description": p.summary}
        assert set(d["properties"]) == {"name", "type", *(f.name for f in p.fields)}


def test_editor_directive_in_docs_names_the_file():
    doc = (REPO / "docs/recipes.md").read_text(encoding="utf-8")
    assert "#:schema ../docs/recipe.schema.json" in doc
    taplo = tomllib.loads((REPO / ".taplo.toml").read_text(encoding="utf-8"))
    rule = taplo["rule"][0]
    assert (REPO / rule["schema"]["path"]).resolve() == SCHEMA_FILE.resolve()
    assert Path(REPO / "recipes/bert-int8.toml").match(rule["include"][0])

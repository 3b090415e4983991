"""Bad recipes end with exit status 2 and one line naming the file and the key: never a traceback."""
from __future__ import annotations

import pytest

from buildkit import QUANTIZE, doit, make_project, recipe_text

GOOD = recipe_text()


def _bad(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


CASES = {
    "toml-syntax": (_bad('name = "export"', 'name = "export'), "tiny.toml", "TOML syntax error"),
    "unknown-pass-type": (_bad('type = "dynamic-int8"', 'type = "dynamic-int9"'), "pass[3].type", "dynamic-int8"),
    "unknown-key": (_bad("per_channel = true", "per_chanel = true"), "pass[3].per_chanel", "per_channel"),
    "mistyped-key": (_bad("per_channel = true", 'per_channel = "yes"'), "pass[3].per_channel", "boolean"),
    "out-of-range": (_bad("epochs = 2", "epochs = 0"), "pass[0].epochs", ">= 1"),
    "missing-required": (_bad('data = "reviews"\nepochs', "epochs"), "pass[0].data", "missing"),
    "missing-model": (_bad('[model]\npath = "models/tiny"\n', ""), "model", "missing"),
    "unknown-dataset": (_bad('data = "reviews"\nepochs', 'data = "tweets"\nepochs'), "pass[0].data", "tweets"),
    "unknown-baseline": (_bad('baseline = "export"', 'baseline = "exprt"'), "evaluate.baseline", "exprt"),
    "unknown-recipe": (_bad('path = "models/tiny"', 'recipe = "nope"'), "model.recipe", "nope"),
    "missing-file": (_bad('path = "models/tiny"', 'path = "models/huge"'), "model.path", "models/huge"),
    "wrong-format-order": (GOOD.replace('type = "onnx-export"', 'type = "dynamic-int8"', 1), "pass[1].type", "ONNX"),
    "duplicate-step": (_bad('name = "fuse"', 'name = "export"'), "pass[2].name", "duplicate"),
}


@pytest.fixture(scope="module")
def base_project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("recipes") / "proj")


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_recipe_is_one_line_exit_2(base_project, case):
    text, key, hint = CASES[case]
    (base_project / "recipes/tiny.toml").write_text(text)
    run = doit(base_project, "list")
    assert run.rc == 2, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1, run
    assert "Traceback" not in run.out + run.err
    assert lines[0].startswith("error: recipes/tiny.toml: "), lines[0]
    assert key in lines[0] and hint in lines[0], lines[0]


def test_cycle_between_recipes(base_project):
    (base_project / "recipes/tiny.toml").write_text(GOOD)
    a = 'description = "a"\n[model]\nrecipe = "cyc-b"\n[[pass]]\nname = "q"\ntype = "dynamic-int8"\n'
    b = 'description = "b"\n[model]\nrecipe = "cyc-a"\n[[pass]]\nname = "q"\ntype = "dynamic-int8"\n'
    (base_project / "recipes/cyc-a.toml").write_text(a)
    (base_project / "recipes/cyc-b.toml").write_text(b)
    try:
        run = doit(base_project, "list")
    finally:
        (base_project / "recipes/cyc-a.toml").unlink()
        (base_project / "recipes/cyc-b.toml").unlink()
    assert run.rc == 2, run
    assert len(run.err.strip().splitlines()) == 1
    assert "model.recipe" in run.err and "cycle" in run.err and "cyc-a -> cyc-b -> cyc-a" in run.err


def test_recipe_from_another_recipe(base_project):
    (base_project / "recipes/tiny.toml").write_text(recipe_text(""))
    derived = 'description = "int8 of tiny"\n[model]\nrecipe = "tiny"\n' + QUANTIZE
    (base_project / "recipes/tiny-q.toml").write_text(derived)
    try:
        run = doit(base_project, "optimize:tiny-q")
    finally:
        (base_project / "recipes/tiny-q.toml").unlink()
    assert run.rc == 0, run
    assert (base_project / "artifacts/tiny-q/model.onnx").is_file()
    assert "pass:tiny-q/quantize" in run.built


def test_bad_pyproject_store_setting_is_one_line(base_project):
    (base_project / "recipes/tiny.toml").write_text(GOOD)
    pyproject = base_project / "pyproject.toml"
    try:
        for text, key in (("[tool.modelmake]\nstore = 1\n", "tool.modelmake.store"),
                          ("[tool]\nmodelmake = 3\n", "tool.modelmake")):
            pyproject.write_text(text)
            run = doit(base_project, "list")
            assert run.rc == 2, run
            assert len(run.err.strip().splitlines()) == 1 and "pyproject.toml" in run.err and key in run.err, run
    finally:
        pyproject.unlink()


def test_chain_of_recipes_without_passes_keeps_the_model(base_project):
    (base_project / "recipes/tiny.toml").write_text(recipe_text(""))
    (base_project / "recipes/tiny-b.toml").write_text('[model]\nrecipe = "tiny"\n')
    (base_project / "recipes/tiny-c.toml").write_text('[model]\nrecipe = "tiny-b"\n')
    try:
        run = doit(base_project, "optimize:tiny-c")
    finally:
        for name in ("tiny-b", "tiny-c"):
            (base_project / f"recipes/{name}.toml").unlink()
    assert run.rc == 0, run
    assert (base_project / "artifacts/tiny-c/model.onnx").read_bytes() == \
        (base_project / "artifacts/tiny/steps/fuse/model.onnx").read_bytes()

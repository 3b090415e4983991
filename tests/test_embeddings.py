"""Encoder models without a head (model.task = "feature-extraction"): export of the pooled
sentence embedding, fusion and int8 on it, the similarity metric against a baseline, recipe
errors, keys, and the package's predict.py printing embeddings. All on the tiny random BERT.

Tolerances: onnx-export vs torch 1e-5 (fp32, same math; measured ~1e-7); a text's embedding
alone vs padded in a batch 1e-5; a model against itself: cosine 1 within 1e-9 (float64 sums).
"""
from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import buildkit  # noqa: E402
from buildkit import doit, make_project, parse_text, recipe_error, steps_of  # noqa: E402
from int8ref import check_int8  # noqa: E402
from tinymodel import make_tiny_bert  # noqa: E402

from modelmake.metrics import evaluate
from modelmake.core import textenc  # noqa: E402
from modelmake.runtime import onnxmeta  # noqa: E402
from modelmake.runtime.onnxmeta import op_counts  # noqa: E402
from modelmake.passes.export.embeddings import pooling_of  # noqa: E402

FE = "feature-extraction"
TEXTS = ["good fun movie", "the plot was about a family and a war in the city " * 3,
         "awful ! boring and dull", "a", "the hero was superb but the script was weak"]

RECIPE = """\
[model]
path = "models/tiny"
task = "feature-extraction"

[data.reviews]
path = "data/reviews.csv"
label = {{ column = "category", map = {{ rotten = 0, fresh = 1 }} }}

[[pass]]
name = "export"
type = "onnx-export"

[[pass]]
name = "fuse"
type = "ort-fusion"

[[pass]]
name = "quantize"
type = "dynamic-int8"
{evaluate}
[package]
"""
EVALUATE = """
[evaluate]
data = "reviews"
metrics = {metrics}
baseline = "export"
max_length = 16
latency = {{ batch = 1, sequence = 16, warmup = 1, runs = 5, throughput_batch = 2, throughput_runs = 1 }}
"""


def recipe(metrics: str = '["similarity", "latency", "size"]', evaluate_table: str | None = None) -> str:
    table = EVALUATE.format(metrics=metrics) if evaluate_table is None else evaluate_table
    return RECIPE.format(evaluate=table)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster and does not stall on a busy host
    yield
    torch.set_num_threads(before)


run_pass = functools.partial(buildkit.run_pass, task=FE)


def embed(model_dir: Path, tokenizer_dir: Path, texts=TEXTS) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    enc = textenc.encode(tokenizer_dir, texts, max_length=64)
    return session.run(["embeddings"], {i.name: enc[i.name] for i in session.get_inputs()})[0]


def torch_embeddings(model_dir: Path, texts=TEXTS, pooling: str = "mean", normalize: bool = True) -> np.ndarray:
    """The sentence-transformers definition, computed in torch on a padded batch."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    return (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("embeddings")


@pytest.fixture(scope="module")
def tiny(work) -> Path:
    return make_tiny_bert(work / "tiny")  # a classifier checkpoint: its head is left out


@pytest.fixture(scope="module")
def exported(work, tiny) -> Path:
    return run_pass("onnx-export", tiny, work / "export")


@pytest.fixture(scope="module")
def fused(work, exported) -> Path:
    return run_pass("ort-fusion", exported, work / "fuse")


@pytest.fixture(scope="module")
def quantized(work, fused) -> Path:
    return run_pass("dynamic-int8", fused, work / "quantize", per_channel=True)


# --- export, fusion, int8 --------------------------------------------------------------------

def test_export_is_torch_mean_pooling_and_ignores_padding(exported, tiny):
    got = embed(exported, tiny)
    assert got.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(got, torch_embeddings(tiny), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # a text embedded alone (no padding) gives what it gives padded in a batch with a long text
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(embed(exported, tiny, [text])[0], got[i], atol=1e-5)
    props = onnxmeta.read(exported / "model.onnx")
    assert props[onnxmeta.TASK] == FE and props[onnxmeta.POOLING] == "mean" and props[onnxmeta.NORMALIZE] == "true"
    assert onnxmeta.ID2LABEL not in props  # no classes: the classifier head was not exported


def test_export_follows_sentence_transformers_pooling(work, tiny):
    st = work / "tiny-cls"
    shutil.copytree(tiny, st)
    (st / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (st / "1_Pooling").mkdir()
    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                              "pooling_mode_mean_tokens": False}))
    assert pooling_of(st) == ("cls", False) and pooling_of(tiny) == ("mean", True)
    out = run_pass("onnx-export", st, work / "export-cls")
    np.testing.assert_allclose(embed(out, st), torch_embeddings(st, pooling="cls", normalize=False), atol=1e-5)

    (st / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_max_tokens": True}))
    with pytest.raises(ValueError, match="pooling max_tokens"):
        pooling_of(st)


def test_fusion_and_int8_work_on_the_headless_encoder(fused, quantized, exported, tiny):
    ops = op_counts(fused / "model.onnx")
    assert ops.get("Attention") == 2 and ops.get("SkipLayerNormalization") and ops.get("EmbedLayerNormalization") == 1
    qops = op_counts(quantized / "model.onnx")
    assert qops.get("QAttention") == 2 and qops.get("MatMulInteger")
    np.testing.assert_allclose(embed(fused, tiny), embed(exported, tiny), atol=1e-5)
    assert onnxmeta.read(quantized / "model.onnx")[onnxmeta.TASK] == FE  # carried through the ONNX passes


# --- similarity -------------------------------------------------------------------------------

def test_similarity_of_a_model_with_itself_and_with_int8(exported, fused, quantized, tiny):
    onnx = lambda d: (d / "model.onnx", tiny)  # noqa: E731
    same = evaluate.measure_similarity(onnx(exported), onnx(exported), TEXTS, FE, batch_size=2, max_length=64)
    assert same["samples"] == len(TEXTS) and "similarity.agreement" not in same
    for k in ("similarity.cosine_mean", "similarity.cosine_min", "similarity.cosine_p5"):
        assert abs(same[k] - 1.0) < 1e-9, (k, same[k])
    q = evaluate.measure_similarity(onnx(quantized), onnx(exported), TEXTS, FE, batch_size=2, max_length=64)
    # unit vectors a, b: cos = 1 - |a - b|^2 / 2, and |a - b|^2 <= dims x (largest difference)^2
    embeddings = lambda d: evaluate.model_outputs(d / "model.onnx", tiny, TEXTS, FE, 2, 64)  # noqa: E731
    check_int8(embeddings, exported, quantized, 2e-2)
    rows = embeddings(exported)
    floor = 1 - rows.shape[1] * float(np.abs(embeddings(quantized) - rows).max()) ** 2 / 2
    assert floor <= q["similarity.cosine_min"] <= q["similarity.cosine_p5"] <= q["similarity.cosine_mean"] < 1.0
    f = evaluate.measure_similarity(onnx(fused), onnx(exported), TEXTS, FE, batch_size=2, max_length=64)
    assert f["similarity.cosine_min"] > 1 - 1e-6


def test_similarity_of_classifier_logits(work, tiny):
    fp32 = run_pass("onnx-export", tiny, work / "cls-export", task="text-classification")
    int8 = run_pass("dynamic-int8", fp32, work / "cls-int8", task="text-classification")
    pair = lambda d: (d / "model.onnx", tiny)  # noqa: E731
    same = evaluate.measure_similarity(pair(fp32), pair(fp32), TEXTS, "text-classification")
    assert same["similarity.agreement"] == 1.0 and abs(same["similarity.cosine_mean"] - 1) < 1e-9
    other = evaluate.measure_similarity(pair(int8), pair(fp32), TEXTS, "text-classification")
    assert 0 <= other["similarity.agreement"] <= 1 and other["similarity.cosine_mean"] < 1.0


def test_cosine_stats_edge_cases():
    a = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = np.array([[0.0, 0.0], [0.0, 0.0], [-1.0, -1.0]])
    out = evaluate.cosine_stats(a, b, classifier=False)
    # identical zero vectors match (1), a zero vector matches nothing else (0), opposite ones -1
    assert out["similarity.cosine_min"] == pytest.approx(-1.0) and out["similarity.cosine_mean"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="one shape"):
        evaluate.cosine_stats(a, b[:, :1], classifier=False)


# --- recipes: what a feature-extraction recipe may ask for -------------------------------------

def _parse(tmp_path: Path, text: str):
    return parse_text(tmp_path, text, "emb")


@pytest.mark.parametrize("text, where, says", [
    (recipe('["accuracy", "similarity"]'), "evaluate.metrics", "'accuracy' needs a classifier"),
    (recipe('["f1"]'), "evaluate.metrics", "'f1' needs a classifier"),
    (recipe(evaluate_table='\n[evaluate]\ndata = "reviews"\nmetrics = ["similarity"]\n'), "evaluate.metrics",
     "compares the model's outputs with a baseline's"),
    (recipe() + '\n[[evaluate.goal]]\nmetric = "similarity.cosine_mean"\nmax_drop = 0.01\n',
     "evaluate.goal[0].max_drop", "use at_least"),
    (recipe() + '\n[[evaluate.goal]]\nmetric = "similarity.agreement"\nat_least = 0.9\n',
     "evaluate.goal[0].metric", "needs a classifier"),
    (recipe().replace('[[pass]]\nname = "export"', '[[pass]]\nname = "tune"\ntype = "finetune"\ndata = "reviews"\n\n'
                      '[[pass]]\nname = "export"'), "pass[0].type", "'finetune' is for model.task 'text-classification'"),
])
def test_recipe_errors(tmp_path, text, where, says):
    line = recipe_error(tmp_path, text, "emb")
    assert line.startswith(f"recipes/emb.toml: {where}: ") and says in line, line


def test_default_metrics_follow_the_task(tmp_path):
    ev = _parse(tmp_path, recipe(evaluate_table='\n[evaluate]\ndata = "reviews"\nbaseline = "export"\n')).evaluate
    assert "similarity" in ev["metrics"] and not {"accuracy", "f1"} & set(ev["metrics"])
    ev = _parse(tmp_path, recipe(evaluate_table='\n[evaluate]\ndata = "reviews"\n')).evaluate
    assert "similarity" not in ev["metrics"] and "latency" in ev["metrics"]
    goal = '\n[[evaluate.goal]]\nmetric = "similarity.cosine_p5"\nat_least = 0.95\n'
    assert _parse(tmp_path, recipe() + goal).evaluate["goal"][0]["metric"] == "similarity.cosine_p5"


@pytest.fixture(scope="module")
def keyproj(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    make_project(root, {"emb": recipe(), "cls": recipe('["latency", "size"]').replace(FE, "text-classification")})
    return root


def test_keys_change_with_the_task(keyproj):
    steps = steps_of(keyproj)
    content = lambda folder: "same content"  # noqa: E731 - as if both recipes' inputs were equal
    assert steps["pass:emb/export"].key(content) != steps["pass:cls/export"].key(content)
    # ONNX passes do not read the task: the model they get says what it is
    assert steps["pass:emb/fuse"].key(content) == steps["pass:cls/fuse"].key(content)
    assert steps["eval:emb"].settings()["task"] == FE and steps["eval:cls"].settings()["task"] == "text-classification"
    assert steps["package:emb"].key(content, {}) != steps["package:cls"].key(content, {})


def test_a_bad_metric_is_one_line_from_doit(keyproj):
    (keyproj / "recipes" / "emb.toml").write_text(recipe('["accuracy"]'))
    run = doit(keyproj, "list")
    assert run.rc == 2 and run.err.strip().splitlines() == [
        "error: recipes/emb.toml: evaluate.metrics: 'accuracy' needs a classifier, and model.task is "
        "'feature-extraction' (the model outputs embeddings); measure 'similarity' against a baseline instead"]


def test_chained_recipes_keep_their_task(keyproj):
    (keyproj / "recipes" / "emb.toml").write_text(recipe())
    (keyproj / "recipes" / "more.toml").write_text('[model]\nrecipe = "emb"\n[[pass]]\nname = "p"\ntype = "ort-fusion"\n')
    try:
        run = doit(keyproj, "list")
        assert run.rc == 2 and "recipes/more.toml: model.task: recipe 'emb' makes an ONNX feature-extraction model" in run.err
    finally:
        (keyproj / "recipes" / "more.toml").unlink()


# --- a build: evaluation and package ----------------------------------------------------------

def test_build_measures_similarity_and_packages_embeddings(tmp_path):
    project = make_project(tmp_path / "proj", {"emb": recipe('["similarity", "size"]')})
    run = doit(project, "optimize:emb")
    assert run.rc == 0, str(run)
    metrics = json.loads((project / "artifacts/emb/metrics.json").read_text())
    assert 0.9 < metrics["similarity.cosine_p5"] <= metrics["similarity.cosine_mean"] < 1.0
    assert "accuracy" not in metrics and "baseline.similarity.cosine_mean" not in metrics

    with zipfile.ZipFile(project / "artifacts/emb/package.zip") as zf:
        zf.extractall(tmp_path / "pkg")
        packaged = json.loads(zf.read("metrics.json"))
    assert packaged["similarity.cosine_mean"] == metrics["similarity.cosine_mean"]  # portable: no timing
    config = json.loads((tmp_path / "pkg" / "inference_config.json").read_text())
    assert config["task"] == FE and config["output"] == "embeddings"
    assert config["embedding"] == {"pool_tokens": False, "pooling": "mean", "normalized": True}
    predict = [sys.executable, str(tmp_path / "pkg" / "predict.py")]
    out = subprocess.run(predict + ["--json", "good fun", "awful movie"], capture_output=True, text=True,
                         check=True, cwd=tmp_path)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["good fun", "awful movie"]
    expected = embed(project / "artifacts/emb/steps/quantize", project / "models/tiny", ["good fun", "awful movie"])
    np.testing.assert_allclose([r["embedding"] for r in rows], expected, atol=1e-5)
    shown = subprocess.run(predict + ["good fun"], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert shown.stdout.startswith("dim=32\tnorm=1.0000\t[") and shown.stdout.rstrip().endswith("\tgood fun")

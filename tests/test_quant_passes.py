"""static-int8, int4 and fp16 on the tiny random BERT of tinymodel.py.

Tolerances, as max |logit difference| against the pass's input model on the same texts (the tiny
random model's logits are ~0.1, so these are loose relative to the values but far below what a
broken graph gives), plus the same argmax wherever the input model's top-2 margin exceeds twice
the bound (a smaller margin may flip legitimately):
  static-int8  1e-2  (activations are int8 too; measured <= 5e-4 with exact int32 products)
  int4 / int8  5e-3  (weight-only, block-wise; measured ~2e-5, the random weights are small)
  fp16         1e-2  (float16 weights and compute; measured ~3e-5)
static-int8's bound is the quantization's, checked on the exact-arithmetic reference of
int8ref.py; ORT's uint8 x int8 kernels must match the reference of this CPU's arithmetic, which on
AVX2 without VNNI adds int16 saturation (measured up to 3.7e-4 more here). MatMulNBits (int4 pass)
has no saturating path: its int8 compute gives the same logits on AVX2 and AVX-512 VNNI up to
float rounding (measured 3e-9).
All outputs are also checked byte-identical when built twice (every calibration method included).
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from buildkit import parse_text, recipe_error  # noqa: E402
from int8ref import assert_close, check_int8  # noqa: E402
from test_passes import (SPEC, TEXTS, exported, fused, one_thread, ours, op_counts, reviews, run_pass,  # noqa: E402,F401
                         tiny, work)

from modelmake.core import textenc  # noqa: E402
from modelmake.runtime import onnxmeta  # noqa: E402
from modelmake.passes import static_quantize  # noqa: E402
from modelmake.passes.base import StepContext  # noqa: E402

CALIBRATE = {"data": "reviews", "samples": 32, "batch_size": 8, "max_length": 32}


@pytest.fixture(scope="module")
def texts(reviews) -> list[str]:
    return TEXTS + reviews.texts("test")


def logits(model_dir: Path, tokenizer_dir: Path, texts: list[str]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / onnxmeta.MODEL_FILE), providers=["CPUExecutionProvider"])
    enc = textenc.encode(tokenizer_dir, texts, max_length=64)
    out = session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]
    assert out.dtype == np.float32
    return out


def assert_good_output(out: Path, src: Path) -> None:
    path = out / onnxmeta.MODEL_FILE
    onnxmeta.check(path)
    assert ours(path) == ours(src / onnxmeta.MODEL_FILE) and len(ours(path)) == 5
    assert sorted(p.name for p in out.iterdir()) == [onnxmeta.MODEL_FILE]


def same_bytes(a: Path, b: Path) -> bool:
    return (a / onnxmeta.MODEL_FILE).read_bytes() == (b / onnxmeta.MODEL_FILE).read_bytes()


# --- static-int8 ------------------------------------------------------------------------------

STATIC_CASES = {
    # name: (input, config); every format and method is covered at least once, on both graphs
    "export-qdq-minmax": ("exported", {"format": "qdq", "method": "minmax"}),
    "export-qop-entropy": ("exported", {"format": "qoperator", "method": "entropy", "op_types": ["MatMul", "Gemm"]}),
    "fused-qdq-percentile": ("fused", {"format": "qdq", "method": "percentile", "samples": 30}),
    "fused-qop-minmax": ("fused", {"format": "qoperator", "method": "minmax", "per_channel": False,
                                   "activation_type": "qint8"}),
}


@pytest.mark.parametrize("case", list(STATIC_CASES))
def test_static_int8(case, request, tiny, reviews, texts, work):
    which, config = STATIC_CASES[case]
    src = request.getfixturevalue(which)
    config = {**CALIBRATE, **config}
    out = run_pass("static-int8", src, work / f"static-{case}", {"reviews": reviews}, tokenizer_dir=tiny, **config)
    assert_good_output(out, src)
    counts = op_counts(out / onnxmeta.MODEL_FILE)
    if config["format"] == "qdq":
        assert counts.get("QuantizeLinear", 0) > 0 and counts.get("DequantizeLinear", 0) > 0, counts
    else:
        assert counts.get("QLinearMatMul", 0) > 0, counts
    check_int8(lambda d: logits(d, tiny, texts), src, out, 1e-2)
    again = run_pass("static-int8", src, work / f"static-{case}-again", {"reviews": reviews}, tokenizer_dir=tiny, **config)
    assert same_bytes(out, again)


def test_static_calibration_rows_come_from_train_and_are_seeded(exported, tiny, reviews):
    inputs = ["input_ids", "attention_mask", "token_type_ids"]

    def rows(**config):
        cfg = static_quantize.PASS.config_class.make(**CALIBRATE | config)
        ctx = StepContext(config=cfg, model_dir=exported, out_dir=exported, datasets={"reviews": reviews},
                          step="t", tokenizer_dir=tiny)
        return static_quantize.calibration_batches(ctx, inputs)

    a, b, c = rows(seed=1), rows(seed=1), rows(seed=2)
    assert [len(x["input_ids"]) for x in a] == [8, 8, 8, 8]
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))
    assert max(x["input_ids"].shape[1] for x in rows(max_length=8)) == 8
    # histogram methods need equal batches: 30 texts go in batches of 6, not 8+8+8+6
    assert [len(x["input_ids"]) for x in rows(samples=30, method="entropy")] == [6] * 5
    assert [len(x["input_ids"]) for x in rows(samples=30)] == [8, 8, 8, 6]
    everything = rows(samples=10_000, batch_size=1_000)
    assert sum(len(x["input_ids"]) for x in everything) == len(reviews.train)


# --- int4 -------------------------------------------------------------------------------------

INT4_CASES = {
    "export-int4": ("exported", {}),
    "fused-int8-asym": ("fused", {"bits": 8, "symmetric": False, "accuracy_level": 4, "block_size": 16}),
}


@pytest.mark.parametrize("case", list(INT4_CASES))
def test_int4(case, request, tiny, texts, work):
    which, config = INT4_CASES[case]
    src = request.getfixturevalue(which)
    out = run_pass("int4", src, work / f"int4-{case}", **config)
    assert_good_output(out, src)
    before, after = op_counts(src / onnxmeta.MODEL_FILE), op_counts(out / onnxmeta.MODEL_FILE)
    # Q.K and attention.V multiply two activations, so they stay MatMul in the unfused graph.
    assert after.get("MatMulNBits", 0) > 0
    assert after.get("MatMulNBits", 0) + after.get("MatMul", 0) == before["MatMul"]
    assert (out / onnxmeta.MODEL_FILE).stat().st_size < (src / onnxmeta.MODEL_FILE).stat().st_size
    assert_close(logits(src, tiny, texts), logits(out, tiny, texts), 5e-3)
    assert same_bytes(out, run_pass("int4", src, work / f"int4-{case}-again", **config))


def test_int4_excludes_nodes(exported, work):
    import onnx

    first = next(n.name for n in onnx.load(str(exported / onnxmeta.MODEL_FILE)).graph.node
                 if n.op_type == "MatMul" and n.name)
    out = run_pass("int4", exported, work / "int4-exclude", nodes_to_exclude=[first])
    names = {n.name: n.op_type for n in onnx.load(str(out / onnxmeta.MODEL_FILE)).graph.node}
    assert names[first] == "MatMul" and f"{first}_Q4" not in names


# --- fp16 -------------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["exported", "fused"])
def test_fp16(which, request, tiny, texts, work):
    import onnx

    src = request.getfixturevalue(which)
    out = run_pass("fp16", src, work / f"fp16-{which}")
    assert_good_output(out, src)
    model = onnx.load(str(out / onnxmeta.MODEL_FILE))
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert_close(logits(src, tiny, texts), logits(out, tiny, texts), 1e-2)
    assert same_bytes(out, run_pass("fp16", src, work / f"fp16-{which}-again"))


def test_fp16_block_list_adds_to_the_default(exported, tiny, texts, work):
    import onnx

    out = run_pass("fp16", exported, work / "fp16-block", op_block_list=["MatMul"])
    model = onnx.load(str(out / onnxmeta.MODEL_FILE))
    halves = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert not any(n.input[1] in halves for n in model.graph.node if n.op_type == "MatMul")
    assert_close(logits(exported, tiny, texts), logits(out, tiny, texts), 1e-2)


# --- config validation ------------------------------------------------------------------------

RECIPE = """\
[model]
path = "model"

[data.reviews]
path = "reviews.csv"
label = {{ column = "category", map = {{ rotten = 0, fresh = 1 }} }}

[[pass]]
name = "export"
type = "onnx-export"

[[pass]]
name = "q"
{step}
"""


@pytest.mark.parametrize("step, key, message", [
    ('type = "static-int8"\ndata = "reviews"\nsamples = "many"', "pass[1].samples", "expected an integer, got a string"),
    ('type = "static-int8"\ndata = "reviews"\nsample = 3', "pass[1].sample", "unknown key (did you mean 'samples'?)"),
    ('type = "static-int8"', "pass[1].data", "missing required key"),
    ('type = "static-int8"\ndata = "news"', "pass[1].data", "unknown dataset 'news'"),
    ('type = "static-int8"\ndata = "reviews"\nmethod = "kl"', "pass[1].method", "expected one of"),
    ('type = "int4"\nblock_size = 48', "pass[1].block_size", "expected one of 16, 32, 64, 128, 256, got 48"),
    ('type = "int4"\nbits = 3', "pass[1].bits", "expected one of 4, 8, got 3"),
    ('type = "fp16"\nkeep_io_types = "yes"', "pass[1].keep_io_types", "expected a boolean"),
    ('type = "fp16"\nop_block_list = "Softmax"', "pass[1].op_block_list", "expected a list of strings"),
])
def test_bad_config_is_one_clear_line(step, key, message, tmp_path):
    text = recipe_error(tmp_path, RECIPE.format(step=step))
    assert text.startswith(f"recipes/tiny.toml: {key}: ") and message in text, text


def test_good_config_is_normalized(tmp_path):
    step = parse_text(tmp_path, RECIPE.format(step='type = "static-int8"\ndata = "reviews"\nmethod = "entropy"')).steps[1]
    assert step.config["method"] == "entropy" and step.config["samples"] == 128
    assert list(step.config) == sorted(f.name for f in static_quantize.PASS.fields)

"""The dynamo export path: onnx-export with exporter = "dynamo", then onnxscript-fusion.

Runs on the tiny BERT with every parameter jittered (`noisy`): a fresh BERT has zero biases and
unit LayerNorm weights, under which a fusion that drops or mixes up a bias or a norm weight would
still give the same logits.

Tolerances (max |logit difference| on the same inputs):
  dynamo export vs torch          1e-4  (fp32, same math; measured ~1e-7)
  onnxscript-fusion vs its input  1e-4  (fused kernels reorder fp32 sums; measured ~1e-8)
  dynamic-int8 vs fp32            2e-2  with exact int32 products (int8ref.check_int8), and the same
                                        argmax wherever fp32's margin exceeds twice that; on AVX2
                                        without VNNI, plus the int16 saturation of those products
                                        (int8ref's reference of that arithmetic:
                                        up to 2.6e-2 more on this noisy model)
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from buildkit import make_project, recipe_error, recipe_text, steps_of  # noqa: E402
from test_passes import TEXTS, exported, one_thread, op_counts, ours, run_pass, tiny, work  # noqa: E402,F401
from int8ref import check_int8  # noqa: E402
from test_quant_passes import RECIPE  # noqa: E402

from modelmake.core import textenc  # noqa: E402
from modelmake.passes import REGISTRY, script_fusion  # noqa: E402
from modelmake.runtime import onnxmeta
from modelmake.inputs.recipe import parse_recipe  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OPSET = 18  # the dynamo exporter's own opset (lower ones are converted down), as the shipped recipe uses
# (texts, max_length): batch 1 without padding, batches with padding, truncation to a short length
BATCHES = [(["good fun movie"], 64), (TEXTS, 64), (TEXTS[:3], 8), (TEXTS * 2, 128)]
ATTENTION_OPS = {"attention": "Attention", "mha": "MultiHeadAttention"}


@pytest.fixture(scope="module")
def noisy(work, tiny) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    out = work / "noisy"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def dynamo(work, noisy) -> Path:
    return run_pass("onnx-export", noisy, work / "dynamo", exporter="dynamo", opset=OPSET)


@pytest.fixture(scope="module")
def fused(work, dynamo) -> dict[str, Path]:
    """onnxscript-fusion output per attention level."""
    return {level: run_pass("onnxscript-fusion", dynamo, work / f"sfuse-{level}", attention=level)
            for level in script_fusion.ATTENTION_LEVELS}


def session_logits(model_dir: Path, tokenizer_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / onnxmeta.MODEL_FILE), providers=["CPUExecutionProvider"])
    enc = textenc.encode(tokenizer_dir, texts, max_length=max_length)
    return session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]


def max_diff(a: Path, b: Path, tokenizer_dir: Path) -> float:
    return max(float(np.abs(session_logits(a, tokenizer_dir, t, n) - session_logits(b, tokenizer_dir, t, n)).max())
               for t, n in BATCHES)


# --- onnx-export, exporter = "dynamo" -----------------------------------------------------------

def test_dynamo_export_matches_torch(dynamo, noisy):
    import onnx
    import torch
    from transformers import AutoModelForSequenceClassification

    path = dynamo / onnxmeta.MODEL_FILE
    onnxmeta.check(path)  # the ONNX checker, and ORT builds a CPU session
    model = AutoModelForSequenceClassification.from_pretrained(noisy, attn_implementation="eager").eval()
    for texts, max_length in BATCHES:
        enc = textenc.encode(noisy, texts, max_length=max_length)
        with torch.no_grad():
            expected = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
        got = session_logits(dynamo, noisy, texts, max_length)
        assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4, (len(texts), max_length)
    proto = onnx.load(str(path))
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert {o.domain: o.version for o in proto.opset_import}[""] == OPSET
    assert len(ours(path)) == 5 and ours(path)[onnxmeta.NUM_HEADS] == "4"


def test_dynamo_export_is_byte_identical_in_another_process(dynamo, noisy, work):
    # Another process has another hash seed; and the exporter's per-node stack traces (paths and
    # line numbers of this checkout and virtualenv) must not be in the file.
    code = ("import sys; from pathlib import Path; from modelmake.passes import get; "
            "from modelmake.passes.base import StepContext; p = get('onnx-export'); "
            "cfg = p.config_class.make(exporter='dynamo', opset=int(sys.argv[3])); "
            "out = Path(sys.argv[2]); out.mkdir(); "
            "p.run_function()(StepContext(config=cfg, model_dir=Path(sys.argv[1]), out_dir=out, step='export'))")
    again = work / "dynamo-again"
    subprocess.run([sys.executable, "-c", code, str(noisy), str(again), str(OPSET)], check=True,
                   capture_output=True, text=True)
    data = (dynamo / onnxmeta.MODEL_FILE).read_bytes()
    assert (again / onnxmeta.MODEL_FILE).read_bytes() == data
    assert b"modeling_bert.py" not in data and b"stack_trace" not in data


# --- onnxscript-fusion --------------------------------------------------------------------------

@pytest.mark.parametrize("level", script_fusion.ATTENTION_LEVELS)
def test_fusion_fuses_and_keeps_outputs(level, fused, dynamo, noisy, work):
    out = fused[level]
    path = out / onnxmeta.MODEL_FILE
    onnxmeta.check(path)
    assert sorted(p.name for p in out.iterdir()) == [onnxmeta.MODEL_FILE]
    assert ours(path) == ours(dynamo / onnxmeta.MODEL_FILE) and len(ours(path)) == 5
    assert max_diff(out, dynamo, noisy) < 1e-4
    counts, before = op_counts(path), op_counts(dynamo / onnxmeta.MODEL_FILE)
    assert counts.get("SkipLayerNormalization", 0) > 0 and counts.get("BiasGelu", 0) > 0, counts
    fused_attention = {op for op in ATTENTION_OPS.values() if counts.get(op)}
    assert fused_attention == ({ATTENTION_OPS[level]} if level in ATTENTION_OPS else set()), counts
    assert sum(counts.values()) < sum(before.values())
    again = run_pass("onnxscript-fusion", dynamo, work / f"sfuse-{level}-again", attention=level)
    assert (again / onnxmeta.MODEL_FILE).read_bytes() == path.read_bytes()


def test_default_fusions_are_onnxscripts_optimize_for_ort(dynamo):
    # fuse_for_ort spells optimize_for_ort out step by step to stop before Attention; its default
    # must stay exactly optimize_for_ort, also after an onnxscript upgrade
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    src = str(dynamo / onnxmeta.MODEL_FILE)
    theirs, _ = optimize_for_ort(ir.load(src))
    ours_model = ir.load(src)
    script_fusion.fuse_for_ort(ours_model)
    as_bytes = [ir.serde.serialize_model(m).SerializeToString(deterministic=True) for m in (theirs, ours_model)]
    assert as_bytes[0] == as_bytes[1]


def test_generic_optimizer_alone(exported, tiny, work):
    # the torchscript export is not constant-folded the way onnxscript folds; the dynamo exporter
    # already ran this optimizer, so there it changes nothing
    out = run_pass("onnxscript-fusion", exported, work / "sopt-ts", fusions=False)
    onnxmeta.check(out / onnxmeta.MODEL_FILE)
    before, after = op_counts(exported / onnxmeta.MODEL_FILE), op_counts(out / onnxmeta.MODEL_FILE)
    assert sum(after.values()) < sum(before.values())
    assert not script_fusion.contrib_ops(out / onnxmeta.MODEL_FILE)
    assert max_diff(out, exported, tiny) < 1e-4
    assert ours(out / onnxmeta.MODEL_FILE) == ours(exported / onnxmeta.MODEL_FILE)


def test_each_exporter_needs_its_own_fusion_pass(dynamo, exported, work, capsys):
    # What docs/recipes.md says: attention is fused only by the pass made for the exporter's graph.
    # If an upgrade makes a crossed pair fuse attention, update the docs and this test.
    ort_on_dynamo = op_counts(run_pass("ort-fusion", dynamo, work / "ortfuse-dynamo") / onnxmeta.MODEL_FILE)
    assert "Attention" not in ort_on_dynamo and ort_on_dynamo.get("SkipLayerNormalization", 0) > 0
    capsys.readouterr()
    script_on_ts = run_pass("onnxscript-fusion", exported, work / "sfuse-ts")
    assert "warning: no attention was fused" in capsys.readouterr().out
    counts = op_counts(script_on_ts / onnxmeta.MODEL_FILE)
    assert not {"Attention", "MultiHeadAttention"} & set(counts) and counts.get("SkipLayerNormalization", 0) > 0
    ort_on_ts = op_counts(run_pass("ort-fusion", exported, work / "ortfuse-ts") / onnxmeta.MODEL_FILE)
    assert ort_on_ts.get("Attention", 0) > 0


def test_int8_quantizes_qkv_only_when_attention_stops_at_mha(fused, noisy, work):
    # ORT's dynamic quantizer makes no QAttention from onnxscript's Attention, which keeps its
    # packed Q/K/V projection in fp32; with attention = "mha" those projections are MatMuls
    # and get quantized
    int8 = {level: run_pass("dynamic-int8", fused[level], work / f"sfuse-{level}-int8") for level in ATTENTION_OPS}
    counts = {level: op_counts(d / onnxmeta.MODEL_FILE) for level, d in int8.items()}
    assert "QAttention" not in counts["attention"] and counts["attention"].get("Attention", 0) > 0
    assert counts["mha"]["MatMulInteger"] > counts["attention"]["MatMulInteger"]
    sizes = {level: (d / onnxmeta.MODEL_FILE).stat().st_size for level, d in int8.items()}
    assert sizes["mha"] < sizes["attention"]
    for level, d in int8.items():
        for texts, max_length in BATCHES:
            check_int8(lambda m: session_logits(m, noisy, texts, max_length), fused[level], d, 2e-2)


# --- recipes: validation and keys ---------------------------------------------------------------

def test_declaration():
    p = REGISTRY["onnxscript-fusion"]
    assert p is script_fusion.PASS and {"onnxscript", "onnx-ir"} <= set(p.libraries)
    assert p.field("attention").when == ("fusions", True)


@pytest.mark.parametrize("step, key, message", [
    ('type = "onnxscript-fusion"\nfusions = "yes"', "pass[1].fusions", "expected a boolean"),
    ('type = "onnxscript-fusion"\nattenton = "mha"', "pass[1].attenton", "unknown key (did you mean 'attention'?)"),
    ('type = "onnxscript-fusion"\nattention = "full"', "pass[1].attention",
     "expected one of 'attention', 'mha', 'none', got 'full'"),
    ('type = "onnxscript-fusion"\nfusions = false\nattention = "mha"', "pass[1].attention",
     "only used when fusions = true"),
])
def test_bad_config_is_one_clear_line(step, key, message, tmp_path):
    text = recipe_error(tmp_path, RECIPE.format(step=step))
    assert text.startswith(f"recipes/tiny.toml: {key}: ") and message in text, text


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("dynamo-project") / "proj")


def fusion_step(project: Path, step_lines: str):
    extra = f'\n[[pass]]\nname = "sfuse"\n{step_lines}\n'
    (project / "recipes/tiny.toml").write_text(recipe_text(extra))
    return steps_of(project)["pass:tiny/sfuse"]


def test_key_changes_with_output_changing_settings_only(project):
    def key(lines: str) -> str:
        return fusion_step(project, lines).key(lambda folder: "same inputs")

    base = key('type = "onnxscript-fusion"')
    # written-out defaults, other key order, comments: the same step
    assert key('attention = "attention"  # the default\nfusions = true\ntype = "onnxscript-fusion"') == base
    variants = [key('type = "onnxscript-fusion"\nattention = "mha"'),
                key('type = "onnxscript-fusion"\nattention = "none"'),
                key('type = "onnxscript-fusion"\nfusions = false')]
    assert len({base, *variants}) == 4
    step = fusion_step(project, 'type = "onnxscript-fusion"\nfusions = false')
    assert step.config == {"fusions": False}  # attention means nothing then, so it is not keyed
    assert {"onnxscript", "onnx-ir"} <= set(step.libraries)


def test_shipped_dynamo_recipe_shares_fine_tuning_with_bert_int8():
    dyn = parse_recipe(REPO / "recipes/bert-int8-dynamo.toml")
    ref = parse_recipe(REPO / "recipes/bert-int8.toml")
    assert (dyn.model, dyn.data) == (ref.model, ref.data)
    assert dyn.steps[0] == ref.steps[0] and dyn.steps[0].type == "finetune"
    assert [s.type for s in dyn.steps] == ["finetune", "onnx-export", "onnxscript-fusion", "dynamic-int8"]
    assert dyn.steps[1].config["exporter"] == "dynamo"

"""ONNX -> ONNX: onnxscript's graph optimizer and its ONNX Runtime transformer fusions.

These fusions match the graphs of torch's dynamo exporter, which ORT's own transformers optimizer
(ort-fusion) only partly recognises. Measured with onnxscript 0.7.2 / onnxruntime 1.32 on BERT
(MiniLM and the tests' tiny model):
  dynamo export  -> onnxscript-fusion: Attention, SkipLayerNormalization, BiasGelu; no EmbedLayerNormalization
  dynamo export  -> ort-fusion:        SkipLayerNormalization, BiasGelu; no Attention, no EmbedLayerNormalization
  torchscript    -> onnxscript-fusion: SkipLayerNormalization, BiasGelu; no Attention
  torchscript    -> ort-fusion:        Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu
ORT's dynamic quantizer makes no QAttention from onnxscript's Attention (it skips Attention nodes
that carry qkv_hidden_sizes, and QAttention has no input for the additive mask this Attention
takes), so the packed Q/K/V projection stays fp32; `attention = "mha"` keeps the projections as
MatMuls, which dynamic-int8 does quantize.
"""
from __future__ import annotations

from pathlib import Path

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ONNX, Field, Pass, StepContext

ATTENTION_LEVELS = ("attention", "mha", "none")

PASS = Pass(
    type="onnxscript-fusion",
    summary="Optimize a dynamo-exported graph with onnxscript and fuse it into ORT contrib ops",
    notes=("It fuses Attention, SkipLayerNorm and BiasGelu. Use it after onnx-export with exporter = 'dynamo'; "
           "after the torchscript exporter use ort-fusion, which fuses attention there and this pass does not."),
    fields=(
        Field("fusions", "bool", True,
              "apply onnxscript's ORT transformer fusions (its optimize_for_ort); false runs only the generic "
              "optimizer: constant folding, dead-code and common-subexpression elimination, function inlining "
              "(which the dynamo exporter already ran on its own output)"),
        Field("attention", "str", "attention",
              "how far attention is fused: 'attention' = Attention with the Q/K/V projection packed inside "
              "(as optimize_for_ort; dynamic-int8 leaves that projection fp32), 'mha' = MultiHeadAttention "
              "with the Q/K/V MatMuls left outside (dynamic-int8 quantizes them), 'none' = plain ONNX ops",
              choices=ATTENTION_LEVELS, when=("fusions", True)),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="as-input",
    version=1,
    libraries=("onnx", "onnxscript", "onnx-ir"),
    run="modelmake.passes.script_fusion:run",
)


def fuse_for_ort(model, attention: str = "attention") -> dict[str, int]:
    """onnxscript's optimize_for_ort on an onnx_ir model, in place, with attention fused only up
    to `attention`; returns how often each fusion applied.

    This is onnxscript 0.7's optimize_for_ort step by step (its fuse_xformers cannot stop before
    Attention); with attention = 'attention' the output is byte-identical to optimize_for_ort's,
    which a test checks so that an onnxscript upgrade that changes the sequence is noticed.
    """
    import onnx_ir as ir
    import onnx_ir.passes.common as common
    from onnxscript.optimizer import optimize
    from onnxscript.rewriter import rewrite
    from onnxscript.rewriter.ort_fusions import ORT_PATTERN_REWRITE_RULES
    from onnxscript.rewriter.ort_fusions import attention as attention_fusion
    from onnxscript.rewriter.ort_fusions import (bias_gelu, cos_sin_cache, erfgelu, gelu, gqa, gqa_packed_qkv, mha,
                                                 mha_bias, mha_scale, rms_normalization, rotary_embedding, sdpa,
                                                 sdpa_via_mha, shape_optimization, skip_normalization)
    from onnxscript.rewriter.rules.common import gemm_to_matmul_add_rule

    rewrite(model, [gemm_to_matmul_add_rule])
    common.ShapeInferencePass()(model)
    optimize(model)
    shape_optimization.rules.apply_to_model(model)
    optimize(model)

    counts: dict[str, int] = {}

    def fuse(name: str, func, **kwargs) -> int:
        counts[name] = func(model, **kwargs)
        return counts[name]

    fuse("erf_gelu", erfgelu.fuse_erfgelu)
    fuse("rms_normalization", rms_normalization.fuse_rms_normalization)
    fuse("skip_layer_normalization", skip_normalization.fuse_skip_layer_normalization)
    fuse("skip_rms_normalization", skip_normalization.fuse_skip_rms_normalization)
    fuse("rotary_embedding", rotary_embedding.fuse_rotary_embedding)
    fuse("cos_sin_cache", cos_sin_cache.fuse_cos_sin_cache)
    common.CommonSubexpressionEliminationPass()(model)
    fuse("partial_rotary_embedding", rotary_embedding.fuse_partial_rotary_embedding)
    if attention != "none":
        # new nodes of some SDPA patterns need shapes for the fusions after it
        fuse("sdpa", sdpa.fuse_sdpa, apply_shape_inference=True)
        fuse("gqa", gqa.fuse_gqa)
        fuse("packed_qkv_for_gqa", gqa_packed_qkv.fuse_qkv_gqa)
        mha_count = fuse("mha1", mha.fuse_mha1) + fuse("mha2", mha.fuse_mha2)
        fuse("mha_scale", mha_scale.fuse_mha_scale)
        if mha_count:
            fuse("mha_bias", mha_bias.fuse_mha_bias)
            if attention == "attention":
                fuse("attention", attention_fusion.fuse_attention)
    fuse("gelu", gelu.fuse_gelu)
    fuse("bias_gelu", bias_gelu.fuse_bias_gelu)
    if attention != "none":
        fuse("sdpa_via_mha", sdpa_via_mha.replace_sdpa_by_mha)
    # inline the intermediate fusion functions no later fusion consumed; drop unused nodes
    optimize(model)
    rewrite(model, ORT_PATTERN_REWRITE_RULES)
    # what onnxruntime's dynamo_onnx_helper does after fusing, as optimize_for_ort does
    ir.passes.Sequential(
        common.LiftConstantsToInitializersPass(lift_all_constants=False, size_limit=1),
        common.RemoveInitializersFromInputsPass(),
        common.ShapeInferencePass(),
    )(model)
    return counts


def optimize_file(src: Path, dst: Path, fusions: bool, attention: str) -> dict[str, int]:
    """Read src, optimize (and fuse), write dst; returns the fusion counts (empty without fusions)."""
    import onnx_ir as ir
    from onnxscript.optimizer import optimize

    model = ir.load(str(src))
    if fusions:
        counts = fuse_for_ort(model, attention)
    else:
        optimize(model)
        counts = {}
    ir.save(model, str(dst))
    return counts


def contrib_ops(path: Path) -> set[str]:
    """Op types of the model's ORT contrib ops (domain com.microsoft): what fusing produced."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {n.op_type for n in model.graph.node if n.domain == "com.microsoft"}


def run(ctx: StepContext) -> None:
    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    attention = cfg.attention or "attention"   # None when fusions = false, where it is not used
    ctx.log("optimizing with onnxscript" + (f", fusing for ORT (attention: {attention})" if cfg.fusions else ""))
    optimize_file(src, dst, cfg.fusions, attention)
    onnxmeta.finish(dst, source=src)
    before, after = onnxmeta.op_counts(src), onnxmeta.op_counts(dst)
    contrib = contrib_ops(dst)
    made = {k: v for k, v in after.items() if k in contrib and v > before.get(k, 0)}
    ctx.log(f"nodes: {sum(before.values())} -> {sum(after.values())}; fused: "
            + (", ".join(f"{k}={v}" for k, v in made.items()) or "nothing"))
    if cfg.fusions and attention != "none" and not {"Attention", "MultiHeadAttention"} & set(made):
        ctx.log("warning: no attention was fused; these fusions recognise the dynamo exporter's graph "
                "(after exporter = 'torchscript' use ort-fusion)")

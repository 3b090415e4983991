"""ONNX -> ONNX transformer fusions (Attention, LayerNorm, Gelu...) with ORT's transformers optimizer."""
from __future__ import annotations

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ONNX, Field, Pass, StepContext

# onnxruntime.transformers.optimizer.MODEL_TYPES of onnxruntime 1.32, spelled out here because the
# registry must not import onnxruntime; run() re-checks against the installed version.
MODEL_TYPES = ("bart", "bert", "bert_keras", "bert_tf", "clip", "conformer", "gpt2", "gpt2_tf",
               "gpt_neox", "mmdit", "phi", "qwen3", "sam2", "swin", "t5", "tnlr", "unet", "vae", "vit")

PASS = Pass(
    type="ort-fusion",
    summary="Fuse transformer subgraphs into ORT contrib ops (Attention, SkipLayerNorm, BiasGelu...)",
    fields=(
        Field("model_type", "str", "bert",
              "ORT transformers-optimizer family; 'bert' for BERT-style encoders such as MiniLM",
              choices=MODEL_TYPES),
        Field("num_heads", "int", 0,
              "attention heads; 0 = read from the model's metadata (written by onnx-export)", min=0),
        Field("hidden_size", "int", 0,
              "hidden size; 0 = read from the model's metadata (written by onnx-export)", min=0),
        Field("opt_level", "int", 0,
              "ORT graph optimization run before the fusions; 0 = python fusions only (deterministic, portable)",
              choices=(0, 1, 2, 99)),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="as-input",
    version=1,
    libraries=("onnx", "onnxruntime"),
    run="modelmake.passes.fuse:run",
)


def resolve_shape(num_heads: int, hidden_size: int, props: dict[str, str]) -> tuple[int, int]:
    """(num_heads, hidden_size): the config's values, or the metadata's where the config says 0."""
    heads = num_heads or int(props.get(onnxmeta.NUM_HEADS, 0))
    hidden = hidden_size or int(props.get(onnxmeta.HIDDEN_SIZE, 0))
    if not heads or not hidden:
        raise ValueError(
            "num_heads and hidden_size are unknown: the input model has no "
            f"{onnxmeta.NUM_HEADS}/{onnxmeta.HIDDEN_SIZE} metadata (onnx-export records it for Hugging Face "
            "models; an ONNX file made elsewhere or a PyTorch model without a transformers-style config lacks it); "
            "set num_heads and hidden_size in this step's config. Auto-detection is not used because "
            "it silently skips Attention fusion")
    return heads, hidden


def run(ctx: StepContext) -> None:
    from onnxruntime.transformers.optimizer import MODEL_TYPES as ORT_TYPES
    from onnxruntime.transformers.optimizer import optimize_model

    cfg = ctx.config
    if cfg.model_type not in ORT_TYPES:
        raise ValueError(f"model_type '{cfg.model_type}' is not supported by the installed "
                         f"onnxruntime (supported: {', '.join(sorted(ORT_TYPES))})")
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    heads, hidden = resolve_shape(cfg.num_heads, cfg.hidden_size, onnxmeta.read(src))
    ctx.log(f"fusing {cfg.model_type} (num_heads={heads}, hidden_size={hidden}, opt_level={cfg.opt_level})")
    optimized = optimize_model(str(src), model_type=cfg.model_type, num_heads=heads,
                               hidden_size=hidden, opt_level=cfg.opt_level, use_gpu=False)
    onnxmeta.finish(dst, source=src, proto=_as_saved(optimized))
    stats = {k: v for k, v in sorted(optimized.get_fused_operator_statistics().items()) if v}
    ctx.log("fused: " + (", ".join(f"{k}={v}" for k, v in stats.items()) or "nothing"))
    if not any("Attention" in k for k in stats):
        ctx.log("warning: no attention was fused; the torchscript exporter with "
                "attn_implementation = 'eager' gives the graph this optimizer recognises")


def _as_saved(optimized):
    """The ModelProto that `save_model_to_file` would write (graph in topological order, the
    com.microsoft opset declared when fused ops use it), kept in memory: finish then writes it
    once, instead of a write and a read of the whole model more (a second of a fusion step on
    MiniLM)."""
    optimized.topological_sort()
    model = optimized.model
    if any(n.domain == "com.microsoft" for n in model.graph.node) and \
            not any(o.domain == "com.microsoft" for o in model.opset_import):
        opset = model.opset_import.add()
        opset.version, opset.domain = 1, "com.microsoft"
    return model

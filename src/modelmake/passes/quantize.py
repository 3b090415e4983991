"""ONNX -> ONNX dynamic int8 quantization of weights (activations quantized at run time)."""
from __future__ import annotations

from modelmake.passes import quant_common as q
from modelmake.passes.base import ONNX, Pass, StepContext
from modelmake.runtime import onnxmeta

PASS = Pass(
    type="dynamic-int8",
    summary="Quantize weights to int8 with ORT dynamic quantization (activation scales computed per call)",
    fields=(
        q.per_channel("one weight scale per output channel instead of per tensor (much more accurate on MiniLM)"),
        q.reduce_range(),
        q.weight_type(),
        q.op_types("all ORT supports"),
        q.nodes_to_exclude(),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="integer",
    version=1,
    libraries=("onnx", "onnxruntime"),
    run="modelmake.passes.quantize:run",
)


def run(ctx: StepContext) -> None:
    from onnxruntime.quantization import quantize_dynamic

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    ctx.log(f"quantizing ({cfg.weight_type}, per_channel={cfg.per_channel}, reduce_range={cfg.reduce_range})")
    with onnxmeta.quiet_root_logger(), q.private_copy(ctx.model_dir, ctx.out_dir.parent) as own:
        quantize_dynamic(
            own / onnxmeta.MODEL_FILE, dst,
            op_types_to_quantize=list(cfg.op_types) or None,
            per_channel=cfg.per_channel,
            reduce_range=cfg.reduce_range,
            weight_type=q.quant_type(cfg.weight_type),
            nodes_to_exclude=list(cfg.nodes_to_exclude) or None,
            extra_options=q.extra_options(),
        )
    onnxmeta.finish(dst, source=src)
    onnxmeta.log_quantized(ctx, src, dst)

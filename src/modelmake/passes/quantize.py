"""ONNX -> ONNX dynamic int8 quantization of weights (activations quantized at run time)."""
from __future__ import annotations

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ONNX, Field, Pass, StepContext

# shared with static-int8: the same ORT option with the same reason (docs/quantization.md)
REDUCE_RANGE = Field("reduce_range", "bool", False,
                     "quantize weights to 7 bits, so that x86 CPUs without VNNI (AVX2), whose int8 kernels "
                     "add pairs of products in int16, cannot overflow and compute what VNNI/AMX CPUs compute")

PASS = Pass(
    type="dynamic-int8",
    summary="Quantize weights to int8 with ORT dynamic quantization (activation scales computed per call)",
    fields=(
        Field("per_channel", "bool", True,
              "one scale per output channel instead of per tensor (much more accurate on MiniLM)"),
        REDUCE_RANGE,
        Field("weight_type", "str", "qint8", "integer type of the quantized weights",
              choices=("qint8", "quint8")),
        Field("op_types", "list[str]", [],
              "ONNX op types to quantize, e.g. ['MatMul', 'Attention']; empty = all ORT supports"),
        Field("nodes_to_exclude", "list[str]", [],
              "node names to keep in float (e.g. a sensitive classifier MatMul)"),
    ),
    input_format=ONNX,
    output_format=ONNX,
    version=1,
    libraries=("onnx", "onnxruntime"),
    run="modelmake.passes.quantize:run",
)


def run(ctx: StepContext) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    weight_type = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[cfg["weight_type"]]
    ctx.log(f"quantizing ({cfg['weight_type']}, per_channel={cfg['per_channel']}, "
            f"reduce_range={cfg['reduce_range']})")
    with onnxmeta.quiet_root_logger():
        quantize_dynamic(
            src, dst,
            op_types_to_quantize=list(cfg["op_types"]) or None,
            per_channel=cfg["per_channel"],
            reduce_range=cfg["reduce_range"],
            weight_type=weight_type,
            nodes_to_exclude=list(cfg["nodes_to_exclude"]) or None,
            # Fused contrib ops (Attention, SkipLayerNormalization...) carry no type info the
            # quantizer can infer; without a default it fails on an ORT-optimized model.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    onnxmeta.carry_over(src, dst)
    onnxmeta.check(dst)
    onnxmeta.log_quantized(ctx, src, dst)

"""ONNX -> ONNX float16 conversion of weights and compute, with ORT's transformers converter."""
from __future__ import annotations

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ONNX, Field, Pass, StepContext

PASS = Pass(
    type="fp16",
    summary="Convert weights and compute to float16",
    notes=("Half the size; on CPU, ORT often runs fp16 slower than fp32, so this targets GPU/NPU "
           "deployment or size."),
    fields=(
        Field("keep_io_types", "bool", True,
              "keep float32 model inputs and outputs (casts are added inside the graph)"),
        Field("op_block_list", "list[str]", [],
              "op types kept in float32, in addition to the converter's default list"),
        Field("node_block_list", "list[str]", [], "node names kept in float32"),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="as-input",
    version=1,
    libraries=("onnx", "onnxruntime", "numpy"),
    run="modelmake.passes.fp16:run",
)


def run(ctx: StepContext) -> None:
    import collections

    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    # An explicit op_block_list replaces the converter's default one, which holds the ops that
    # have no float16 kernel; so the user's ops are added to it, never substituted for it.
    blocked = sorted(set(DEFAULT_OP_BLOCK_LIST) | set(cfg.op_block_list))
    ctx.log(f"converting to float16 (keep_io_types={cfg.keep_io_types}, "
            f"{len(cfg.op_block_list)} extra op types and {len(cfg.node_block_list)} nodes kept in fp32)")
    # OnnxModel's conversion types the graph with symbolic shape inference first (ONNX's own
    # inference stops at fused contrib ops) and drops the redundant Casts it inserts.
    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(
        keep_io_types=cfg.keep_io_types, op_block_list=blocked, node_block_list=list(cfg.node_block_list) or None)
    # Blocked ops get their Cast nodes appended after their consumers; the checker wants order.
    model.topological_sort(is_deterministic=True)
    converted = model.model
    onnxmeta.finish(dst, source=src, proto=converted)
    casts = collections.Counter(n.op_type for n in converted.graph.node)["Cast"]
    ctx.log(f"{src.stat().st_size / 1e6:.1f} MB -> {dst.stat().st_size / 1e6:.1f} MB; {casts} Cast nodes")

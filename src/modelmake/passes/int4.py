"""ONNX -> ONNX weight-only block-wise int4/int8: constant-weight MatMuls become MatMulNBits.

The nodes are written here with ORT's own block quantization kernels (the ones its
MatMulNBitsQuantizer calls) rather than through that class: in onnxruntime 1.32 its module imports
`onnx_ir`, which onnxruntime does not declare as a dependency, and configures the root logger at
import. The emitted MatMulNBits nodes, initializer names and packing follow that quantizer's
QOperator output.
"""
from __future__ import annotations

from modelmake.passes import quant_common as q
from modelmake.passes.base import ONNX, Field, Pass, StepContext
from modelmake.runtime import onnxmeta

PASS = Pass(
    type="int4",
    summary="Quantize MatMul weights block-wise to int4 (or int8) as ORT MatMulNBits",
    notes=("Activations stay float. Fused Attention weights are not MatMuls, so place it before "
           "ort-fusion to cover them."),
    fields=(
        Field("bits", "int", 4, "bits per quantized weight", choices=(4, 8)),
        Field("block_size", "int", 32, "weights along K sharing one scale (and zero point)",
              choices=(16, 32, 64, 128, 256)),
        Field("symmetric", "bool", True,
              "signed weights without zero points; false adds a zero point per block"),
        Field("accuracy_level", "int", 0,
              "minimum precision of the MatMulNBits compute: 0 = unset (ORT's default), "
              "1 fp32, 2 fp16, 3 bf16, 4 int8 (fastest on CPU)",
              choices=(0, 1, 2, 3, 4)),
        q.nodes_to_exclude("MatMul node names", "the classifier"),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="integer",
    version=1,
    libraries=("onnx", "onnxruntime", "numpy"),
    run="modelmake.passes.int4:run",
)


def block_quantize(weight, bits: int, block_size: int, symmetric: bool):
    """(packed, scales, zero_points) of a float32 [K, N] weight in MatMulNBits' layout."""
    import numpy as np
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    rows, cols = weight.shape
    per_byte = 8 // bits
    k_blocks = (rows + block_size - 1) // block_size
    pad = k_blocks * block_size - rows
    if pad:
        weight = np.pad(weight, ((0, pad), (0, 0)))
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    packed = np.zeros((cols, k_blocks, (block_size + per_byte - 1) // per_byte), dtype=np.uint8)
    zero_points = np.zeros((cols, (k_blocks + per_byte - 1) // per_byte), dtype=np.uint8)
    scales = np.zeros((cols, k_blocks), dtype=np.float32)
    kernel = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    kernel(packed, weight, scales, zero_points, block_size, cols, rows, symmetric)
    return packed, scales, zero_points


def quantizable(model, exclude: set[str]) -> list:
    """The main graph's MatMul nodes whose B is a 2-D float32 initializer, minus `exclude`."""
    import onnx

    weights = {t.name: t for t in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx") or node.name in exclude:
            continue
        w = weights.get(node.input[1])
        if w is not None and w.data_type == onnx.TensorProto.FLOAT and len(w.dims) == 2:
            found.append(node)
    return found


def quantize_model(model, targets: list, bits: int, block_size: int, symmetric: bool,
                   accuracy_level: int, progress=None) -> None:
    """Replace the `targets` MatMul nodes of `model` in place with MatMulNBits."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    new_nodes = {}
    added = []
    for node in targets:
        w = weights[node.input[1]]
        rows, cols = w.dims
        packed, scales, zero_points = block_quantize(numpy_helper.to_array(w), bits, block_size, symmetric)
        names = [node.input[0], f"{w.name}_Q{bits}", f"{w.name}_scales"]
        added += [numpy_helper.from_array(packed, names[1]), numpy_helper.from_array(scales, names[2])]
        if not symmetric:
            names.append(f"{w.name}_zero_points")
            added.append(numpy_helper.from_array(zero_points, names[3]))
        attrs = {"K": rows, "N": cols, "bits": bits, "block_size": block_size}
        if accuracy_level:  # optional attribute; most EPs reject it, so only written when asked for
            attrs["accuracy_level"] = accuracy_level
        new_nodes[id(node)] = onnx.helper.make_node(
            "MatMulNBits", names, list(node.output), name=f"{node.name}_Q{bits}" if node.name else "",
            domain="com.microsoft", **attrs)
        if progress is not None:
            progress.advance()
    if not targets:
        return
    nodes = [new_nodes.get(id(n), n) for n in graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.add(domain="com.microsoft", version=1)


def run(ctx: StepContext) -> None:
    import onnx

    from modelmake.core.progress import bar

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    model = onnx.load(str(src))
    matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    ctx.log(f"quantizing MatMul weights to int{cfg.bits} (block_size={cfg.block_size}, "
            f"symmetric={cfg.symmetric}, accuracy_level={cfg.accuracy_level})")
    targets = quantizable(model, set(cfg.nodes_to_exclude))
    done = len(targets)
    with bar(f"int{cfg.bits}", done) as progress:
        quantize_model(model, targets, cfg.bits, cfg.block_size, cfg.symmetric, cfg.accuracy_level, progress)
    onnxmeta.finish(dst, source=src, proto=model)
    ctx.log(f"{done} of {matmuls} MatMuls became MatMulNBits; "
            f"{src.stat().st_size / 1e6:.1f} MB -> {dst.stat().st_size / 1e6:.1f} MB")
    if not done:
        ctx.log("warning: no MatMul with a constant 2-D float weight was found; nothing was quantized")

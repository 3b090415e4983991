"""What an int8 model computes on each kind of x86 CPU, as a reference the int8 tests compare with.

ONNX Runtime's x86 int8 kernels (MLAS) multiply uint8 activations by int8 weights in one of two
ways, chosen by the CPU's features (onnxruntime/core/mlas/lib/platform.cpp):
  EXACT  every product summed in int32: AMX, AVX512-VNNI, AVX-VNNI (vpdpbusd) and CPUs without
         AVX2 (SSE, 16-bit products widened first);
  PAIRS  AVX2 without VNNI (and AVX-512 without VNNI): vpmaddubsw adds the products of weights
         2j and 2j+1 in int16 with saturation, then vpmaddwd sums the pairs in int32. A pair above
         32767 (up to 2 x 255 x 127 = 64770) is clipped; `reduce_range` (7-bit weights) avoids it.
uint8 x uint8 and int8 x int8 products are exact on every path.

`reference_model` rewrites a quantized model so that every uint8 x int8 matrix product is computed
in float64 ONNX ops with one of these arithmetics; ORT then runs it without any integer kernel.
`check_int8` uses it to test two things apart: the quantization itself (exact reference vs fp32,
against a bound that holds on every host) and ORT's int8 kernels on this host (the model as is vs
the reference of this host's arithmetic, which differ by float rounding only).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np

EXACT, PAIRS = "exact", "int16-pairs"
MODEL_FILE = "model.onnx"


@lru_cache(maxsize=1)
def host_arithmetic() -> str:
    """EXACT or PAIRS: what ORT's uint8 x int8 kernels do on this CPU, found by running one
    MatMulInteger whose pairs overflow int16 (255 x 127 twice)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    a = np.full((1, 4), 255, np.uint8)
    b = np.full((4, 1), 127, np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "probe",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [1, 4])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [1, 1])],
                              [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = int(session.run(None, {"A": a})[0][0, 0])
    assert got in (4 * 255 * 127, 2 * 32767), got
    return EXACT if got == 4 * 255 * 127 else PAIRS


# ops whose output has the element type of their first input
_SAME_TYPE = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather", "Identity",
              "Expand", "Concat", "Split", "MaxPool"}


class _Rewriter:
    """Builds replacement nodes and constants inside one graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.graph = model.graph
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.nodes: list = []
        self.count = 0

    def name(self, hint: str) -> str:
        self.count += 1
        return f"int8ref_{self.count}_{hint}"

    def const(self, value: np.ndarray, hint: str) -> str:
        from onnx import numpy_helper

        name = self.name(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(self, node) -> list[str]:
        self.nodes.append(node)
        self.producer.update({o: node for o in node.output})
        return list(node.output)

    def node(self, op: str, inputs: list[str], domain: str = "", **attrs) -> str:
        from onnx import helper

        return self.add(helper.make_node(op, inputs, [self.name(op.lower())], domain=domain, **attrs))[0]

    def dtype(self, tensor: str) -> str | None:
        """'uint8', 'int8', ... of a quantized tensor, when the graph says it."""
        if tensor in self.consts:
            return str(self.consts[tensor].dtype)
        node = self.producer.get(tensor)
        if node is None:
            return None
        if node.op_type == "DynamicQuantizeLinear":
            return "uint8"
        if node.op_type in _SAME_TYPE:
            return self.dtype(node.input[0])
        if node.op_type == "QuantizeLinear" and _opt(node, 2):
            return str(self.consts[node.input[2]].dtype)
        if node.op_type.startswith("QLinear") or node.op_type == "QGemm":
            # the output has the type of the zero points: the first integer constant among the inputs
            return next((str(self.consts[i].dtype) for i in node.input
                         if i in self.consts and self.consts[i].dtype.kind in "iu"), None)
        return None

    def double(self, tensor: str, zero_point: str | None = None) -> str:
        from onnx import TensorProto

        out = self.node("Cast", [tensor], to=TensorProto.DOUBLE)
        if zero_point:
            out = self.node("Sub", [out, self.node("Cast", [zero_point], to=TensorProto.DOUBLE)])
        return out

    def product(self, a: str, a_zero_point: str | None, w: np.ndarray, w_zero_point: np.ndarray | None,
                arithmetic: str) -> str:
        """(a - a_zp) @ (w - w_zp) as float64 integers, for a runtime a [..., K] and a constant w [K, N]."""
        w_centered = w.astype(np.float64) - (0 if w_zero_point is None else w_zero_point.astype(np.float64))
        out = self.node("MatMul", [self.double(a, a_zero_point), self.const(w_centered, "w")])
        if arithmetic == EXACT or self.dtype(a) != "uint8" or w.dtype != np.int8:
            return out
        # MLAS sums the raw products (zero points are applied through row and column sums), so
        # the clipping is the difference between the pairwise-saturated and the plain raw sums.
        k = w.shape[0] // 2 * 2  # an odd last product has no partner and never saturates
        raw_a = self.double(a)
        if k != w.shape[0]:
            raw_a = self.node("Slice", [raw_a, self.const(np.array([0]), "s"), self.const(np.array([k]), "e"),
                                        self.const(np.array([-1]), "ax")])
        lead = self.node("Shape", [raw_a], end=-1)
        pairs = self.node("Reshape", [raw_a, self.node("Concat", [lead, self.const(np.array([k // 2, 1, 2]), "p")],
                                                        axis=0)])
        w_raw = w[:k].astype(np.float64)
        summed = self.node("MatMul", [pairs, self.const(w_raw.reshape(k // 2, 2, -1), "wp")])  # [..., K/2, 1, N]
        clipped = self.node("Clip", [summed, self.const(np.float64(-32768), "lo"), self.const(np.float64(32767), "hi")])
        saturated = self.node("ReduceSum", [clipped, self.const(np.array([-3, -2]), "ax")], keepdims=0)
        plain = self.node("MatMul", [raw_a, self.const(w_raw, "wr")])
        return self.node("Add", [out, self.node("Sub", [saturated, plain])])

    def scaled(self, product: str, *scales: str) -> str:
        """float32(product) times the product of `scales`, multiplied first as ORT's kernels do."""
        from onnx import TensorProto

        scale = scales[0]
        for other in scales[1:]:
            scale = self.node("Mul", [scale, other])
        return self.node("Mul", [self.node("Cast", [product], to=TensorProto.FLOAT), scale])


def _attr(node, name: str, default=None):
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _opt(node, i: int) -> str | None:
    return node.input[i] if len(node.input) > i and node.input[i] else None


def _rewrite(r: _Rewriter, node, arithmetic: str) -> list[str] | None:
    """Output names computed by the replacement of `node`, or None to keep it."""
    from onnx import TensorProto, helper

    c, op = r.consts, node.op_type
    if op == "MatMulInteger" and node.input[1] in c:
        w_zp = c[node.input[3]] if _opt(node, 3) else None
        prod = r.product(node.input[0], _opt(node, 2), c[node.input[1]], w_zp, arithmetic)
        return [r.node("Cast", [prod], to=TensorProto.INT32)]
    if op == "QAttention" and node.input[1] in c and len(node.output) == 1 and not _opt(node, 8):
        # int8 Q/K/V projection, then ORT's float Attention on it: an identity weight makes its
        # own projection a no-op (input hidden size 3H, same bias and mask)
        w_zp = c[node.input[7]] if _opt(node, 7) else None
        prod = r.product(node.input[0], _opt(node, 6), c[node.input[1]], w_zp, arithmetic)
        qkv = r.scaled(prod, node.input[3], node.input[4])
        width = c[node.input[1]].shape[1]
        inputs = [qkv, r.const(np.eye(width, dtype=np.float32), "eye"), node.input[2]] + list(node.input[5:6])
        attrs = {a.name: _attr(node, a.name) for a in node.attribute}
        return [r.node("Attention", inputs, domain="com.microsoft", **attrs)]
    if op == "QLinearMatMul" and node.input[3] in c:
        prod = r.product(node.input[0], node.input[2], c[node.input[3]], c[node.input[5]], arithmetic)
        y = r.scaled(prod, node.input[1], node.input[4])
        return [r.node("QuantizeLinear", [y, node.input[6], node.input[7]])]
    if op == "QGemm" and node.input[3] in c and not _attr(node, "transA", 0):
        w = c[node.input[3]].T if _attr(node, "transB", 0) else c[node.input[3]]
        prod = r.product(node.input[0], node.input[2], w, c[node.input[5]], arithmetic)
        if _opt(node, 6):
            prod = r.node("Add", [prod, r.double(node.input[6])])
        alpha = r.const(np.float32(_attr(node, "alpha", 1.0)), "alpha")
        y = r.scaled(prod, node.input[1], node.input[4], alpha)
        return [r.node("QuantizeLinear", [y, node.input[7], node.input[8]]) if _opt(node, 7) else y]
    if op == "MatMulIntegerToFloat" and node.input[1] in c:
        w_zp = c[node.input[5]] if _opt(node, 5) else None
        y = r.scaled(r.product(node.input[0], _opt(node, 4), c[node.input[1]], w_zp, arithmetic),
                     node.input[2], node.input[3])
        return [r.node("Add", [y, node.input[6]]) if _opt(node, 6) else y]
    if op == "DynamicQuantizeMatMul" and node.input[1] in c:
        a, a_scale, a_zp = r.add(helper.make_node("DynamicQuantizeLinear", [node.input[0]],
                                                  [r.name("a"), r.name("a_scale"), r.name("a_zp")]))
        w_zp = c[node.input[3]] if _opt(node, 3) else None
        y = r.scaled(r.product(a, a_zp, c[node.input[1]], w_zp, arithmetic), a_scale, node.input[2])
        return [r.node("Add", [y, node.input[4]]) if _opt(node, 4) else y]
    return None


def reference_model(model_path: Path, arithmetic: str, scratch: Path):
    """The graph ORT runs for the model at `model_path` (after its load-time fusions, which turn
    QDQ groups and MatMulInteger chains into integer kernels) with every uint8 x int8 product of
    those kernels computed in float64 with `arithmetic`. `scratch`: a folder for ORT's graph."""
    import onnx

    model = onnx.load(str(_optimized(model_path, scratch / "ort-graph.onnx")))
    r = _Rewriter(model)
    kept = []
    for node in model.graph.node:
        outputs = _rewrite(r, node, arithmetic)
        if outputs is None:
            kept.append(node)
            continue
        for new, old in zip(outputs, node.output):  # the replacement's last node takes the old name
            r.producer[new].output[list(r.producer[new].output).index(new)] = old
        kept.extend(r.nodes)
        r.nodes = []
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    for t in [t for t in model.graph.initializer if t.name not in used]:  # the replaced weights
        model.graph.initializer.remove(t)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return model


def _optimized(model_path: Path, out: Path) -> Path:
    """The graph ORT builds from the model at load (default level, as the tests' sessions use)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(out)
    options.log_severity_level = 3  # not the unused-initializer notes of a rewritten graph
    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return out


# (activation, weight) input positions of the ops ORT runs with an integer matrix product
_OPERANDS = {"MatMulInteger": (0, 1), "QAttention": (0, 1), "QLinearMatMul": (0, 3), "QGemm": (0, 3),
             "MatMulIntegerToFloat": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3),
             "DynamicQuantizeMatMul": (None, 1), "DynamicQuantizeLSTM": (None, 1)}


def _uint8_int8_gemms(optimized) -> list[str]:
    """Nodes of a graph as ORT runs it (after its fusions) with a uint8 x int8 integer product."""
    r = _Rewriter(optimized)
    left = []
    for node in optimized.graph.node:
        if node.op_type in _OPERANDS:
            a, w = _OPERANDS[node.op_type]
            types = ("uint8" if a is None else r.dtype(node.input[a]), r.dtype(node.input[w]))
            if types[0] in ("uint8", None) and types[1] in ("int8", None):
                left.append(f"{node.op_type} {node.name} {types}")
    return left


def reference_dir(int8_dir: Path, arithmetic: str) -> Path:
    """A model folder beside `int8_dir` holding its reference for `arithmetic` (made once). ORT
    must find no uint8 x int8 product left in it to run with an integer kernel."""
    import onnx

    out = int8_dir.parent / f"{int8_dir.name}-ref-{arithmetic}"
    if not (out / MODEL_FILE).exists():
        out.mkdir(exist_ok=True)
        scratch = out.parent / f"{out.name}-scratch"
        scratch.mkdir(exist_ok=True)
        onnx.save(reference_model(int8_dir / MODEL_FILE, arithmetic, scratch), str(out / MODEL_FILE))
        left = _uint8_int8_gemms(onnx.load(str(_optimized(out / MODEL_FILE, scratch / "ort-graph-ref.onnx"))))
        assert not left, f"the reference of {int8_dir} leaves integer products to ORT: {left}"
    return out


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max())


def assert_close(before: np.ndarray, after: np.ndarray, bound: float) -> float:
    """max |after - before| < bound, and the same argmax wherever `before`'s top-2 margin exceeds
    twice the bound (a change below the bound can close a margin of up to twice it). Returns the
    max difference."""
    diff = max_diff(before, after)
    assert diff < bound, diff
    top2 = np.sort(before, axis=-1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 2 * bound
    assert (before.argmax(-1) == after.argmax(-1))[clear].all()
    return diff


@dataclass(frozen=True)
class Int8Check:
    quantization: float   # max |exact reference - fp32|: what quantization costs, the same on any host
    saturation: float     # max |this host's reference - exact reference|: 0 where products are exact
    kernels: float        # max |ORT's int8 kernels - this host's reference|


# ORT's int8 kernels vs a reference with the same integer arithmetic: measured bit-identical on
# both arithmetics; what float rounding of the scale and bias steps could add stays far below
# the fp32 tolerance of the suite (1e-4, fused kernels reordering sums).
KERNEL_TOLERANCE = 1e-4


def check_int8(run: Callable[[Path], np.ndarray], fp32_dir: Path, int8_dir: Path, bound: float) -> Int8Check:
    """Assert that the int8 model in `int8_dir` is what quantizing `fp32_dir` should give, on any
    CPU. `run(model_dir)` gives a model's outputs (logits or embeddings) on the test inputs.
    - the quantization: the exact-arithmetic reference is within `bound` of fp32 (assert_close);
    - ORT's int8 kernels: within KERNEL_TOLERANCE of the reference of this host's arithmetic;
    - together: int8 within `bound` plus this host's saturation plus KERNEL_TOLERANCE of fp32."""
    fp32, int8 = run(fp32_dir), run(int8_dir)
    exact = run(reference_dir(int8_dir, EXACT))
    host = exact if host_arithmetic() == EXACT else run(reference_dir(int8_dir, host_arithmetic()))
    result = Int8Check(quantization=assert_close(fp32, exact, bound), saturation=max_diff(host, exact),
                       kernels=max_diff(int8, host))
    print(f"check_int8 {int8_dir.name} ({host_arithmetic()}): {result}")  # shown with a failure
    assert result.kernels <= KERNEL_TOLERANCE, (host_arithmetic(), result)
    assert_close(fp32, int8, bound + result.saturation + KERNEL_TOLERANCE)
    return result

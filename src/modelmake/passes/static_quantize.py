"""ONNX -> ONNX static int8 quantization: activation ranges calibrated on texts from a dataset."""
from __future__ import annotations

from modelmake.passes import quant_common as q
from modelmake.passes.base import ONNX, Field, Pass, StepContext
from modelmake.runtime import onnxmeta

PASS = Pass(
    type="static-int8",
    summary="Quantize weights and activations to int8 with ORT static quantization, calibrated on a dataset",
    notes=("Activation ranges come from texts of the dataset's train split. It runs after onnx-export or "
           "after ort-fusion, but ORT has no static int8 form of a fused Attention, which stays fp32; on "
           "MiniLM it did best right after onnx-export with op_types = ['MatMul', 'Gemm', 'Gather'] "
           "(the default op set lost 11 points of accuracy; measurements in docs/quantization.md)."),
    fields=(
        Field("data", "dataset", None,
              "dataset whose train split supplies the calibration texts", required=True),
        Field("samples", "int", 128, "calibration texts, drawn from the train split", min=1),
        Field("seed", "int", 0, "seed of the random choice of calibration texts"),
        Field("max_length", "int", 128,
              "tokens per calibration text (longer ones are cut; all are padded to the longest one)", min=1),
        Field("batch_size", "int", 8,
              "calibration texts per inference run (entropy and percentile use the largest divisor "
              "of the number of texts up to this, as they need equal batches)", min=1),
        Field("format", "str", "qdq",
              "'qdq' (QuantizeLinear/DequantizeLinear pairs ORT fuses at load) or 'qoperator' "
              "(QLinearMatMul, QAttention... written out)",
              choices=("qdq", "qoperator")),
        Field("method", "str", "minmax",
              "how activation ranges come from the calibration values", choices=("minmax", "entropy", "percentile")),
        Field("percentile", "float", 99.999,
              "percentile of absolute activation values kept in range; used only by method 'percentile'", min=90.0, max=100.0),
        q.per_channel(),
        q.reduce_range(),
        Field("activation_type", "str", "quint8",
              "integer type of the quantized activations; ORT's x86 int8 kernels take uint8 "
              "activations, and with qint8 it left most MatMuls in float there (slower than fp32)",
              choices=("quint8", "qint8")),
        q.weight_type(),
        q.op_types("ORT's default set (also Add, Mul, Softmax, Gather..., which costs accuracy on BERT)"),
        q.nodes_to_exclude(),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="integer",
    version=1,
    libraries=("onnx", "onnxruntime", "numpy", "tokenizers"),
    run="modelmake.passes.static_quantize:run",
    needs_tokenizer=True,
)

def _graph_inputs(path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}
    return [i.name for i in graph.input if i.name not in weights]


def _reader(batches: list[dict], progress):
    """A CalibrationDataReader over ready feeds that advances `progress` as ORT pulls each batch."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(batches)

        def get_next(self):
            feeds = next(self._it, None)
            if feeds is not None:
                progress.advance()
            return feeds

        def __len__(self):
            return len(batches)

    return Reader()


def calibration_batches(ctx: StepContext, inputs: list[str]) -> list[dict]:
    from modelmake.core import textenc
    from modelmake.passes.finetune import select_rows

    cfg = ctx.config
    if ctx.tokenizer_dir is None:
        raise ValueError("static-int8 needs the tokenizer of the model (no tokenizer folder was given)")
    rows = ctx.datasets[cfg.data].train
    if not rows:
        raise ValueError(f"dataset '{cfg.data}' has no train rows to calibrate on")
    texts = [t for t, _ in select_rows(rows, cfg.samples, cfg.seed)]
    # ORT's entropy and percentile calibrators stack each tensor's values across batches, which
    # fails on ragged shapes; so every batch is padded to the longest calibration text.
    longest = max(len(e.ids) for e in textenc.load(ctx.tokenizer_dir, cfg.max_length).encode_batch(texts))
    tok = textenc.load(ctx.tokenizer_dir, cfg.max_length, pad_to=longest)
    size = min(cfg.batch_size, len(texts))
    if cfg.method != "minmax":
        # For the same reason their batches must all be the same size, so a smaller divisor of the
        # number of texts is used; the rows' activations do not depend on the batch they are in.
        size = max(d for d in range(1, size + 1) if len(texts) % d == 0)
    batches = []
    for start in range(0, len(texts), size):
        encoded = textenc.encode_with(tok, texts[start:start + size])
        missing = [n for n in inputs if n not in encoded]
        if missing:
            raise ValueError(f"model inputs {missing} are not produced by the tokenizer "
                             f"(it gives {', '.join(encoded)})")
        batches.append({n: encoded[n] for n in inputs})
    return batches


def prepared_model(path, unshare: bool):
    """The model at `path` made ready for ORT's static quantizer.

    Value types are inferred through ORT contrib ops where it has any: the calibrator only records
    ranges of tensors whose type it knows, and ONNX's shape inference stops at contrib ops
    (Attention, SkipLayerNormalization...), so on an ort-fusion output most activations would get
    no range and the quantizer would fail on the first one it needs. ORT's symbolic shape
    inference knows those ops.

    With `unshare`, a float initializer read by several nodes gets one copy per node: the
    QOperator quantizer replaces an initializer by its quantized form for the first op it meets,
    so a shared one (the exporter merges equal constants, e.g. all-zero biases) ends up as an
    int8 weight where another op needs an int32 bias, and ORT refuses the model."""
    import onnx

    model = onnx.load(str(path))
    if unshare:
        _unshare_initializers(model.graph)
    if not any(n.domain == "com.microsoft" for n in model.graph.node):
        return model
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def _unshare_initializers(graph) -> None:
    import onnx

    floats = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    seen: dict[str, int] = {}
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name not in floats:
                continue
            uses = seen[name] = seen.get(name, 0) + 1
            if uses > 1:
                copy = onnx.TensorProto()
                copy.CopyFrom(floats[name])
                copy.name = f"{name}_use{uses}"
                graph.initializer.append(copy)
                node.input[k] = copy.name


def run(ctx: StepContext) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from modelmake.core.progress import bar

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[cfg.method]
    batches = calibration_batches(ctx, _graph_inputs(src))
    n_texts = sum(len(next(iter(b.values()))) for b in batches)
    ctx.log(f"calibrating on {n_texts} texts of '{cfg.data}' ({cfg.method}), "
            f"quantizing {cfg.format} (activations {cfg.activation_type}, weights {cfg.weight_type}, "
            f"per_channel={cfg.per_channel}, reduce_range={cfg.reduce_range})")
    extra = q.extra_options()
    if cfg.method == "percentile":
        extra["CalibPercentile"] = cfg.percentile
    with onnxmeta.quiet_root_logger():
        with bar("calibrate", len(batches)) as progress:
            quantize_static(
                prepared_model(src, unshare=cfg.format == "qoperator"), dst, _reader(batches, progress),
                quant_format={"qdq": QuantFormat.QDQ, "qoperator": QuantFormat.QOperator}[cfg.format],
                op_types_to_quantize=list(cfg.op_types) or None,
                per_channel=cfg.per_channel,
                reduce_range=cfg.reduce_range,
                activation_type=q.quant_type(cfg.activation_type),
                weight_type=q.quant_type(cfg.weight_type),
                nodes_to_exclude=list(cfg.nodes_to_exclude) or None,
                calibrate_method=method,
                calibration_providers=["CPUExecutionProvider"],
                extra_options=extra,
            )
    onnxmeta.finish(dst, source=src)
    onnxmeta.log_quantized(ctx, src, dst)

"""ONNX metadata_props shared by the ONNX passes: what export records and later passes read.

The ORT optimizer and quantizer rebuild the model proto and may drop metadata_props, so every
ONNX -> ONNX pass copies them from its input to its output with `finish`, which also checks the
model and writes it once.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from modelmake.core.files import atomic_file
from modelmake.runtime import protowire

PREFIX = "modelmake."
MODEL_TYPE = PREFIX + "model_type"
NUM_HEADS = PREFIX + "num_heads"
HIDDEN_SIZE = PREFIX + "hidden_size"
ID2LABEL = PREFIX + "id2label"   # JSON object: {"0": "rotten", ...}
MAX_LENGTH = PREFIX + "max_length"
# written for a feature-extraction export only (absent: a classifier whose output is logits)
TASK = PREFIX + "task"
POOLING = PREFIX + "pooling"       # how token states became the embedding: "mean" or "cls"
NORMALIZE = PREFIX + "normalize"   # "true" when the embedding is L2-normalized in the graph
# written by session-tune: the fastest session settings on its host, and how they were chosen (JSON)
SESSION_OPTIONS = PREFIX + "session_options"

MODEL_FILE = "model.onnx"


def read(model_path: Path) -> dict[str, str]:
    """metadata_props of an ONNX file, without parsing its graph.

    Parsing the model (onnx.load) copies every initializer stored in the file: 0.1-0.3 s for
    MiniLM, paid by every pass that reads its input's metadata and by every session that looks for
    tuned settings. The metadata is a top-level field of the file's ModelProto, so the file is
    walked field by field and everything else is skipped by seeking."""
    def walk(f, fields) -> dict[str, str]:
        props = {}
        for field, length in fields:
            if field == _METADATA_PROPS:
                entry = protowire.strings(f.read(length))
                # one key given twice: the last wins, as in {p.key: p.value for p in ...}
                props[entry.get(_ENTRY_KEY, "")] = entry.get(_ENTRY_VALUE, "")
        return props

    return _walk_or_parse(model_path, walk, lambda model: {p.key: p.value for p in model.metadata_props})


def node_count(model_path: Path) -> int:
    """Nodes of the model's main graph, counted without parsing it."""
    return _walk_or_parse(model_path, lambda f, fields: sum(1 for _ in _nodes(f, fields)),
                          lambda model: len(model.graph.node))


def op_counts(model_path: Path) -> dict[str, int]:
    """Node count per op type of a model's main graph, read without parsing it (external data not
    loaded): what a pass logs about its output and evaluation asks of every model it measures."""
    def walk(f, fields) -> dict[str, int]:
        counts: dict[str, int] = {}
        for end in _nodes(f, fields):
            op = ""
            for field, length in protowire.length_delimited(f, end):
                if field == _NODE_OP_TYPE:  # given twice, the last wins, as parsing it would
                    op = protowire.text(f, length)
            counts[op] = counts.get(op, 0) + 1
        return dict(sorted(counts.items()))

    def parsed(model) -> dict[str, int]:
        import collections

        return dict(sorted(collections.Counter(n.op_type for n in model.graph.node).items()))

    return _walk_or_parse(model_path, walk, parsed)


def _nodes(f, fields) -> Iterator[int]:
    """Walking a model's top-level fields: for each node of its main graph, f is at the node's
    payload, and the offset where it ends is yielded."""
    for field, length in fields:
        if field == _GRAPH:
            for inner, size in protowire.length_delimited(f, f.tell() + length):
                if inner == _GRAPH_NODE:
                    yield f.tell() + size


def _walk_or_parse(model_path: Path, walk, parsed):
    """walk(f, fields) over the file's top-level fields; a file that does not walk cleanly is
    parsed by onnx.load instead, which says what is wrong with it, and `parsed(model)` answers."""
    try:
        with open(model_path, "rb") as f:
            return walk(f, protowire.length_delimited(f, os.fstat(f.fileno()).st_size))
    except protowire.NotWire:
        import onnx

        return parsed(onnx.load(str(model_path), load_external_data=False))


# field numbers of onnx.proto's ModelProto, GraphProto, NodeProto and StringStringEntryProto
_GRAPH, _GRAPH_NODE = 7, 1
_NODE_OP_TYPE = 4
_METADATA_PROPS = 14
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


def set_props(model, props: dict[str, str]) -> None:
    """Set `props` on a ModelProto in place, replacing same-named keys and keeping key order stable."""
    merged = {p.key: p.value for p in model.metadata_props}
    merged.update({k: str(v) for k, v in props.items()})
    del model.metadata_props[:]
    for key in sorted(merged):
        model.metadata_props.add(key=key, value=merged[key])


def check(model_path: Path) -> None:
    """Fail unless the file passes the ONNX checker and ORT can build a CPU session from it. One
    after the other: on two threads they contend and take longer (0.17 s against 0.15 s for 90 MB)."""
    import onnx

    onnx.checker.check_model(str(model_path))
    _loads(str(model_path))


def _loads(model) -> None:
    """ORT builds a CPU session from `model` (a path or serialized bytes): every op has a kernel
    and the graph is valid. Graph optimizations, the packing of weights for the matrix kernels and
    a thread pool only cost time here: the sessions that run the model do their own."""
    import onnxruntime as ort

    from modelmake.runtime.sessions import cpu_session

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.disable_prepacking", "1")
    cpu_session(model, options)


# protobuf cannot serialize a model of 2 GB or more in one piece; such models go through files
_IN_MEMORY_LIMIT = 1 << 30


def finish(model_path: Path, props: dict | None = None, source: Path | None = None, edit=None,
           proto=None) -> None:
    """End an ONNX pass's output at `model_path`: carry `source`'s metadata over (ORT's optimizer
    and quantizer drop it), set `props`, apply `edit(proto)`, then check the model with the ONNX
    checker and an ORT CPU session, reading and writing the file once (not read at all when the
    pass hands over its `proto`: a ModelProto, or the model serialized, which must then hold all
    its tensors, as an exporter's output in memory does).

    `model_path` is in a folder nobody reads yet (the step's output folder, published whole once
    the step succeeded): a file the pass wrote there is appended to in place when it can be."""
    import onnx

    model_path = Path(model_path)
    merged = read(source) if source is not None else {}
    merged.update(props or {})
    if proto is None and edit is None and _appended(model_path, merged):
        # ORT's quantizers and optimizer write the model without metadata: appending it (see
        # below) spared parsing the model, serializing it and writing it again
        check(model_path)
        return
    tail = b""
    if isinstance(proto, bytes) and edit is None and _appendable(io.BytesIO(proto), len(proto)):
        # Protobuf merges a message appended to another, and serializes fields in number order:
        # the metadata (field 14) written after a model that ends with its opset imports (8) gives
        # the bytes serializing the whole model again would, without parsing (0.05 s for 90 MB),
        # serializing (0.1 s) or even concatenating them (0.04 s). The checker below reads the
        # model without that tail: it holds only the strings set_props wrote.
        data, tail = proto, _metadata_bytes(merged)
    else:
        if isinstance(proto, bytes):
            proto = onnx.load_model_from_string(proto)
        elif proto is None:
            proto = onnx.load(str(model_path))
        if edit is not None:
            edit(proto)
        set_props(proto, merged)
        if uses_external_data(proto):
            onnx.save(proto, str(model_path))
            check(model_path)
            return
        # serialized once and measured by its length: proto.ByteSize() costs as much as serializing
        data = proto.SerializeToString()

    def write_checked(tmp: Path) -> None:
        # Renamed into place only once both checks passed. The checker reads the bytes in memory
        # (no tail: it holds only the strings set_props wrote); ORT reads the file just written:
        # bytes handed to it from Python are copied first (0.1 s against 0.06 s for 90 MB). One
        # after the other: on two threads they contend and take longer.
        with open(tmp, "wb") as f:
            f.write(data)
            f.write(tail)
        # protobuf cannot parse a message of 2 GB or more from memory: the checker reads the file
        onnx.checker.check_model(data if len(data) + len(tail) < _IN_MEMORY_LIMIT else str(tmp))
        _loads(str(tmp))

    atomic_file(model_path, write_checked)


def _metadata_bytes(props: dict[str, str]) -> bytes:
    """`props` as the metadata_props fields of a ModelProto, serialized: appended to a serialized
    model without metadata, they give that model with them."""
    import onnx

    metadata = onnx.ModelProto()
    set_props(metadata, props)
    return metadata.SerializeToString()


def _appended(model_path: Path, props: dict[str, str]) -> bool:
    """Append `props` as metadata to the file when that gives what serializing the model with them
    would (see _appendable) and the file is the pass's own (not a link to a file elsewhere, which
    an append would change too); whether it did."""
    try:
        with open(model_path, "r+b") as f:
            size = os.fstat(f.fileno())
            if size.st_nlink != 1 or not _appendable(f, size.st_size):
                return False
            f.seek(0, os.SEEK_END)
            f.write(_metadata_bytes(props))
            return True
    except OSError:
        return False  # parsed then, which says what is wrong


def _appendable(f, end: int) -> bool:
    """Whether metadata appended to the serialized model (f, from its position up to `end`) lands
    where serializing it would put it: no metadata yet and no field numbered after it
    (training_info 20, functions 25, configuration 26, or one a later ONNX adds), read from its
    top-level fields."""
    try:
        return all(field < _METADATA_PROPS for field, _ in protowire.length_delimited(f, end))
    except protowire.NotWire:
        return False  # parsed then, which says what is wrong


def uses_external_data(proto) -> bool:
    from onnx.external_data_helper import uses_external_data as external

    return any(external(t) for t in _tensors(proto.graph))


def external_files(model_path: Path) -> list[str]:
    """Names of the external data files the model's tensors refer to (relative to its folder)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(model_path), load_external_data=False)
    return sorted({ExternalDataInfo(t).location for t in _tensors(model.graph) if uses_external_data(t)})


def _tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            for g in list(attr.graphs) + ([attr.g] if attr.HasField("g") else []):
                yield from _tensors(g)


# Ops that compute on integers: what ORT's quantizers emit (dynamic, static QDQ and QOperator,
# weight-only block-wise) and the integer kernels ORT fuses QDQ groups into at load. A model with
# any of them computes differently on CPUs whose int8 kernels differ (hostinfo.int8_path).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
    "MatMulInteger", "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM",
    "QAttention", "QGemm", "QEmbedLayerNormalization", "QLinearMatMul", "QLinearConv", "QLinearAdd",
    "QLinearMul", "QLinearSoftmax", "QLinearConcat", "QLinearWhere", "QLinearSigmoid", "QLinearLeakyRelu",
    "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearReduceMean",
    "MatMulNBits", "MatMulBnb4", "GatherBlockQuantized",
})


def quantized_ops(path: Path) -> dict[str, int]:
    """Node count per quantized op type (QUANTIZED_OPS) in a model's main graph: empty for a float model."""
    return {k: v for k, v in op_counts(path).items() if k in QUANTIZED_OPS}


def log_quantized(ctx, src: Path, dst: Path) -> None:
    """One line: size before -> after, and how many of each quantized op the output has."""
    quantized = quantized_ops(dst)
    ctx.log(f"{src.stat().st_size / 1e6:.1f} MB -> {dst.stat().st_size / 1e6:.1f} MB; "
            + (", ".join(f"{k}={v}" for k, v in quantized.items()) or "no quantized ops"))


@contextmanager
def quiet_root_logger() -> Iterator[None]:
    """ORT's quantizers log a generic "consider pre-processing" advice on the root logger on
    every call; it says nothing about this model, so it is silenced while they run."""
    import logging  # here: pass modules are imported by every no-op build, and logging costs it ~1.5 ms

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)

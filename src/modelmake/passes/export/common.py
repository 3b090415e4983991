"""What every export shares: the two torch exporters, the example inputs, and `finish`, the one
step that ends every export (metadata, save, check, log)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

from modelmake.passes.base import PassConfig, StepContext
from modelmake.runtime import onnxmeta

# Dummy input size only shapes the trace; batch and sequence are exported as dynamic axes.
_DUMMY_BATCH, _DUMMY_SEQ = 2, 8


def input_names(model, tokenizer) -> list[str]:
    """The tokenizer's outputs that the model's forward accepts, in the forward's order."""
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return [p for p in params if p in tokenizer.model_input_names]


def config_value(config, *names: str) -> int:
    # Architectures name these differently (BERT: num_attention_heads, DistilBERT: n_heads).
    return next((int(getattr(config, n)) for n in names if getattr(config, n, None)), 0)


def shape_props(config) -> dict:
    """num_heads and hidden_size of a transformers-style config, as metadata (0 where unknown)."""
    return {onnxmeta.NUM_HEADS: config_value(config, "num_attention_heads", "n_heads", "n_head"),
            onnxmeta.HIDDEN_SIZE: config_value(config, "hidden_size", "dim", "n_embd")}


def check_max_length(model, max_length: int) -> None:
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and max_length > positions:
        raise ValueError(f"max_length = {max_length} exceeds the model's {positions} position embeddings")


def dummy(tokenizer, names: list[str]):
    import torch

    encoded = tokenizer(["a"] * _DUMMY_BATCH, padding="max_length", max_length=_DUMMY_SEQ,
                        truncation=True, return_tensors="pt")
    return tuple(encoded[n].to(torch.int64) for n in names)


class _Kept:
    """What the exporter writes, kept as the bytes objects it hands over. A BytesIO would copy the
    serialized model into its buffer and getvalue() out again (0.04 s each for MiniLM's 90 MB)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data) -> int:
        self.parts.append(bytes(data))  # bytes(b) is b itself: no copy of the exporter's bytes
        return len(data)

    def flush(self) -> None:
        pass

    def value(self) -> bytes:
        return self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)


def _export_torchscript(module, args, names: list[str], path: Path, opset: int) -> bytes:
    """The exported model, serialized and kept in memory: finish() writes it once, with its metadata."""
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    kept = _Kept()
    torch.onnx.export(module, args, kept, dynamo=False, input_names=names,
                      output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                      do_constant_folding=True)
    return kept.value()


def require_onnxscript() -> None:
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise RuntimeError("exporter = 'dynamo' needs the 'onnxscript' package (a dependency of modelmake), "
                           "which is not installed; reinstall modelmake or use exporter = 'torchscript'")


# The dynamo exporter's own translations start at opset 18; a lower opset is reached by converting
# the exported model down, which keeps opset 18 (with only a logged warning) when it fails.
_DYNAMO_NATIVE_OPSET = 18


def _export_dynamo(module, args, names: list[str], path: Path, opset: int) -> None:
    import logging

    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = tuple({0: batch, 1: seq} for _ in names)
    # Its progress lines, the torchvision-not-installed notices and the opset down-conversion
    # notices are noise in a build log; the opset actually written is checked below instead.
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            # batch and sequence are the same symbols on every input, which it warns about per input
            warnings.filterwarnings("ignore", message=r".*axis name: .* will not be used")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.* is deprecated", category=FutureWarning)
            # optimize = True runs onnxscript's graph optimizer (constant folding, dead code) on the
            # export; its node names come from counters, so the same model gives the same bytes.
            program = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                        output_names=["logits"], dynamic_shapes=(shapes,),
                                        opset_version=opset, external_data=False, optimize=True,
                                        verbose=False, report=False, dump_exported_program=False)
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)
    written = program.model.opset_imports.get("", program.model.opset_imports.get("ai.onnx"))
    if written != opset:
        raise ValueError(f"the dynamo exporter could not convert the model to opset {opset} (it made "
                         f"opset {written}); use opset >= {_DYNAMO_NATIVE_OPSET} with exporter = 'dynamo'")
    _drop_provenance(program.model)
    program.save(str(path), external_data=False)


def _drop_provenance(model) -> None:
    """Remove the metadata_props the dynamo exporter attaches to graphs, nodes and values.

    They hold each node's Python stack trace (file paths and line numbers of this module, of
    transformers and of the virtualenv), its FX node text and the export's graph signature:
    debugging context, not the model. Kept, they make the same model export to different bytes
    in another checkout or install, or after an unrelated edit to this file.
    """
    import onnx_ir as ir

    for graph in (model.graph, *model.functions.values()):
        graph.metadata_props.clear()
        values = [*graph.inputs, *graph.outputs]
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.clear()
            values += node.outputs
        if isinstance(graph, ir.Graph):
            values += graph.initializers.values()
        for value in values:
            value.metadata_props.clear()


def export_quietly(cfg: PassConfig, module, args, names: list[str], path: Path):
    """Export with the configured exporter, silencing warnings that are known not to matter.
    Returns the model (serialized) when the exporter kept it in memory, None when it wrote `path`."""
    import torch

    export = _export_dynamo if cfg.exporter == "dynamo" else _export_torchscript
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that HF's mask-padding check becomes a constant and that advanced
        # indexing assumes non-negative indices; both hold for encoder inputs, and the tests
        # compare the exported logits with torch's across batch sizes, lengths and padding.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        # The TorchScript exporter is deprecated but is the one whose graphs ORT fuses fully.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        return export(module, args, names, path, cfg.opset)


def finish(ctx: StepContext, props: dict, edit: Callable | None = None, proto=None) -> None:
    """End an export (`proto`, serialized, or the model written to out_dir/model.onnx): `edit` the graph (if
    given), record `props` and the recipe's max_length in its metadata, save it once, check it
    with the ONNX checker and ORT, log it."""
    path = ctx.out_dir / onnxmeta.MODEL_FILE
    onnxmeta.finish(path, {**props, onnxmeta.MAX_LENGTH: ctx.config.max_length}, edit=edit, proto=proto)
    ctx.log(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB, {onnxmeta.node_count(path)} nodes)")

"""HF sequence classifier -> ONNX (logits), with the facts later passes need in metadata_props."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

from modelmake.passes import onnxmeta
from modelmake.passes.base import HF, ONNX, Field, Pass, StepContext

PASS = Pass(
    type="onnx-export",
    summary="Export a Hugging Face sequence classifier to ONNX (fp32 logits, dynamic batch and sequence)",
    fields=(
        Field("opset", "int", 17, "ONNX opset to export with (the TorchScript exporter stops at 20)",
              min=14, max=20),
        Field("exporter", "str", "torchscript",
              "torch exporter: 'torchscript' (fully fused later by ort-fusion) or 'dynamo' (needs onnxscript)",
              choices=("torchscript", "dynamo")),
        Field("attn_implementation", "str", "eager",
              "attention code traced into the graph; 'eager' is the form ort-fusion recognises",
              choices=("eager", "sdpa")),
        Field("max_length", "int", 128,
              "token limit recorded for inference (metadata and package); the exported axes stay dynamic",
              min=1),
    ),
    input_format=HF,
    output_format=ONNX,
    version=1,
    libraries=("torch", "transformers", "onnx"),
    run="modelmake.passes.export:run",
)

# Dummy input size only shapes the trace; batch and sequence are exported as dynamic axes.
_DUMMY_BATCH, _DUMMY_SEQ = 2, 8


def _load(model_dir: Path, attn_implementation: str):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own log lines say what is happening
    # Weights missing from the checkpoint (e.g. a bare encoder's classifier head) are drawn at
    # random; seeding makes that draw, and so the exported bytes, reproducible.
    torch.manual_seed(0)
    model, info = AutoModelForSequenceClassification.from_pretrained(
        model_dir, attn_implementation=attn_implementation, output_loading_info=True)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir), sorted(info.get("missing_keys", []))


def input_names(model, tokenizer) -> list[str]:
    """The tokenizer's outputs that the model's forward accepts, in the forward's order."""
    import inspect

    params = list(inspect.signature(model.forward).parameters)
    return [p for p in params if p in tokenizer.model_input_names]


def _logits_module(model, names: list[str]):
    """Wrap `model` so its positional inputs are `names` and its only output is the logits."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args)), return_dict=True).logits

    return Logits().eval()


def _config_value(config, *names: str) -> int:
    # Architectures name these differently (BERT: num_attention_heads, DistilBERT: n_heads).
    return next((int(getattr(config, n)) for n in names if getattr(config, n, None)), 0)


def _dummy(tokenizer, names: list[str]):
    import torch

    encoded = tokenizer(["a"] * _DUMMY_BATCH, padding="max_length", max_length=_DUMMY_SEQ,
                        truncation=True, return_tensors="pt")
    return tuple(encoded[n].to(torch.int64) for n in names)


def _export_torchscript(module, args, names: list[str], path: Path, opset: int) -> None:
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                      output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                      do_constant_folding=True)


def _require_onnxscript() -> None:
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None:
        raise RuntimeError("exporter = 'dynamo' needs the 'onnxscript' package, which is not installed; "
                           "install it or use exporter = 'torchscript'")


def _export_dynamo(module, args, names: list[str], path: Path, opset: int) -> None:
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = tuple({0: batch, 1: seq} for _ in names)
    program = torch.onnx.export(module, args, dynamo=True, input_names=names,
                                output_names=["logits"], dynamic_shapes=(shapes,),
                                opset_version=opset, external_data=False)
    program.save(str(path), external_data=False)


def run(ctx: StepContext) -> None:
    import onnx
    import torch

    cfg = ctx.config
    if cfg["exporter"] == "dynamo":
        _require_onnxscript()
    model, tokenizer, missing = _load(ctx.model_dir, cfg["attn_implementation"])
    if missing:
        ctx.log(f"warning: {len(missing)} weights not in the checkpoint were initialised at random "
                f"(e.g. {missing[0]}); fine-tune before relying on its predictions")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg["max_length"] > positions:
        raise ValueError(f"max_length = {cfg['max_length']} exceeds the model's "
                         f"{positions} position embeddings")
    names = input_names(model, tokenizer)
    path = ctx.out_dir / onnxmeta.MODEL_FILE
    ctx.log(f"exporting with {cfg['exporter']} (opset {cfg['opset']}, inputs {', '.join(names)})")
    export = _export_dynamo if cfg["exporter"] == "dynamo" else _export_torchscript
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that HF's mask-padding check becomes a constant and that advanced
        # indexing assumes non-negative indices; both hold for encoder inputs, and the tests
        # compare the exported logits with torch's across batch sizes, lengths and padding.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        # The TorchScript exporter is deprecated but is the one whose graphs ORT fuses fully.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        export(_logits_module(model, names), _dummy(tokenizer, names), names, path, cfg["opset"])

    mc = model.config
    proto = onnx.load(str(path))
    onnxmeta.set_props(proto, {
        onnxmeta.MODEL_TYPE: mc.model_type,
        onnxmeta.NUM_HEADS: _config_value(mc, "num_attention_heads", "n_heads", "n_head"),
        onnxmeta.HIDDEN_SIZE: _config_value(mc, "hidden_size", "dim", "n_embd"),
        onnxmeta.ID2LABEL: json.dumps({str(k): v for k, v in sorted(mc.id2label.items())},
                                      sort_keys=True, separators=(",", ":")),
        onnxmeta.MAX_LENGTH: cfg["max_length"],
    })
    onnx.save(proto, str(path))
    onnxmeta.check(path)
    ctx.log(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB, {len(proto.graph.node)} nodes)")

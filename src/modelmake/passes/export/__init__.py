"""HF sequence classifier, user PyTorch model or bare encoder -> ONNX, with the facts later passes
need in metadata_props.

One pass, three sources, a module each: hf.py (a Hugging Face classifier's logits), pytorch.py
(the model your `model.function` builds), embeddings.py (a bare encoder's sentence embedding,
for model.task = "feature-extraction"). They share common.py: the exporters and the one step
that finishes every export (metadata, save, check, log).
"""
from __future__ import annotations

from modelmake.passes.base import ENTRY_FILE, HF, ONNX, PYTORCH, Field, Pass, StepContext

FEATURE_EXTRACTION = "feature-extraction"

PASS = Pass(
    type="onnx-export",
    summary="Export a Hugging Face model, or the PyTorch model your `model.function` builds, to ONNX",
    notes=("A classifier exports its fp32 logits, with dynamic batch and sequence. With model.task = "
           "'feature-extraction' it exports a bare encoder whose output `embeddings` is the sentence embedding, "
           "pooled as the model's sentence-transformers files say (else the attention-masked mean, L2-normalized)."),
    fields=(
        Field("opset", "int", 17, "ONNX opset to export with (the TorchScript exporter stops at 20)",
              min=14, max=20),
        Field("exporter", "str", "torchscript",
              "torch exporter: 'torchscript' (fused later by ort-fusion) or 'dynamo' (fused later by "
              "onnxscript-fusion)",
              choices=("torchscript", "dynamo")),
        Field("attn_implementation", "str", "eager",
              "attention code traced into a Hugging Face model's graph; 'eager' is the form ort-fusion "
              "recognises (a PyTorch model's own code decides its attention)",
              choices=("eager", "sdpa")),
        Field("max_length", "int", 128,
              "token limit recorded for inference (metadata and package); the exported axes stay dynamic",
              min=1),
    ),
    input_format=HF,
    output_format=ONNX,
    computes="float",
    version=1,
    libraries=("torch", "transformers", "onnx"),
    # the dynamo exporter writes its graph through onnxscript and onnx-ir
    libraries_when=(("exporter", "dynamo", ("onnxscript", "onnx-ir")),),
    run="modelmake.passes.export:run",
    more_input_formats=(PYTORCH,),
    task_dependent=True,  # a classifier's logits or an encoder's embeddings
)


def run(ctx: StepContext) -> None:
    from modelmake.passes.export import common

    if ctx.config.exporter == "dynamo":
        common.require_onnxscript()
    is_pytorch = (ctx.model_dir / ENTRY_FILE).is_file()  # the source step wrote it for model.function
    if ctx.task == FEATURE_EXTRACTION:
        if is_pytorch:
            raise ValueError("model.task = 'feature-extraction' exports a Hugging Face encoder, not a model.function")
        from modelmake.passes.export.embeddings import run_embeddings as export
    elif is_pytorch:
        from modelmake.passes.export.pytorch import run_pytorch as export
    else:
        from modelmake.passes.export.hf import run_hf as export
    export(ctx)

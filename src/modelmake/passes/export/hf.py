"""A Hugging Face sequence classifier -> ONNX logits."""
from __future__ import annotations

import json
from pathlib import Path

from modelmake.passes.base import StepContext
from modelmake.passes.export import common
from modelmake.runtime import onnxmeta


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


def run_hf(ctx: StepContext) -> None:
    cfg = ctx.config
    model, tokenizer, missing = _load(ctx.model_dir, cfg.attn_implementation)
    if missing:
        ctx.log(f"warning: {len(missing)} weights not in the checkpoint were initialised at random "
                f"(e.g. {missing[0]}); fine-tune before relying on its predictions")
    common.check_max_length(model, cfg.max_length)
    names = common.input_names(model, tokenizer)
    ctx.log(f"exporting with {cfg.exporter} (opset {cfg.opset}, inputs {', '.join(names)})")
    exported = common.export_quietly(cfg, _logits_module(model, names), common.dummy(tokenizer, names), names,
                          ctx.out_dir / onnxmeta.MODEL_FILE)
    mc = model.config
    common.finish(ctx, {
        onnxmeta.MODEL_TYPE: mc.model_type,
        **common.shape_props(mc),
        onnxmeta.ID2LABEL: json.dumps({str(k): v for k, v in sorted(mc.id2label.items())},
                                      sort_keys=True, separators=(",", ":")),
    }, proto=exported)

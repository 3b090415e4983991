"""A bare encoder (model.task = "feature-extraction") -> ONNX `embeddings` [batch, hidden]: the
sentence embedding, pooled as the model's sentence-transformers files say."""
from __future__ import annotations

import json
from pathlib import Path

from modelmake.passes.base import StepContext
from modelmake.passes.export import FEATURE_EXTRACTION, common
from modelmake.runtime import onnxmeta

EMBEDDINGS = "embeddings"   # the output of a feature-extraction export: [batch, hidden] floats
POOLINGS = ("mean", "cls")


def pooling_of(model_dir: Path) -> tuple[str, bool]:
    """(pooling, L2-normalize) as the model's sentence-transformers files say (modules.json and its
    Pooling module's config.json). A folder without them gets the attention-masked mean,
    normalized: what all-MiniLM-L6-v2 and most sentence-embedding models do."""
    modules_file = Path(model_dir) / "modules.json"
    if not modules_file.is_file():
        return "mean", True
    modules = json.loads(modules_file.read_text(encoding="utf-8"))
    types = [str(m.get("type", "")) for m in modules]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooler = next((m for m, t in zip(modules, types) if t.endswith(".Pooling")), None)
    if pooler is None:
        return "mean", normalize
    config_file = Path(model_dir) / pooler.get("path", "") / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    modes = sorted(k.removeprefix("pooling_mode_") for k, v in config.items()
                   if k.startswith("pooling_mode_") and v is True)
    mode = {("mean_tokens",): "mean", ("cls_token",): "cls", (): "mean"}.get(tuple(modes))
    if mode is None:
        raise ValueError(f"{config_file.relative_to(model_dir)} asks for pooling {', '.join(modes)}; "
                         f"onnx-export pools by {' or '.join(POOLINGS)} only")
    return mode, normalize


def _embeddings_module(model, names: list[str], pooling: str, normalize: bool):
    """Wrap a bare encoder: positional `names` in, the pooled sentence embedding out."""
    import torch

    class Embeddings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            inputs = dict(zip(names, args))
            hidden = self.model(**inputs, return_dict=True).last_hidden_state
            if pooling == "cls":
                pooled = hidden[:, 0]
            else:  # padding must not count: a text's embedding is the same in any batch
                mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=-1) if normalize else pooled

    return Embeddings().eval()


def _rename_output(proto, old: str, new: str) -> None:
    """Rename a graph output (the exporters name their single output 'logits')."""
    for node in proto.graph.node:
        for values in (node.input, node.output):
            for i, name in enumerate(values):
                if name == old:
                    values[i] = new
    for value in (*proto.graph.output, *proto.graph.value_info):
        if value.name == old:
            value.name = new


def _load(model_dir: Path, attn_implementation: str):
    """(encoder, tokenizer, loading info) of a Hugging Face folder, without any head."""
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a classifier checkpoint's head weights are expectedly unused
    try:
        torch.manual_seed(0)
        model, info = AutoModel.from_pretrained(model_dir, attn_implementation=attn_implementation,
                                                output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir), info


def run_embeddings(ctx: StepContext) -> None:
    """Export a Hugging Face encoder without its head: output `embeddings` [batch, hidden]."""
    cfg = ctx.config
    pooling, normalize = pooling_of(ctx.model_dir)
    model, tokenizer, info = _load(ctx.model_dir, cfg.attn_implementation)
    # a pooler layer missing from the checkpoint is never traced: the embedding does not use it
    missing = sorted(k for k in info.get("missing_keys", []) if not k.startswith("pooler."))
    if missing:
        raise ValueError(f"{len(missing)} encoder weights are not in the checkpoint (e.g. {missing[0]}); "
                         "its embeddings would be random")
    unused = sorted(info.get("unexpected_keys", []))
    if unused:
        ctx.log(f"note: {len(unused)} weights of the checkpoint are not part of the encoder and are left out "
                f"(e.g. {unused[0]}, a head)")
    common.check_max_length(model, cfg.max_length)
    names = common.input_names(model, tokenizer)
    if pooling == "mean" and "attention_mask" not in names:
        raise ValueError("mean pooling needs the attention mask, which this tokenizer does not give")
    ctx.log(f"exporting the bare {type(model).__name__} with {cfg.exporter} (opset {cfg.opset}, "
            f"{pooling} pooling{', L2-normalized' if normalize else ''}, inputs {', '.join(names)})")
    exported = common.export_quietly(cfg, _embeddings_module(model, names, pooling, normalize),
                          common.dummy(tokenizer, names), names, ctx.out_dir / onnxmeta.MODEL_FILE)
    shape = common.shape_props(model.config)
    hidden = shape[onnxmeta.HIDDEN_SIZE]

    def name_output(proto) -> None:
        _rename_output(proto, proto.graph.output[0].name, EMBEDDINGS)
        dims = proto.graph.output[0].type.tensor_type.shape.dim
        if hidden and len(dims) == 2:  # the exporter names this fixed size after an op ('Divlogits_dim_1')
            dims[1].dim_value = hidden

    common.finish(ctx, {
        onnxmeta.MODEL_TYPE: model.config.model_type, **shape,
        onnxmeta.TASK: FEATURE_EXTRACTION, onnxmeta.POOLING: pooling,
        onnxmeta.NORMALIZE: "true" if normalize else "false",
    }, edit=name_output, proto=exported)

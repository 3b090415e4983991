"""HF sequence classifier or user PyTorch model -> ONNX (logits), with the facts later passes need
in metadata_props."""
from __future__ import annotations

import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ENTRY_FILE, HF, ONNX, PYTORCH, Field, Pass, StepContext

PASS = Pass(
    type="onnx-export",
    summary="Export a Hugging Face sequence classifier, or a PyTorch model built by your `model.function`, "
            "to ONNX (fp32 logits, dynamic batch and sequence). With model.task = 'feature-extraction' it exports "
            "a bare encoder whose output `embeddings` is the sentence embedding, pooled as the model's "
            "sentence-transformers files say (else the attention-masked mean, L2-normalized)",
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
    version=1,
    libraries=("torch", "transformers", "onnx"),
    # the dynamo exporter writes its graph through onnxscript and onnx-ir
    libraries_when=(("exporter", "dynamo", ("onnxscript", "onnx-ir")),),
    run="modelmake.passes.export:run",
    more_input_formats=(PYTORCH,),
    task_dependent=True,  # a classifier's logits or an encoder's embeddings
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


def _export_quietly(cfg: dict, module, args, names: list[str], path: Path) -> None:
    """Export with the configured exporter, silencing warnings that are known not to matter."""
    import torch

    export = _export_dynamo if cfg["exporter"] == "dynamo" else _export_torchscript
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns that HF's mask-padding check becomes a constant and that advanced
        # indexing assumes non-negative indices; both hold for encoder inputs, and the tests
        # compare the exported logits with torch's across batch sizes, lengths and padding.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*aten::index.*")
        # The TorchScript exporter is deprecated but is the one whose graphs ORT fuses fully.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        export(module, args, names, path, cfg["opset"])


def run(ctx: StepContext) -> None:
    if ctx.task == FEATURE_EXTRACTION:
        return run_embeddings(ctx)
    if (ctx.model_dir / ENTRY_FILE).is_file():  # the source step wrote it for model.function
        return run_pytorch(ctx)
    import onnx

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
    _export_quietly(cfg, _logits_module(model, names), _dummy(tokenizer, names), names, path)

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


# ---------------------------------------------------------------- a PyTorch model from user code
class UserCodeError(Exception):
    """model.function could not give a model to export; the message names it and says why."""


@contextmanager
def _importable(folder: Path, module: str) -> Iterator[None]:
    """Make `module` importable from `folder` for the duration, then forget it again: the folder
    leaves sys.path, its modules leave sys.modules, and same-named modules imported before (a
    'model' or 'utils' of someone else) come back. No bytecode is written into the folder, a
    build target whose content is the key."""
    import importlib
    import sys

    top = module.split(".")[0]
    shadowed = {n: m for n, m in sys.modules.items() if n == top or n.startswith(top + ".")}
    for n in shadowed:
        del sys.modules[n]
    path, bytecode = list(sys.path), sys.dont_write_bytecode
    inside = str(folder.resolve())
    sys.path.insert(0, inside)
    sys.dont_write_bytecode = True
    importlib.invalidate_caches()
    try:
        yield
    finally:
        sys.path[:] = path
        sys.dont_write_bytecode = bytecode
        for n, m in list(sys.modules.items()):
            if _defined_in(m, inside):
                del sys.modules[n]
        sys.modules.update(shadowed)


def _defined_in(module, folder: str) -> bool:
    """Whether a module (or namespace package) comes from `folder`. Some modules (torch.ops)
    answer attribute lookups with objects of their own, so only plain strings count."""
    where = [getattr(module, "__file__", None)]
    spec = getattr(module, "__spec__", None)
    if isinstance(getattr(spec, "submodule_search_locations", None), list):
        where += spec.submodule_search_locations
    return any(isinstance(w, str) and (w == folder or w.startswith(folder + os.sep)) for w in where)


def _user_model(folder: Path, function: str):
    """(module in eval mode, input names, example tensors) from the user's `module:function`."""
    import importlib

    import torch

    from modelmake.core.textenc import INPUT_KEYS

    mod_name, _, func_name = function.partition(":")
    what = f"model.function {function!r}"
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import
        raise UserCodeError(f"{what}: importing {mod_name} failed: {_one_line(e)}") from e
    if not hasattr(module, func_name):
        raise UserCodeError(f"{what}: module {mod_name} ({_rel(module, folder)}) has no function {func_name!r}")
    build = getattr(module, func_name)
    if not callable(build):
        raise UserCodeError(f"{what}: {mod_name}.{func_name} is a {type(build).__name__}, not a function")
    try:
        result = build()
    except Exception as e:  # noqa: BLE001 - the user's function failing is the user's error
        raise UserCodeError(f"{what} raised {_one_line(e)}") from e
    shape = "(torch.nn.Module, {input name: tensor})"
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise UserCodeError(f"{what} must return {shape}, got {type(result).__name__}")
    net, inputs = result
    if not isinstance(net, torch.nn.Module):
        raise UserCodeError(f"{what} must return {shape}; its first item is a {type(net).__name__}")
    if not isinstance(inputs, dict) or not inputs:
        raise UserCodeError(f"{what} must return {shape}; its example inputs are {type(inputs).__name__} "
                            f"{'(empty)' if isinstance(inputs, dict) else ''}".rstrip())
    args = []
    for name, t in inputs.items():
        # evaluation and the package feed the tokenizer's outputs by name, [batch, sequence] int64
        if name not in INPUT_KEYS:
            raise UserCodeError(f"{what}: example input {name!r} is not a tokenizer output "
                                f"(use the names {', '.join(INPUT_KEYS)})")
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or t.is_floating_point() or t.is_complex():
            got = f"a {t.dim()}-d {t.dtype} tensor" if isinstance(t, torch.Tensor) else type(t).__name__
            raise UserCodeError(f"{what}: example input {name!r} must be an integer tensor "
                                f"[batch, sequence], got {got}")
        args.append(t.to(torch.int64))
    return net.eval(), list(inputs), tuple(args)


def _one_line(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{e.__class__.__name__}: {first}" if first else e.__class__.__name__


def _rel(module, folder: Path) -> str:
    try:
        return Path(module.__file__).resolve().relative_to(folder.resolve()).as_posix()
    except (TypeError, ValueError):
        return str(getattr(module, "__file__", "?"))


def _user_logits_module(net, names: list[str]):
    """Wrap the user's module: positional `names` in, logits out (a tuple's first item, or
    `.logits` of a Hugging Face output)."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, *args):
            out = self.net(**dict(zip(names, args)))
            if isinstance(out, (tuple, list)):
                out = out[0]
            return getattr(out, "logits", out)

    return Logits().eval()


def _check_logits(logits, batch: int, what: str) -> int:
    """Number of classes; refuses anything but [batch, classes] floats."""
    import torch

    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch \
            or not logits.is_floating_point():
        got = (f"a {tuple(logits.shape)} {logits.dtype} tensor" if isinstance(logits, torch.Tensor)
               else type(logits).__name__)
        raise UserCodeError(f"{what}: the module must return logits [batch={batch}, classes] "
                            f"(or a tuple whose first item is them), got {got}")
    return int(logits.shape[1])


def _known_props(net, n_classes: int) -> dict:
    """The metadata a Hugging Face config would give, as far as the user's module tells it: a
    module carrying a transformers-style `config` gives all of it, any other only what the
    logits show. Passes that need the rest (ort-fusion's num_heads) ask for it in their config."""
    config = getattr(net, "config", None)
    props = {}
    if config is not None:
        heads = _config_value(config, "num_attention_heads", "n_heads", "n_head")
        hidden = _config_value(config, "hidden_size", "dim", "n_embd")
        if heads and hidden:
            props[onnxmeta.NUM_HEADS], props[onnxmeta.HIDDEN_SIZE] = heads, hidden
        if isinstance(getattr(config, "model_type", None), str) and config.model_type:
            props[onnxmeta.MODEL_TYPE] = config.model_type
        labels = getattr(config, "id2label", None)
        if isinstance(labels, dict) and len(labels) == n_classes:
            props[onnxmeta.ID2LABEL] = json.dumps({str(k): v for k, v in sorted(labels.items())},
                                                  sort_keys=True, separators=(",", ":"))
    return props


def run_pytorch(ctx: StepContext) -> None:
    """Export the model the user's `model.function` builds, with its example inputs."""
    import onnx
    import torch

    cfg = ctx.config
    if cfg["exporter"] == "dynamo":
        _require_onnxscript()
    function = json.loads((ctx.model_dir / ENTRY_FILE).read_text(encoding="utf-8"))["function"]
    what = f"model.function {function!r}"
    path = ctx.out_dir / onnxmeta.MODEL_FILE
    # the user's code stays importable through the export: tracing runs its forward
    with _importable(ctx.model_dir, function.partition(":")[0]):
        torch.manual_seed(0)  # a function that draws weights at random draws the same ones each build
        net, names, args = _user_model(ctx.model_dir, function)
        module = _user_logits_module(net, names)
        with torch.no_grad():
            try:
                logits = module(*args)
            except Exception as e:  # noqa: BLE001 - the user's forward failing is the user's error
                raise UserCodeError(f"{what}: the module fails on its example inputs: {_one_line(e)}") from e
        n_classes = _check_logits(logits, int(args[0].shape[0]), what)
        ctx.log(f"exporting {type(net).__name__} from {function} with {cfg['exporter']} "
                f"(opset {cfg['opset']}, inputs {', '.join(names)}, {n_classes} classes)")
        _export_quietly(cfg, module, args, names, path)
        props = _known_props(net, n_classes)
    proto = onnx.load(str(path))
    onnxmeta.set_props(proto, {**props, onnxmeta.MAX_LENGTH: cfg["max_length"]})
    onnx.save(proto, str(path))
    onnxmeta.check(path)
    missing = [k.removeprefix(onnxmeta.PREFIX) for k in (onnxmeta.NUM_HEADS, onnxmeta.ID2LABEL) if k not in props]
    if missing:
        ctx.log(f"note: the module has no transformers-style config, so {' and '.join(missing)} are not "
                "recorded (ort-fusion then needs num_heads and hidden_size in its config)")
    ctx.log(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB, {len(proto.graph.node)} nodes)")


# ---------------------------------------------------------------- a bare encoder: sentence embeddings
FEATURE_EXTRACTION = "feature-extraction"
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
    """Rename a graph output (the exporters above name their single output 'logits')."""
    for node in proto.graph.node:
        for values in (node.input, node.output):
            for i, name in enumerate(values):
                if name == old:
                    values[i] = new
    for value in (*proto.graph.output, *proto.graph.value_info):
        if value.name == old:
            value.name = new


def run_embeddings(ctx: StepContext) -> None:
    """Export a Hugging Face encoder without its head: output `embeddings` [batch, hidden]."""
    import onnx
    import torch
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    cfg = ctx.config
    if (ctx.model_dir / ENTRY_FILE).is_file():
        raise ValueError("model.task = 'feature-extraction' exports a Hugging Face encoder, not a model.function")
    if cfg["exporter"] == "dynamo":
        _require_onnxscript()
    pooling, normalize = pooling_of(ctx.model_dir)
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a classifier checkpoint's head weights are expectedly unused
    try:
        torch.manual_seed(0)
        model, info = AutoModel.from_pretrained(ctx.model_dir, attn_implementation=cfg["attn_implementation"],
                                                output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)
    model, tokenizer = model.eval(), AutoTokenizer.from_pretrained(ctx.model_dir)
    # a pooler layer missing from the checkpoint is never traced: the embedding does not use it
    missing = sorted(k for k in info.get("missing_keys", []) if not k.startswith("pooler."))
    if missing:
        raise ValueError(f"{len(missing)} encoder weights are not in the checkpoint (e.g. {missing[0]}); "
                         "its embeddings would be random")
    unused = sorted(info.get("unexpected_keys", []))
    if unused:
        ctx.log(f"note: {len(unused)} weights of the checkpoint are not part of the encoder and are left out "
                f"(e.g. {unused[0]}, a head)")
    positions = getattr(model.config, "max_position_embeddings", None)
    if positions and cfg["max_length"] > positions:
        raise ValueError(f"max_length = {cfg['max_length']} exceeds the model's {positions} position embeddings")
    names = input_names(model, tokenizer)
    if pooling == "mean" and "attention_mask" not in names:
        raise ValueError("mean pooling needs the attention mask, which this tokenizer does not give")
    path = ctx.out_dir / onnxmeta.MODEL_FILE
    ctx.log(f"exporting the bare {type(model).__name__} with {cfg['exporter']} (opset {cfg['opset']}, "
            f"{pooling} pooling{', L2-normalized' if normalize else ''}, inputs {', '.join(names)})")
    _export_quietly(cfg, _embeddings_module(model, names, pooling, normalize), _dummy(tokenizer, names), names, path)

    mc = model.config
    proto = onnx.load(str(path))
    _rename_output(proto, proto.graph.output[0].name, EMBEDDINGS)
    hidden = _config_value(mc, "hidden_size", "dim", "n_embd")
    dims = proto.graph.output[0].type.tensor_type.shape.dim
    if hidden and len(dims) == 2:  # the exporter names this fixed size after an op ('Divlogits_dim_1')
        dims[1].dim_value = hidden
    onnxmeta.set_props(proto, {
        onnxmeta.MODEL_TYPE: mc.model_type,
        onnxmeta.NUM_HEADS: _config_value(mc, "num_attention_heads", "n_heads", "n_head"),
        onnxmeta.HIDDEN_SIZE: hidden,
        onnxmeta.MAX_LENGTH: cfg["max_length"],
        onnxmeta.TASK: FEATURE_EXTRACTION,
        onnxmeta.POOLING: pooling,
        onnxmeta.NORMALIZE: "true" if normalize else "false",
    })
    onnx.save(proto, str(path))
    onnxmeta.check(path)
    ctx.log(f"wrote {path.name} ({path.stat().st_size / 1e6:.1f} MB, {len(proto.graph.node)} nodes)")

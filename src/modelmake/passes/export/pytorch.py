"""The PyTorch model your `model.function` builds -> ONNX logits.

The function is imported from the step's input folder (core/usercode.py) and stays importable
through the export, since tracing runs its module's forward.
"""
from __future__ import annotations

import json

from modelmake.core.usercode import UserCodeError, first_line, loaded
from modelmake.passes.base import ENTRY_FILE, StepContext
from modelmake.passes.export import common
from modelmake.runtime import onnxmeta


def _user_model(build, what: str):
    """(module in eval mode, input names, example tensors) from the user's function."""
    import torch

    from modelmake.core.textenc import INPUT_KEYS

    try:
        result = build()
    except Exception as e:  # noqa: BLE001 - the user's function failing is the user's error
        raise UserCodeError(f"{what} raised {first_line(e)}") from e
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
        shape = common.shape_props(config)
        if all(shape.values()):
            props.update(shape)
        if isinstance(getattr(config, "model_type", None), str) and config.model_type:
            props[onnxmeta.MODEL_TYPE] = config.model_type
        labels = getattr(config, "id2label", None)
        if isinstance(labels, dict) and len(labels) == n_classes:
            props[onnxmeta.ID2LABEL] = json.dumps({str(k): v for k, v in sorted(labels.items())},
                                                  sort_keys=True, separators=(",", ":"))
    return props


def run_pytorch(ctx: StepContext) -> None:
    """Export the model the user's `model.function` builds, with its example inputs."""
    import torch

    cfg = ctx.config
    function = json.loads((ctx.model_dir / ENTRY_FILE).read_text(encoding="utf-8"))["function"]
    what = f"model.function {function!r}"
    with loaded(ctx.model_dir, function, what) as build:
        torch.manual_seed(0)  # a function that draws weights at random draws the same ones each build
        net, names, args = _user_model(build, what)
        module = _user_logits_module(net, names)
        with torch.no_grad():
            try:
                logits = module(*args)
            except Exception as e:  # noqa: BLE001 - the user's forward failing is the user's error
                raise UserCodeError(f"{what}: the module fails on its example inputs: {first_line(e)}") from e
        n_classes = _check_logits(logits, int(args[0].shape[0]), what)
        ctx.log(f"exporting {type(net).__name__} from {function} with {cfg.exporter} "
                f"(opset {cfg.opset}, inputs {', '.join(names)}, {n_classes} classes)")
        exported = common.export_quietly(cfg, module, args, names, ctx.out_dir / onnxmeta.MODEL_FILE)
        props = _known_props(net, n_classes)
    missing = [k.removeprefix(onnxmeta.PREFIX) for k in (onnxmeta.NUM_HEADS, onnxmeta.ID2LABEL) if k not in props]
    if missing:
        ctx.log(f"note: the module has no transformers-style config, so {' and '.join(missing)} are not "
                "recorded (ort-fusion then needs num_heads and hidden_size in its config)")
    common.finish(ctx, props, proto=exported)

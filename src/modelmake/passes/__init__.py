"""The pass registry: type name (as recipes write it) -> Pass declaration.

Pass modules only declare at import time (no torch/onnx), so importing them all here is cheap.
A plugin module adds its own passes by calling `register` when it is imported.
"""
from __future__ import annotations

from modelmake.passes import (export, finetune, fp16, fuse, genai_build, gguf, int4, ort_optimize, quantize,
                              script_fusion, session_tune, static_quantize)
from modelmake.passes.base import Pass

REGISTRY: dict[str, Pass] = {}


def register(p: Pass) -> Pass:
    """Add a pass; re-registering the same declaration is a no-op, a different one under a taken name fails.
    A declaration whose fields cannot make a typed config fails here, not when a step runs (the
    config class itself is made when a step first runs: a no-op build does not pay for ten classes)."""
    known = REGISTRY.get(p.type)
    if known is not None and known != p:
        raise ValueError(f"pass type '{p.type}' is already registered (by {known.run})")
    p.check()
    REGISTRY[p.type] = p
    return p


def get(type_name: str) -> Pass | None:
    return REGISTRY.get(type_name)


for _module in (finetune, export, fuse, script_fusion, quantize, static_quantize, int4, fp16, ort_optimize,
                session_tune, gguf, genai_build):
    register(_module.PASS)

"""ONNX -> ONNX offline graph optimization by ONNX Runtime, saved as a plain ONNX model.

ORT optimizes a model every time it builds a session; doing the portable part once at build time
makes the saved graph inspectable (node counts, quantization sees the fused ops) and shortens
session start-up. Only the levels whose rewrites do not depend on the CPU are offered: the
`layout` and `all` levels add NCHWc layout transforms whose block size follows the host's vector
width (ORT itself warns that such a model "should only be used in the same environment the model
was optimized in"). The runtime sessions of evaluation and of the package use ORT_ENABLE_ALL, so
those layout rewrites still happen, at load time, on the host that actually runs the model.
"""
from __future__ import annotations

from modelmake.runtime import onnxmeta
from modelmake.passes.base import ONNX, Field, Pass, StepContext

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}

PASS = Pass(
    type="ort-optimize",
    summary="Apply ONNX Runtime's graph optimizations offline and save the optimized model",
    fields=(
        Field("level", "str", "extended",
              "ORT optimization level: 'basic' (constant folding, redundant-node removal) or 'extended' "
              "(plus ORT contrib-op fusions); 'all' is refused because its layout transforms tie the "
              "model to this CPU, and ORT applies them at load time anyway",
              choices=tuple(LEVELS)),
        Field("disabled_optimizers", "list[str]", [],
              "ORT optimizer names to skip (InferenceSession's disabled_optimizers), "
              "e.g. ['ConstantFolding']; names ORT does not know are ignored by ORT"),
    ),
    input_format=ONNX,
    output_format=ONNX,
    computes="as-input",
    version=1,
    libraries=("onnx", "onnxruntime"),
    run="modelmake.passes.ort_optimize:run",
)


def run(ctx: StepContext) -> None:
    import onnxruntime as ort

    from modelmake.runtime.sessions import cpu_session

    cfg = ctx.config
    src = ctx.model_dir / onnxmeta.MODEL_FILE
    dst = ctx.out_dir / onnxmeta.MODEL_FILE
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[cfg.level])
    options.optimized_model_filepath = str(dst)
    # Which QDQ int8 patterns ORT fuses into QLinear ops defaults per platform (allowed on ARM,
    # not on x86); pinning the x86 answer keeps the saved model the same on every machine and
    # leaves the ARM-only fusions to the runtime session on an ARM host.
    options.add_session_config_entry("session.qdqisint8allowed", "0")
    options.intra_op_num_threads = 1  # the session only optimizes; no thread pool worth spinning up
    disabled = sorted(set(cfg.disabled_optimizers))
    ctx.log(f"optimizing at level '{cfg.level}'"
            + (f", without {', '.join(disabled)}" if disabled else ""))
    cpu_session(src, options, disabled_optimizers=disabled or None)
    if not dst.is_file():
        raise RuntimeError(f"onnxruntime did not write the optimized model to {dst}")
    onnxmeta.finish(dst, source=src)
    ctx.log(f"nodes: {onnxmeta.node_count(src)} -> {onnxmeta.node_count(dst)}")

"""A plugin pass for tests: copies the ONNX model, or fails while its marker file exists."""
from __future__ import annotations

import shutil
from pathlib import Path

from modelmake import passes
from modelmake.passes.base import ONNX, Field, Pass, StepContext

passes.register(Pass(type="test-fail-if-marker", summary="Copy the model; fail while the marker file exists",
                     fields=(Field("marker", "str", "FAIL", "file (relative to the project) whose presence fails the step"),),
                     input_format=ONNX, output_format=ONNX, version=1, libraries=(),
                     run="failing_pass:run"))


def run(ctx: StepContext) -> None:
    (ctx.out_dir / "partial.bin").write_bytes(b"half-written")  # must never become a target
    if Path(ctx.config.marker).exists():
        raise RuntimeError(f"marker file {ctx.config.marker} exists")
    (ctx.out_dir / "partial.bin").unlink()
    shutil.copy(ctx.model_dir / "model.onnx", ctx.out_dir / "model.onnx")

"""A plugin pass for tests: copies the ONNX model, or fails while a file named FAIL exists."""
from __future__ import annotations

import shutil
from pathlib import Path

from modelmake import passes
from modelmake.passes.base import ONNX, Pass, StepContext

passes.register(Pass(type="test-fail-if-marker", summary="copy the model; fail while ./FAIL exists",
                     fields=(), input_format=ONNX, output_format=ONNX, version=1, libraries=(),
                     run="failing_pass:run"))


def run(ctx: StepContext) -> None:
    (ctx.out_dir / "partial.bin").write_bytes(b"half-written")  # must never become a target
    if Path("FAIL").exists():
        raise RuntimeError("marker file FAIL exists")
    (ctx.out_dir / "partial.bin").unlink()
    shutil.copy(ctx.model_dir / "model.onnx", ctx.out_dir / "model.onnx")

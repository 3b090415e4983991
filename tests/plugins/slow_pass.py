"""A plugin pass for the cluster tests: copies the ONNX model; the first attempt (no marker file
yet) writes its process id into the marker and waits, so a test can kill the worker running it."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from modelmake import passes
from modelmake.passes.base import ONNX, Field, Pass, StepContext

passes.register(Pass(type="test-slow-once", summary="Copy the model; the first attempt waits to be killed",
                     fields=(Field("marker", "str", "", "absolute path of the file that says an attempt started"),
                             Field("wait_s", "float", 60.0, "how long the first attempt waits", min=0.0)),
                     input_format=ONNX, output_format=ONNX, version=1, libraries=(),
                     run="slow_pass:run"))


def run(ctx: StepContext) -> None:
    marker = Path(ctx.config.marker)
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        deadline = time.monotonic() + ctx.config.wait_s
        while time.monotonic() < deadline:   # bounded: the test kills this process long before
            time.sleep(0.1)
    shutil.copy(ctx.model_dir / "model.onnx", ctx.out_dir / "model.onnx")

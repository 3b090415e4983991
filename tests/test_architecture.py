"""The package boundaries that keep modelmake cheap to load and its ONNX Runtime use in one place."""
from __future__ import annotations

import subprocess
import sys

from buildkit import REPO

SRC = REPO / "src" / "modelmake"
SESSION = "InferenceSession("


def test_onnx_runtime_sessions_are_created_in_runtime_only():
    from modelmake import package

    stray = []
    for f in sorted(SRC.rglob("*.py")):
        if f.parent == SRC / "runtime":
            continue
        found = f.read_text(encoding="utf-8").count(SESSION)
        if f == SRC / "package.py":
            # the predict.py a package carries runs without modelmake: its session is its own
            found -= package.PREDICT_PY.count(SESSION)
        if found:
            stray.append(f"{f.relative_to(REPO)}: {found}")
    assert not stray, f"create ONNX Runtime sessions with modelmake.runtime.sessions, not in {stray}"


def test_metric_catalogue_and_recipe_validation_load_no_evaluation():
    code = ("import sys, modelmake.metrics.catalogue; "
            "print(sorted(m for m in sys.modules if m.startswith('modelmake')), end=' '); "
            "import modelmake.inputs.recipe; "
            "print('modelmake.metrics.evaluate' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded, evaluation = proc.stdout.rsplit(" ", 1)
    assert loaded == "['modelmake', 'modelmake.metrics', 'modelmake.metrics.catalogue']"
    assert evaluation.strip() == "False"

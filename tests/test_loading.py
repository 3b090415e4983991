"""Loading the tasks is cheap: no heavy ML library is imported, and a no-op build is quick."""
from __future__ import annotations

import subprocess
import sys

from buildkit import REPO

HEAVY = ("torch", "transformers", "onnxruntime", "onnx", "datasets")


def test_loading_tasks_imports_no_heavy_library():
    code = ("import sys; sys.path.insert(0, %r); import dodo; "
            "tasks = list(dodo.task_modelmake()); "
            "print(len(tasks), sorted(m for m in %r if m in sys.modules))") % (str(REPO), HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    count, loaded = proc.stdout.split(" ", 1)
    assert int(count) > 10
    assert loaded.strip() == "[]", loaded


# what loading the tasks leaves to the moment a task runs: each was measured on a no-op build
# (the runner and the store's code with their imports ~6 ms, platform, logging and difflib ~1.5 ms
# each, importlib.metadata's e-mail parser of METADATA files ~2 ms a library)
LATER = ("modelmake.build.runner", "modelmake.store.local", "modelmake.store.remote_transfer", "uuid",
         "platform", "logging", "difflib", "email.parser")


def test_a_no_op_build_loads_only_what_loading_tasks_needs():
    code = ("import sys; sys.path.insert(0, %r); import dodo; "
            "tasks = list(dodo.task_modelmake()); "
            "from modelmake import passes; "
            "made = [t for t, p in passes.REGISTRY.items() if 'config_class' in vars(p)]; "
            "print(sorted(m for m in %r if m in sys.modules), made)") % (str(REPO), LATER)
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[] []", proc.stdout


def test_docs_pass_reference_is_current():
    from modelmake.commands.docgen import render
    doc = (REPO / "docs/recipes.md").read_text()
    assert render(doc) == doc, "docs/recipes.md is stale: run python -m modelmake.commands.docgen --write docs/recipes.md"

"""The package boundaries docs/architecture.md draws: a package imports only from the packages
below it (every import statement counts, the lazy ones inside functions included), ONNX Runtime
sessions are created in runtime/ only, and loading recipes loads no evaluation."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from buildkit import REPO


SRC = REPO / "src" / "modelmake"
SESSION = "InferenceSession("

# package -> the packages it may import from (besides itself)
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "runtime": {"core"},
    "passes": {"core", "runtime"},
    "metrics": {"core", "runtime"},
    "inputs": {"core", "runtime", "passes", "metrics"},
    "package": {"core", "runtime", "metrics"},
    "search": {"core", "runtime", "passes", "metrics", "inputs"},
    "execute": {"core"},
    "build": {"core", "store", "runtime", "passes", "metrics", "inputs", "package", "search", "execute"},
    "commands": {"core", "store", "runtime", "passes", "metrics", "inputs", "package", "search", "execute",
                 "build"},
}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "modelmake" or len(parts) < 2:
        return None
    return parts[1]


def imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "modelmake":  # from modelmake import passes, package
                out += [(node.lineno, f"modelmake.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def test_every_module_belongs_to_a_known_package():
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        top = rel.parts[0].removesuffix(".py")
        assert top in ALLOWED or top == "__init__", f"{rel}: not in a package of docs/architecture.md"


def test_packages_import_only_from_below():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, module in imports(path):
            other = package_of(module)
            if other is None or other == own:
                continue
            if other not in ALLOWED[own]:
                wrong.append(f"src/modelmake/{rel}:{line} ({own}) imports {module} ({other})")
    assert not wrong, "imports against the layering of docs/architecture.md:\n" + "\n".join(wrong)



def test_onnx_runtime_sessions_are_created_in_runtime_only():
    from modelmake import package

    stray = []
    for f in sorted(SRC.rglob("*.py")):
        if f.parent == SRC / "runtime":
            continue
        found = f.read_text(encoding="utf-8").count(SESSION)
        if f == SRC / "package" / "encoder.py":
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

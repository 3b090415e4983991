"""The packages stack as docs/architecture.md says: a package imports only from the packages
below it. Every import statement counts, the lazy ones inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "modelmake"

# package -> the packages it may import from (besides itself)
ALLOWED = {
    "core": set(),
    "store": {"core"},
    "runtime": {"core"},
    "passes": {"core", "runtime"},
    "metrics": {"core", "runtime"},
    "inputs": {"core", "runtime", "passes", "metrics"},
    "package": {"core", "runtime", "metrics"},
    "build": {"core", "store", "runtime", "passes", "metrics", "inputs", "package"},
    "commands": {"core", "store", "runtime", "passes", "metrics", "inputs", "package", "build"},
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

"""Store keys of the shipped recipes do not change by accident.

A key changes when what determines a result changes; a refactoring must not move any of them,
or every user's store goes cold. This test computes every key of the 8 shipped recipes
symbolically (an input folder's content stands for itself, library versions and the host are
fixed) and compares them with tests/data/recipe_keys.json. A deliberate change (a pass version
bump, a new setting in a key) rewrites the file with

    python tests/test_keys_stable.py --write

and the commit says which keys changed and why.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SNAPSHOT = HERE / "data" / "recipe_keys.json"
FIXED_HOST = {"cpu": "X", "cpu_flags": "F", "cores": 2, "machine": "x86_64", "onnxruntime": "v"}


def symbolic_keys(monkeypatch) -> dict:
    from modelmake.build import compile as build_compile
    from modelmake.build.steps import EvalStep, PackageStep, PassStep, SourceStep
    from modelmake.core import digest, hostinfo
    from modelmake.metrics import measure

    monkeypatch.setattr(digest, "library_version", lambda dist: f"v-{dist}")
    monkeypatch.setattr(build_compile, "host_fingerprint", lambda: FIXED_HOST)

    def content(folder: str) -> str:
        return "content:" + os.path.normpath(folder)

    monkeypatch.setattr(measure, "folder_content", content)
    # size is read from the model file, not stored: it has no key
    monkeypatch.setattr(measure, "_FAMILIES", tuple(f for f in measure._FAMILIES if f.__name__ != "_size"))
    monkeypatch.setattr(hostinfo, "int8_path", lambda: "P")  # part of integer models' measurement keys
    out: dict = {"measure": {}}

    def keep(key: str, label: str, compute) -> dict:
        out["measure"][label] = key
        return {}

    steps = build_compile.compile_steps(build_compile.find_project(REPO))
    for s in steps:
        if isinstance(s, SourceStep):
            out[s.task] = {i.what: i.key(REPO, s.version) for i in s.items}
        elif isinstance(s, PassStep):
            out[s.task] = s.key(content)
        elif isinstance(s, EvalStep):
            out[s.task] = s.key(content)
            measure.measure(s.evaluation(), lambda: (["a review"], [0]), keep)
        elif isinstance(s, PackageStep):
            out[s.task] = s.key(content, {"accuracy": 0.5})
    return out


def test_shipped_recipes_keep_their_keys(monkeypatch):
    monkeypatch.delenv("MODELMAKE_STORE", raising=False)
    now = symbolic_keys(monkeypatch)
    before = json.loads(SNAPSHOT.read_text())
    changed = sorted(k for k in set(now) | set(before) if k != "measure" and now.get(k) != before.get(k))
    changed += sorted(f"measurement {k}" for k in set(now["measure"]) | set(before["measure"])
                      if now["measure"].get(k) != before["measure"].get(k))
    assert not changed, ("store keys changed (if deliberate: python tests/test_keys_stable.py --write, "
                         f"and say why in the commit): {', '.join(changed)}")


if __name__ == "__main__":  # python tests/test_keys_stable.py --write
    import pytest

    if sys.argv[1:] != ["--write"]:
        sys.exit("usage: python tests/test_keys_stable.py --write")
    mp = pytest.MonkeyPatch()
    try:
        os.environ.pop("MODELMAKE_STORE", None)
        keys = symbolic_keys(mp)
    finally:
        mp.undo()
    SNAPSHOT.write_text(json.dumps(keys, indent=1, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT.relative_to(REPO)} ({len(keys) - 1} tasks, {len(keys['measure'])} measurements)")

"""`modelmake status` and `modelmake why`: what a build would do, and why, told without building.

One cold build of the tiny project per module, copied into each test. Where a test can, it
checks the prediction against what the next build actually does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from buildkit import TESTS, doit, make_project, recipe_text, wipe_outputs
from modelmake.core import digest
from modelmake.commands import status

# the tiny recipe without fine-tuning (the slowest step, which nothing here needs)
RECIPE = re.sub(r'\[\[pass\]\]\nname = "finetune".*?\n\n', "", recipe_text(), flags=re.S)
STEPS = ["source:tiny", "pass:tiny/export", "pass:tiny/fuse", "pass:tiny/quantize",
         "eval:tiny", "package:tiny", "optimize:tiny"]
DOWNSTREAM = {"pass:tiny/quantize", "eval:tiny", "package:tiny", "optimize:tiny"}
HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "numpy")


def modelmake(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(TESTS / "plugins")}
    env.pop("MODELMAKE_STORE", None)
    return subprocess.run([sys.executable, "-m", "modelmake.commands.cli", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=120)


def states(project: Path, *args: str) -> dict[str, str]:
    run = modelmake(project, "status", "--json", *args)
    assert run.returncode == 0, run.stderr
    return {t["task"]: t["state"] for t in json.loads(run.stdout)["tasks"]}


def why(project: Path, task: str) -> str:
    run = modelmake(project, "why", task)
    assert run.returncode == 0, run.stderr
    return run.stdout


def set_quantize(project: Path, old: str, new: str) -> None:
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace(f"per_channel = {old}", f"per_channel = {new}"))


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("explain") / "proj", {"tiny": RECIPE})
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    return project


@pytest.fixture
def project(cold, tmp_path):
    dest = tmp_path / "proj"
    shutil.copytree(cold, dest, symlinks=True)
    return dest


def test_after_a_build_everything_is_up_to_date(project):
    assert states(project) == {t: "up to date" for t in STEPS}
    run = modelmake(project, "status")
    lines = run.stdout.splitlines()
    assert lines[0].startswith("tiny")
    assert lines[-1] == f"{len(STEPS)} tasks: {len(STEPS)} up to date"
    assert "up to date" in why(project, "pass:tiny/quantize")


def test_status_is_fast_and_imports_no_ml_library(project):
    code = ("import sys, time; from modelmake.commands import cli; t = time.perf_counter(); rc = cli.main(['status']); "
            "print('SECONDS', time.perf_counter() - t); print('HEAVY', sorted(m for m in %r if m in sys.modules)); "
            "sys.exit(rc)") % (HEAVY,)
    env = {**os.environ}
    env.pop("MODELMAKE_STORE", None)
    run = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    out = dict(line.split(" ", 1) for line in run.stdout.splitlines() if line.startswith(("SECONDS", "HEAVY")))
    assert out["HEAVY"] == "[]"
    # the budget is 1 s on the real recipes; twice that leaves room for a busy CI machine,
    # while importing any ML library (or building anything) would blow it
    assert float(out["SECONDS"]) < 2.0, out


def test_config_edit_names_the_key_then_revert_is_restorable(project):
    set_quantize(project, "true", "false")
    now = states(project)
    assert {t for t, s in now.items() if s != "up to date"} == DOWNSTREAM, now
    assert all(now[t] == "stale" for t in DOWNSTREAM), now
    text = why(project, "pass:tiny/quantize")
    assert "pass:tiny/quantize: stale" in text
    assert "config.per_channel: true -> false" in text
    assert "changes when pass:tiny/quantize is rebuilt" in why(project, "eval:tiny")

    assert doit(project, "optimize:tiny").rc == 0
    assert states(project) == {t: "up to date" for t in STEPS}

    set_quantize(project, "false", "true")
    now = states(project)
    assert {t: s for t, s in now.items() if s != "up to date"} == {t: "restorable" for t in DOWNSTREAM}, now
    text = why(project, "pass:tiny/quantize")
    assert "pass:tiny/quantize: restorable" in text
    assert "config.per_channel: false -> true" in text
    assert "store holds its result" in text
    # the prediction holds: the build restores them and computes nothing
    run = doit(project, "optimize:tiny")
    assert run.rc == 0 and run.built == [], run
    assert "pass:tiny/quantize" in run.restored


def test_without_artifacts_everything_is_restorable(project):
    wipe_outputs(project, keep_store=True)
    assert states(project) == {t: "restorable" for t in STEPS}
    assert "store holds its result" in why(project, "pass:tiny/export")
    run = doit(project, "optimize:tiny")
    assert run.rc == 0 and run.built == [], run


def test_a_fresh_project_was_never_built_and_unknown_names_get_one_line(tmp_path):
    project = make_project(tmp_path / "fresh", {"tiny": RECIPE})
    assert states(project) == {t: "never built" for t in STEPS}
    text = why(project, "tiny")  # a recipe: every one of its tasks
    assert [line for line in text.splitlines() if not line.startswith(" ")] == [f"{t}: never built" for t in STEPS]
    assert "input model exists once pass:tiny/fuse is built" in text

    run = modelmake(project, "why", "pass:tiny/quantise")
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert "no task or recipe named 'pass:tiny/quantise'" in run.stderr
    assert "did you mean pass:tiny/quantize" in run.stderr


def test_a_damaged_target_is_named(project):
    model = project / "artifacts/tiny/steps/fuse/model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other content: only the digest can tell
    model.write_bytes(bytes(data))
    now = states(project)
    # the store still has the result, and downstream read the intact one
    assert {t: s for t, s in now.items() if s != "up to date"} == {"pass:tiny/fuse": "restorable"}, now
    text = why(project, "pass:tiny/fuse")
    assert "artifacts/tiny/steps/fuse was damaged or edited on disk" in text
    assert "model.onnx was changed on disk" in text
    run = doit(project, "optimize:tiny")
    assert run.rc == 0 and run.built == [] and run.restored == ["pass:tiny/fuse"], run


def test_library_code_version_and_host_changes_are_named(project, monkeypatch, capsys):
    monkeypatch.delenv("MODELMAKE_STORE", raising=False)
    monkeypatch.chdir(project)
    from modelmake import passes
    from modelmake.build import compile as build_compile

    real_version = digest.library_version("onnxruntime")
    quantize = passes.get("dynamic-int8")
    monkeypatch.setitem(passes.REGISTRY, "dynamic-int8", dataclasses.replace(quantize, version=quantize.version + 1))
    host = build_compile.host_fingerprint()
    monkeypatch.setattr(digest, "library_version",
                        lambda dist, real=digest.library_version: "0.0.1.test" if dist == "onnxruntime" else real(dist))
    monkeypatch.setattr(build_compile, "host_fingerprint", lambda: {**host, "cpu": "Another CPU"})

    assert status.main("why", ["tiny", "--json"]) == 0
    tasks = {t["task"]: t for t in json.loads(capsys.readouterr().out)["tasks"]}
    change = f"libraries.onnxruntime: {real_version} -> 0.0.1.test"
    # fusion is shaped by onnxruntime, so it and everything after it is stale; the export is not
    assert tasks["pass:tiny/export"]["state"] == "up to date"
    assert tasks["pass:tiny/fuse"]["state"] == "stale"
    assert change in tasks["pass:tiny/fuse"]["reasons"]
    assert tasks["pass:tiny/quantize"]["reasons"][:3] == [
        f"version: {quantize.version} -> {quantize.version + 1} (the step's code version)", change,
        "input model changes when pass:tiny/fuse is rebuilt"]
    assert f"host.cpu: {host['cpu']} -> Another CPU" in tasks["eval:tiny"]["reasons"]

    assert status.main("why", ["pass:tiny/fuse"]) == 0
    assert f"  - {change}" in capsys.readouterr().out.splitlines()

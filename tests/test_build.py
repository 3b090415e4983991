"""The build graph as a user sees it: what runs, what is restored, what is never redone.

Every test drives the real `doit` CLI on a throwaway project with a tiny random BERT.
One cold build is made per module and copied (with its store and doit DB) into each test.
"""
from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from buildkit import (QUANTIZE, build_project, copy_project, doit, file_bytes, make_project, passes_built,
                      recipe_text, wipe_outputs)

STEPS = ["pass:tiny/finetune", "pass:tiny/export", "pass:tiny/fuse", "pass:tiny/quantize"]


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    return build_project(tmp_path_factory.mktemp("cold") / "proj", target="optimize:tiny")


@pytest.fixture
def project(cold, tmp_path):
    return copy_project(cold[0], tmp_path)


def test_cold_build_makes_every_artifact(cold):
    project, run = cold
    assert passes_built(run) == set(STEPS)
    for rel in ("model.onnx", "metrics.json", "package.zip"):
        assert (project / "artifacts/tiny" / rel).is_file(), rel
    metrics = json.loads(file_bytes(project, "artifacts/tiny/metrics.json"))
    for key in ("accuracy", "f1", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "size_mb",
                "baseline.accuracy", "delta.accuracy", "speedup_x.latency_p50"):
        assert isinstance(metrics[key], (int, float)), key
    assert (project / "artifacts/tiny/model.onnx").read_bytes() == \
        (project / "artifacts/tiny/steps/quantize/model.onnx").read_bytes()
    names = zipfile.ZipFile(project / "artifacts/tiny/package.zip").namelist()
    for member in ("model.onnx", "tokenizer.json", "inference_config.json", "metrics.json",
                   "manifest.json", "predict.py"):
        assert member in names


def test_noop_rebuild_executes_no_action(project):
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert run.executed == set(), run


def test_edit_pass_config_reruns_that_pass_and_downstream_only(project):
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert passes_built(run) == {"pass:tiny/quantize"}, run
    assert {"pass:tiny/finetune", "pass:tiny/export", "pass:tiny/fuse"}.isdisjoint(run.executed)
    assert {"eval:tiny", "package:tiny"} <= run.executed

    # reverting the edit runs no pass: everything comes back from the store
    recipe.write_text(recipe.read_text().replace("per_channel = false", "per_channel = true"))
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert run.built == [], run
    assert "pass:tiny/quantize" in run.restored


def test_ci_case_store_kept_then_store_lost(project):
    before = {rel: file_bytes(project, f"artifacts/tiny/{rel}") for rel in ("model.onnx", "package.zip")}
    wipe_outputs(project, keep_store=True)
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert run.built == [], run
    assert set(STEPS) <= set(run.restored)

    wipe_outputs(project, keep_store=False)
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert passes_built(run) == set(STEPS)
    # a clean rebuild is byte-identical: model and package are reproducible
    for rel, data in before.items():
        assert file_bytes(project, f"artifacts/tiny/{rel}") == data, rel


def test_comment_key_order_and_other_recipes_change_nothing(project):
    recipe = project / "recipes/tiny.toml"
    text = recipe.read_text()
    edited = "# a comment\n" + text.replace('name = "fuse"\ntype = "ort-fusion"',
                                            'type = "ort-fusion"   # same step\nname = "fuse"')
    assert edited != text
    recipe.write_text(edited)
    (project / "recipes/other.toml").write_text(recipe_text(QUANTIZE.replace("true", "false")))
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert run.executed == set(), run


def test_early_cutoff_identical_rebuild_stops_downstream(project):
    # forget export and lose the store: export really runs again, produces the same bytes,
    # and nothing downstream of it runs
    shutil.rmtree(project / "artifacts/.store")
    assert doit(project, "forget", "pass:tiny/export").rc == 0
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert passes_built(run) == {"pass:tiny/export"}, run
    assert run.executed == {"pass:tiny/export"}, run


def test_failing_pass_leaves_nothing_and_is_retried(project):
    failing = QUANTIZE + '\n[[pass]]\nname = "boom"\ntype = "test-fail-if-marker"\n'
    (project / "recipes/tiny.toml").write_text(recipe_text(failing))
    marker = project / "FAIL"
    marker.write_text("x")
    env = {"MODELMAKE_PLUGINS": "failing_pass"}
    for _ in range(2):  # the failure is not cached: the second run tries again
        run = doit(project, "optimize:tiny", env=env)
        assert run.rc != 0, run
        assert "pass:tiny/boom failed: RuntimeError: marker file FAIL exists" in run.out, run
        assert "Traceback" not in run.out + run.err
        assert not (project / "artifacts/tiny/steps/boom").exists()
        assert "pass:tiny/boom" in run.executed
    marker.unlink()
    run = doit(project, "optimize:tiny", env=env)
    assert run.rc == 0, run
    assert passes_built(run) == {"pass:tiny/boom"}


def test_shared_prefix_is_computed_once(tmp_path):
    fp32 = recipe_text("")
    project = make_project(tmp_path / "proj", {"tiny": recipe_text(), "tiny-fp32": fp32})
    run = doit(project, "-n", "2", "optimize")
    assert run.rc == 0, run
    assert run.built.count("pass:tiny/finetune") + run.built.count("pass:tiny-fp32/finetune") == 1, run
    assert run.built.count("pass:tiny/export") + run.built.count("pass:tiny-fp32/export") == 1, run
    assert file_bytes(project, "artifacts/tiny/steps/fuse/model.onnx") == \
        file_bytes(project, "artifacts/tiny-fp32/steps/fuse/model.onnx")


def test_corrupted_store_object_is_discarded_and_rebuilt(project):
    store = project / "artifacts/.store/objects"
    victims = [p for p in store.glob("*/*/model.onnx")
               if p.read_bytes() == file_bytes(project, "artifacts/tiny/steps/quantize/model.onnx")]
    assert len(victims) == 1
    data = bytearray(victims[0].read_bytes())
    data[len(data) // 2] ^= 0xFF
    victims[0].chmod(0o644)
    victims[0].write_bytes(bytes(data))
    good = file_bytes(project, "artifacts/tiny/model.onnx")
    wipe_outputs(project, keep_store=True)
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert "is damaged" in run.out
    assert passes_built(run) == {"pass:tiny/quantize"}, run
    assert file_bytes(project, "artifacts/tiny/model.onnx") == good


def test_json_reporter_tells_what_ran(project):
    import subprocess
    import sys
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    proc = subprocess.run([sys.executable, "-m", "doit", "--reporter", "json", "optimize:tiny"], cwd=project,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    result = {t["name"]: t["result"] for t in report["tasks"]}
    assert result["pass:tiny/quantize"] == "success"
    assert result["pass:tiny/finetune"] == "up-to-date"


def test_list_info_clean(project):
    run = doit(project, "list")
    assert "optimize:tiny" in run.out and "tiny BERT -> ONNX" in run.out
    assert "pass:tiny/quantize" not in run.out
    run = doit(project, "list", "--all")
    assert "pass:tiny/quantize" in run.out
    assert doit(project, "info", "pass:tiny/quantize").rc == 0
    assert doit(project, "clean", "pass:tiny/quantize").rc == 0
    assert not (project / "artifacts/tiny/steps/quantize").exists()
    run = doit(project, "optimize:tiny")
    assert run.rc == 0 and run.built == [] and "pass:tiny/quantize" in run.restored, run

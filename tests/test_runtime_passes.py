"""ort-optimize and session-tune on the tiny random BERT, and how tuned settings reach eval and package.

Tolerances (max |logit difference| on the same inputs):
  ort-optimize vs its input   1e-4  (ORT fusions reorder fp32 sums)
  session-tune vs its input   0     (the graph is untouched; only metadata is added)
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from buildkit import parse_text, recipe_error  # noqa: E402
from test_passes import (exported, fused, one_thread, op_counts, ort_logits, ours, run_pass,  # noqa: E402,F401
                         tiny, work)

from modelmake.metrics import evaluate
from modelmake import package  # noqa: E402
from modelmake.passes import REGISTRY, ort_optimize, session_tune  # noqa: E402
from modelmake.runtime import onnxmeta, sessions

# Small enough to time in well under a second, but a real grid (two candidates).
TINY_TUNE = {"intra_op_threads": [1, 2], "warmup": 1, "runs": 5, "sequence": 16}


@pytest.fixture(scope="module")
def tuned(work, fused, tiny) -> Path:
    # parallel with 2 inter-op threads is never ORT's default, so tests can see it was applied
    return run_pass("session-tune", fused, work / "tuned", tokenizer_dir=tiny, execution_modes=["parallel"], inter_op_threads=[2], **TINY_TUNE)


def stripped_graph(path: Path) -> bytes:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    return model.SerializeToString(deterministic=True)


# --- declarations ------------------------------------------------------------------------------

def test_declarations():
    assert REGISTRY["ort-optimize"] is ort_optimize.PASS and REGISTRY["session-tune"] is session_tune.PASS
    assert session_tune.PASS.host_dependent and session_tune.PASS.needs_tokenizer
    assert not ort_optimize.PASS.host_dependent
    # the defaults make a valid grid
    assert len(session_tune.candidates(session_tune.PASS.config_class.make())) == 2


# --- ort-optimize ------------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["exported", "fused"])
def test_ort_optimize_keeps_outputs_and_metadata(source, request, tiny, work):
    import onnx

    src = request.getfixturevalue(source)
    a = run_pass("ort-optimize", src, work / f"opt-{source}-a")
    b = run_pass("ort-optimize", src, work / f"opt-{source}-b")
    model = a / onnxmeta.MODEL_FILE
    onnxmeta.check(model)
    assert [p.name for p in a.iterdir()] == [onnxmeta.MODEL_FILE]
    assert np.abs(ort_logits(a, tiny) - ort_logits(src, tiny)).max() < 1e-4
    assert ours(model) == ours(src / onnxmeta.MODEL_FILE)
    assert model.read_bytes() == (b / onnxmeta.MODEL_FILE).read_bytes()  # deterministic
    before, after = sum(op_counts(src / "model.onnx").values()), sum(op_counts(model).values())
    assert after <= before
    if source == "exported":
        # the unfused export gets ORT's own contrib fusions at the extended level
        assert after < before / 2 and "com.microsoft" in {o.domain for o in onnx.load(str(model)).opset_import}


def test_ort_optimize_level_and_disabled_optimizers(exported, tiny, work):
    basic = run_pass("ort-optimize", exported, work / "opt-basic", level="basic")
    full = run_pass("ort-optimize", exported, work / "opt-ext")
    no_fold = run_pass("ort-optimize", exported, work / "opt-nofold", disabled_optimizers=["ConstantFolding"])
    sizes = {d.name: sum(op_counts(d / "model.onnx").values()) for d in (basic, full, no_fold)}
    assert sizes["opt-ext"] < sizes["opt-basic"]
    assert sizes["opt-nofold"] > sizes["opt-ext"]  # the name reached ORT
    for d in (basic, no_fold):
        assert np.abs(ort_logits(d, tiny) - ort_logits(exported, tiny)).max() < 1e-4


# --- session-tune ------------------------------------------------------------------------------

def test_session_tune_records_settings_and_keeps_graph(tuned, fused, tiny):
    model = tuned / onnxmeta.MODEL_FILE
    onnxmeta.check(model)
    assert [p.name for p in tuned.iterdir()] == [onnxmeta.MODEL_FILE]
    assert stripped_graph(model) == stripped_graph(fused / onnxmeta.MODEL_FILE)
    assert np.array_equal(ort_logits(tuned, tiny), ort_logits(fused, tiny))
    props = ours(model)
    record = json.loads(props.pop(onnxmeta.SESSION_OPTIONS))
    assert props == ours(fused / onnxmeta.MODEL_FILE)

    table = record["measured"]["candidates"]
    assert [c["intra_op_num_threads"] for c in table] == [1, 2]
    assert all(c["execution_mode"] == "ORT_PARALLEL" and c["inter_op_num_threads"] == 2 for c in table)
    assert all(0 < c["p50"] <= c["p90"] and c["mean"] > 0 for c in table)
    best = min(table, key=lambda c: c["p50"])
    assert {k: record[k] for k in sessions.SETTINGS} == {k: best[k] for k in sessions.SETTINGS}
    assert record["measured"]["metric"] == "p50" and record["measured"]["rounds"] == 3
    assert record["measured"]["host"]["cores"] >= 1
    assert sessions.settings_of(onnxmeta.read(model)) == {k: record[k] for k in sessions.SETTINGS}


def test_tuned_settings_reach_latency_and_package(tuned, fused, tiny, work):
    model = tuned / onnxmeta.MODEL_FILE
    settings = sessions.tuned_settings(model)
    assert sessions.tuned_settings(fused / onnxmeta.MODEL_FILE) is None

    default = package.inference_config(fused / onnxmeta.MODEL_FILE, max_length=64)
    assert default["session"] == {"providers": ["CPUExecutionProvider"],
                                  "graph_optimization_level": "ORT_ENABLE_ALL", "intra_op_num_threads": 0}
    config = package.inference_config(model, max_length=64)
    assert config["session"] == {"providers": ["CPUExecutionProvider"], **settings}

    lat = evaluate.measure_latencies({"model": (model, tiny)}, ["good fun"], sequence=16, warmup=1, runs=5,
                                   throughput_batch=2, throughput_runs=1)["model"]
    assert lat["threads"] == settings["intra_op_num_threads"]
    forced = evaluate.measure_latencies({"model": (model, tiny)}, ["good fun"], sequence=16, warmup=1, runs=5, threads=1,
                                      throughput_batch=2, throughput_runs=1)["model"]
    assert forced["threads"] == 1

    out = work / "pkg" / "package.zip"
    out.parent.mkdir()
    package.build_package(out, model, tiny, {}, config, {"recipe": "tiny"})
    unpacked = work / "pkg" / "unpacked"
    with zipfile.ZipFile(out) as zf:
        assert json.loads(zf.read("inference_config.json"))["session"] == config["session"]
        zf.extractall(unpacked)
    # what predict.py's own session was built with
    probe = ("import sys, json; sys.path.insert(0, sys.argv[1]); import predict; "
             "o = predict.load()[1].get_session_options(); "
             "print(json.dumps([o.intra_op_num_threads, o.inter_op_num_threads, "
             "o.execution_mode.name, o.graph_optimization_level.name]))")
    got = subprocess.run([sys.executable, "-c", probe, str(unpacked)], capture_output=True, text=True,
                         check=True, cwd=work)
    assert json.loads(got.stdout) == [settings["intra_op_num_threads"], 2, "ORT_PARALLEL",
                                      settings["graph_optimization_level"]]
    ran = subprocess.run([sys.executable, str(unpacked / "predict.py"), "good fun"], capture_output=True,
                         text=True, check=True, cwd=work)
    label, prob, _ = ran.stdout.strip().split("\t")
    assert label in {"rotten", "fresh"} and 0.5 <= float(prob) <= 1


# --- recipe validation -------------------------------------------------------------------------

@pytest.mark.parametrize("step, key, message", [
    ('type = "ort-optimize"\nlevel = "all"', "level", "expected one of 'basic', 'extended', got 'all'"),
    ('type = "ort-optimize"\ndisabled_optimizers = "ConstantFolding"', "disabled_optimizers",
     "expected a list of strings"),
    ('type = "session-tune"\nmetric = "p99"', "metric", "expected one of 'p50', 'p90', 'mean', got 'p99'"),
    # thread counts are integers, checked item by item when the recipe loads (nothing is timed)
    ('type = "session-tune"\nintra_op_threads = [1, "2"]', "intra_op_threads[1]",
     "expected an integer >= 0, got a string '2'"),
    ('type = "session-tune"\ninter_op_threads = [-1]', "inter_op_threads[0]", "expected an integer >= 0, got -1"),
    ('type = "session-tune"\nintra_op_threads = "2"', "intra_op_threads", "expected a list of integers, got a string '2'"),
    ('type = "session-tune"\nintra_op_threads = []', "intra_op_threads", "needs at least one item"),
    ('type = "session-tune"\nexecution_modes = []', "execution_modes", "needs at least one item"),
    ('type = "session-tune"\nruns = 2', "runs", "must be >= 5"),
    ('type = "session-tune"\nbatch = 0', "batch", "must be >= 1"),
    ('type = "session-tune"\nthreads = ["1"]', "threads", "unknown key"),
    # choices of a list are checked item by item at parse time, naming the item
    ('type = "session-tune"\nexecution_modes = ["sequential", "fast"]', "execution_modes[1]",
     "expected one of 'sequential', 'parallel', got 'fast'"),
    ('type = "session-tune"\ngraph_levels = ["layout"]', "graph_levels[0]",
     "expected one of 'basic', 'extended', 'all', got 'layout'"),
])
def test_recipe_validation(step, key, message, tmp_path):
    head = '[model]\npath = "model"\n\n[[pass]]\nname = "export"\ntype = "onnx-export"\n\n[[pass]]\nname = "s"\n'
    parsed = parse_text(tmp_path, head + 'type = "ort-optimize"\n[[pass]]\nname = "t"\ntype = "session-tune"\n')
    assert [s.type for s in parsed.steps] == ["onnx-export", "ort-optimize", "session-tune"]  # the defaults are valid
    text = recipe_error(tmp_path, head + step + "\n")
    assert text.startswith(f"recipes/tiny.toml: pass[1].{key}: ") and message in text, text


@pytest.mark.parametrize("limit", [0, 1 << 30])
def test_finish_writes_the_same_checked_bytes_from_memory_or_through_the_file(exported, work, monkeypatch, limit):
    """finish() checks a model before it renames it into place, the checker reading the bytes in
    memory or (past the in-memory limit) the file; both give the same bytes, and a model ORT cannot
    load fails both ways, leaving nothing behind."""
    import onnx

    monkeypatch.setattr(onnxmeta, "_IN_MEMORY_LIMIT", limit)
    src = exported / onnxmeta.MODEL_FILE
    dest = work / f"finish-{limit}" / onnxmeta.MODEL_FILE
    dest.parent.mkdir()
    onnxmeta.finish(dest, {"note": "x"}, source=src, proto=onnx.load(str(src)))
    again = work / f"finish-again-{limit}" / onnxmeta.MODEL_FILE
    again.parent.mkdir()
    onnxmeta.finish(again, {"note": "x"}, source=src, proto=onnx.load(str(src)))
    assert dest.read_bytes() == again.read_bytes()
    assert onnxmeta.read(dest)["note"] == "x"

    broken = onnx.load(str(src))
    broken.graph.node[0].op_type = "NoSuchOp"
    # the checker passes an op of a domain it does not know; ORT has no kernel for it
    no_kernel = onnx.load(str(src))
    no_kernel.graph.node[0].domain = "ai.example"
    no_kernel.opset_import.add(domain="ai.example", version=1)
    for name, model in (("broken", broken), ("no-kernel", no_kernel)):
        with pytest.raises(Exception):
            onnxmeta.finish(work / f"finish-{limit}" / f"{name}.onnx", proto=model)
    # checked before it is renamed into place: nothing else written, no temp left
    assert sorted(p.name for p in dest.parent.iterdir()) == [onnxmeta.MODEL_FILE]


def test_finish_appends_metadata_to_an_export_or_a_written_file_as_serializing_would(exported, work, monkeypatch):
    """An exporter's serialized model, or a file a pass wrote (ORT's quantizer), gets its metadata
    appended, neither parsed nor serialized again: the file is byte for byte what finish() writes
    from the ModelProto, with or without metadata already in the model (then it is parsed and the
    props are merged as always). A file linked from elsewhere is rewritten, never appended to."""
    import onnx

    bare = onnx.load(str(exported / onnxmeta.MODEL_FILE))
    del bare.metadata_props[:]
    tagged = onnx.load(str(exported / onnxmeta.MODEL_FILE))
    # a field numbered after the metadata (functions, 25): appending would put the metadata after it
    with_function = onnx.ModelProto.FromString(bare.SerializeToString())
    with_function.functions.add().CopyFrom(onnx.helper.make_function(
        "local.example", "Twice", ["x"], ["y"], [onnx.helper.make_node("Add", ["x", "x"], ["y"])],
        [onnx.helper.make_opsetid("", 17)]))
    with_function.opset_import.add(domain="local.example", version=1)
    props = {onnxmeta.MAX_LENGTH: 64, "z.note": "last", "a.note": "first"}
    for name, model in (("bare", bare), ("tagged", tagged), ("with-function", with_function)):
        paths = []
        for how in ("bytes", "proto", "file", "linked file"):
            path = work / f"serialized-{name}-{how}" / onnxmeta.MODEL_FILE
            path.parent.mkdir()
            given = None
            if how == "bytes":
                given = model.SerializeToString()
            elif how == "proto":
                given = onnx.ModelProto.FromString(model.SerializeToString())
            elif how == "file":
                path.write_bytes(model.SerializeToString())
            else:
                twin = path.with_name("twin.onnx")
                twin.write_bytes(model.SerializeToString())
                os.link(twin, path)
            if name == "bare" and how in ("bytes", "file"):
                monkeypatch.setattr(onnx, "load_model_from_string", lambda *a, **k: pytest.fail("parsed"))
                monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("parsed"))
            onnxmeta.finish(path, props, proto=given)
            monkeypatch.undo()
            paths.append(path)
            assert onnxmeta.node_count(path) == len(model.graph.node) > 0
            if how == "linked file":
                assert twin.read_bytes() == model.SerializeToString() and path.stat().st_nlink == 1
        assert all(p.read_bytes() == paths[0].read_bytes() for p in paths), name
        got = onnxmeta.read(paths[0])
        assert got["a.note"] == "first" and got[onnxmeta.MAX_LENGTH] == "64"
        assert set(got) >= {p.key for p in model.metadata_props}


def test_metadata_is_read_without_parsing_the_graph_and_as_onnx_reads_it(exported, work, monkeypatch):
    """read() walks the file's top-level fields and parses only the metadata: it gives what
    onnx.load gives (duplicate keys: the last wins; non-ASCII; an empty value; entries before and
    after the graph), never parses the weights, and a file that is not a model still fails with
    onnx's own error."""
    import onnx

    model = onnx.load(str(exported / onnxmeta.MODEL_FILE))
    del model.metadata_props[:]
    model.metadata_props.add(key="first", value="before")
    model.metadata_props.add(key="ünï", value="çødé ✓")
    model.metadata_props.add(key="empty", value="")
    data = model.SerializeToString()
    # appended messages merge: these entries land after the graph, one of them repeating a key
    data += onnx.ModelProto(metadata_props=[onnx.StringStringEntryProto(key="first", value="after"),
                                            onnx.StringStringEntryProto(key="late", value="x" * 300)]).SerializeToString()
    path = work / "metadata-read.onnx"
    path.write_bytes(data)
    expected = {p.key: p.value for p in onnx.load_model_from_string(data).metadata_props}
    assert expected["first"] == "after"

    counts = collections.Counter(n.op_type for n in model.graph.node)
    monkeypatch.setattr(onnx, "load", lambda *a, **k: pytest.fail("read() parsed the model"))
    assert onnxmeta.read(path) == expected
    assert onnxmeta.op_counts(path) == dict(sorted(counts.items())) and counts["MatMul"] > 0
    monkeypatch.undo()

    truncated = work / "metadata-truncated.onnx"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(Exception) as raised:
        onnx.load(str(truncated), load_external_data=False)
    with pytest.raises(type(raised.value)):
        onnxmeta.read(truncated)

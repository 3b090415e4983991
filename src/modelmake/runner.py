"""doit actions: compute a step's key, get its result from the store or build it, materialize it.

Each action takes one plain-data spec (made by graph.py) so doit can run it in a worker process.
A failing step prints one line naming the step and the reason (the traceback goes to a log
file), returns TaskFailed so doit exits non-zero, and leaves no target: nothing is cached.
"""
from __future__ import annotations

import json
import random
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from doit.exceptions import TaskFailed

from modelmake import digest, passes, targets
from modelmake.progress import say
from modelmake.store import Store, atomic_file


def _content(folder: str | Path) -> str:
    """A folder's content digest: the digest of its manifest's bytes."""
    return digest.bytes_digest((Path(folder) / digest.MANIFEST).read_bytes())


def keys_record(spec: dict) -> Path:
    """Where a task records the store keys it used (read by `modelmake store gc`)."""
    return Path(spec["base"]) / "keys" / (_file_stem(spec["task"]) + ".json")


def _file_stem(task: str) -> str:
    return task.replace(":", "-").replace("/", "-")


def _guarded(action: Callable[[dict], None], spec: dict) -> bool | TaskFailed:
    store = Store(spec["store"])
    try:
        action(spec, store)
        _record_keys(spec, store.used)
    except Exception as e:  # noqa: BLE001 - every step failure becomes one line + a log
        log = Path(spec["logs"]) / (_file_stem(spec["task"]) + ".log")
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            where = f" (traceback: {log})"
        except OSError:
            where = ""
        first = (str(e).strip().splitlines() or [""])[0]
        message = f"{spec['task']} failed: {e.__class__.__name__}: {first}{where}"
        say(f"error: {message}")
        return TaskFailed(message)
    return True


def _record_keys(spec: dict, keys: list[str]) -> None:
    """Which store objects this task's targets came from: `modelmake store gc` keeps these."""
    if keys:
        atomic_file(keys_record(spec), lambda tmp: tmp.write_bytes(digest.canonical(sorted(set(keys)))))


def _place(obj: Path, dest: Path, label: str) -> None:
    """Put a store object at its target path, saying so when it replaces a damaged target."""
    if dest.exists() and (why := targets.problem(dest)) not in (None, targets.NO_RECORD):
        say(f"  {label}: {dest} was damaged ({why}); restoring it from the store")
    (targets.place_folder if obj.is_dir() else targets.place_file)(obj, dest)


def _report(task: str, key: str, built: bool, seconds: float) -> None:
    how = f"built in {seconds:.1f}s" if built else "restored from store"
    say(f"  {task}: {how} (key {key[:12]})")


# ---------------------------------------------------------------- source
def _run_source(spec: dict, store: Store) -> None:
    from modelmake.sources import fetch, local_files

    root = Path(spec["root"])
    fetched = []
    for item in spec["items"]:  # fetch everything first: a failed item leaves no target at all
        src = item["source"]
        label = f"{spec['task']} {item['what']}"
        if src["kind"] == "path":
            # a local path is its own pin: its content is the key
            path = root / src["path"]
            files = local_files(path) if path.exists() else []
            content = {str(f.relative_to(path) if path.is_dir() else f.name): digest.file_digest(f) for f in files}
            key = digest.key_of({"kind": "source", "source": src, "content": content, "version": spec["version"]})
        else:
            key = digest.key_of({"kind": "source", "source": src, "version": spec["version"]})
        t0 = time.monotonic()
        obj, built = store.get_or_build(key, lambda out, s=src: fetch(s, out, root), label)
        _report(label, key, built, time.monotonic() - t0)
        fetched.append((obj, Path(item["out"]), label))
    for obj, out, label in fetched:
        _place(obj, out, label)


# ---------------------------------------------------------------- passes
def _load_datasets(datasets: dict) -> dict:
    from modelmake.data import load_dataset
    return {name: load_dataset(_single_file(Path(d["dir"])), d["spec"]) for name, d in datasets.items()}


def _single_file(folder: Path) -> Path:
    files = [folder / f for f in digest.list_files(folder)]
    if len(files) != 1:
        raise ValueError(f"{folder}: a dataset source must be one file, found {len(files)}")
    return files[0]


def _run_pass(spec: dict, store: Store) -> None:
    from modelmake.passes.base import StepContext

    static = spec["static"]
    key = digest.key_of({
        "kind": "pass", **static, "input": _content(spec["input"]),
        "data_content": {n: _content(d["dir"]) for n, d in spec["datasets"].items()},
        "tokenizer": _content(spec["tokenizer"]) if spec["tokenizer"] else None,
    })
    p = passes.get(static["type"])

    def build(out: Path) -> None:
        ctx = StepContext(config=static["config"], model_dir=Path(spec["input"]), out_dir=out,
                          datasets=_load_datasets(spec["datasets"]), step=spec["task"],
                          tokenizer_dir=Path(spec["tokenizer"]) if spec["tokenizer"] else None)
        p.run_function()(ctx)

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, spec["task"])
    _place(obj, Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)


# ---------------------------------------------------------------- evaluation
PORTABLE = ("accuracy", "f1", "size_mb", "samples")  # metrics that do not depend on the host


def _test_split(spec: dict) -> tuple[list[str], list[int]]:
    from modelmake.data import load_dataset

    ds = load_dataset(_single_file(Path(spec["data_dir"])), spec["static"]["data"])
    rows = list(ds.test)
    n = spec["static"]["evaluate"]["max_samples"]
    if n and n < len(rows):
        rows = random.Random(0).sample(rows, n)
    return [t for t, _ in rows], [y for _, y in rows]


def _measure(spec: dict, models: dict[str, str], texts, labels, store: Store) -> dict[str, dict]:
    """Metrics of the model and its baseline ({role: folder}).

    Quality is stored per model (it is a property of the model and data alone). Timings of the
    model and its baseline are measured together, in this run, and stored as one object keyed by
    both and by the host: a speed-up is a ratio of two timings, and timings taken at different
    moments on a shared machine do not make a trustworthy ratio.
    """
    from modelmake import evaluate

    static, ev = spec["static"], spec["static"]["evaluate"]
    tok = Path(spec["tokenizer"])
    common = {"tokenizer": _content(tok), "data": _content(spec["data_dir"]), "data_spec": static["data"],
              "max_samples": ev["max_samples"], "version": static["version"], "libraries": static["libraries"]}
    out: dict[str, dict] = {role: {} for role in models}
    if {"accuracy", "f1"} & set(ev["metrics"]):
        for role, folder in models.items():
            key = digest.key_of({"kind": "quality", **common, "model": _content(folder),
                                 "max_length": ev["max_length"], "batch_size": ev["batch_size"]})
            out[role].update(_stored_json(store, key, f"{spec['task']} {Path(folder).name} quality",
                                          lambda f=folder: evaluate.measure_quality(
                                              Path(f) / "model.onnx", tok, texts, labels,
                                              batch_size=ev["batch_size"], max_length=ev["max_length"])))
    if {"latency", "throughput"} & set(ev["metrics"]):
        lat = ev["latency"]
        key = digest.key_of({"kind": "latency", **common, "latency": lat, "host": static["host"],
                             "models": {role: _content(folder) for role, folder in models.items()}})

        def timings() -> dict:
            return {role: evaluate.measure_latency(
                Path(folder) / "model.onnx", tok, texts, batch=lat["batch"], sequence=lat["sequence"],
                warmup=lat["warmup"], runs=lat["runs"], threads=lat["threads"],
                throughput_batch=lat["throughput_batch"], throughput_runs=lat["throughput_runs"])
                for role, folder in models.items()}
        for role, res in _stored_json(store, key, f"{spec['task']} latency", timings).items():
            out[role].update(res)
    if "size" in ev["metrics"]:
        for role, folder in models.items():
            out[role]["size_mb"] = evaluate.size_mb(Path(folder) / "model.onnx")
    return out


def _stored_json(store: Store, key: str, label: str, compute: Callable[[], dict]) -> dict:
    """A measurement as a store object of its own, so other recipes and later runs reuse it."""
    def build(folder: Path) -> None:
        (folder / "result.json").write_bytes(digest.canonical(compute()))

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, label)
    _report(label, key, built, time.monotonic() - t0)
    return json.loads((obj / "result.json").read_bytes())


def combine(final: dict, baseline: dict | None) -> dict:
    """Flat metrics: the model's, the baseline's under `baseline.`, differences under `delta.`."""
    metrics = dict(final)
    if baseline:
        for k, v in baseline.items():
            metrics[f"baseline.{k}"] = v
            if k in final and k not in ("samples", "runs", "threads"):
                metrics[f"delta.{k}"] = final[k] - v
        if final.get("latency_ms.p50") and baseline.get("latency_ms.p50"):
            metrics["speedup_x.latency_p50"] = baseline["latency_ms.p50"] / final["latency_ms.p50"]
        if final.get("size_mb") and baseline.get("size_mb"):
            metrics["compression_x.size"] = baseline["size_mb"] / final["size_mb"]
    return dict(sorted(metrics.items()))


def _run_eval(spec: dict, store: Store) -> None:
    static = spec["static"]
    key = digest.key_of({"kind": "eval", **static, "model": _content(spec["model"]),
                         "baseline": _content(spec["baseline"]) if spec["baseline"] else None,
                         "tokenizer": _content(spec["tokenizer"]), "data": _content(spec["data_dir"])})

    def build(folder: Path) -> None:
        texts, labels = _test_split(spec)
        models = {"model": spec["model"], **({"baseline": spec["baseline"]} if spec["baseline"] else {})}
        measured = _measure(spec, models, texts, labels, store)
        metrics = combine(measured["model"], measured.get("baseline"))
        (folder / "metrics.json").write_bytes(json.dumps(metrics, indent=1, sort_keys=True).encode() + b"\n")

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, spec["task"])
    _place(obj / "metrics.json", Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)
    print_metrics(spec["task"].split(":", 1)[1], json.loads((obj / "metrics.json").read_bytes()))


def print_metrics(recipe: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"metrics: {recipe}")
    table.add_column("metric")
    table.add_column("model", justify="right")
    has_base = any(k.startswith("baseline.") for k in metrics)
    if has_base:
        table.add_column("baseline", justify="right")
        table.add_column("delta", justify="right")
    for k, v in metrics.items():
        if k.startswith(("baseline.", "delta.")):
            continue
        row = [k, _fmt(v)]
        if has_base:
            row += [_fmt(metrics.get(f"baseline.{k}")), _fmt(metrics.get(f"delta.{k}"), signed=True)]
        table.add_row(*row)
    Console(soft_wrap=True).print(table)


def _fmt(v: Any, signed: bool = False) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    return f"{v:+d}" if signed else str(v)


# ---------------------------------------------------------------- package and final model
def _run_package(spec: dict, store: Store) -> None:
    from modelmake import package

    static = spec["static"]
    metrics = {}
    if spec["metrics"]:
        # timings belong to the host that measured them, not to the artifact: keeping them out
        # makes the package byte-identical wherever it is built
        metrics = {k: v for k, v in json.loads(Path(spec["metrics"]).read_bytes()).items()
                   if k.removeprefix("baseline.").removeprefix("delta.") in PORTABLE}
    key = digest.key_of({"kind": "package", **static, "model": _content(spec["model"]),
                         "tokenizer": _content(spec["tokenizer"]), "metrics": metrics})

    def build(folder: Path) -> None:
        model = Path(spec["model"]) / "model.onnx"
        config = package.inference_config(model, static["package"]["max_length"])
        package.build_package(folder / "package.zip", model, Path(spec["tokenizer"]), metrics, config,
                              {"recipe": static["recipe"], "libraries": static["libraries"]})

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, spec["task"])
    _place(obj / "package.zip", Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)


def _publish_model(spec: dict, store: Store) -> None:
    for target in spec["targets"]:
        _place(Path(spec["model"]) / "model.onnx", Path(target), spec["task"])
        say(f"  {spec['task']}: final model at {target}")


def clean(paths: list[str]) -> None:
    for p in paths:
        targets.remove(Path(p))


# module-level functions (not closures) so doit can pickle tasks for parallel runs
def run_source(spec: dict):
    return _guarded(_run_source, spec)


def run_pass(spec: dict):
    return _guarded(_run_pass, spec)


def run_eval(spec: dict):
    return _guarded(_run_eval, spec)


def run_package(spec: dict):
    return _guarded(_run_package, spec)


def publish_model(spec: dict):
    return _guarded(_publish_model, spec)

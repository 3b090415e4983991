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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from doit.exceptions import TaskFailed

from modelmake.core import digest
from modelmake.build import keys, records, targets
from modelmake import passes
from modelmake.build.keys import folder_content as _content
from modelmake.core.progress import say
from modelmake.store import Store


def _guarded(action: Callable[[dict, Store], dict | None], spec: dict) -> dict | TaskFailed:
    store = Store(spec["store"], remote=spec.get("remote"))  # [remote]
    t0 = time.monotonic()
    try:
        result = action(spec, store) or {}
        _record(spec, store, result, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - every step failure becomes one line + a log
        log = Path(spec["logs"]) / (records.file_stem(spec["task"]) + ".log")
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(traceback.format_exc())
            where = f" (traceback: {log})"
        except OSError:
            where = ""
        first = (str(e).strip().splitlines() or [""])[0]
        if getattr(e, "plain", False):  # written for the user (a goals verdict, a custom metric's error)
            where = where if e.__cause__ is not None else ""  # a traceback helps only when their code raised
        else:
            first = f"{e.__class__.__name__}: {first}"
        message = f"{spec['task']} failed: {first}{where}"
        say(f"error: {message}")
        return TaskFailed(message)
    # doit keeps a returned dict as the task's values: the build reporter shows this outcome
    return {"outcome": "built" if result.get("built") else "restored" if store.used else "done"}


def _record(spec: dict, store: Store, result: dict, seconds: float) -> None:
    """What this run produced and from what (see records.py); `modelmake store gc` keeps its keys,
    `modelmake why` compares its settings and inputs, reports show its times."""
    key = result.get("key")
    meta = store.meta(key) if key else None
    records.write(spec, {
        "key": key, "keys": sorted(set(store.used)), "built": result.get("built", False),
        "seconds": round(seconds, 3), "build_seconds": (meta or {}).get("build_seconds"),
        "settings": keys.static_of(spec),
        "inputs": {role: _content(folder) for role, folder in keys.inputs(spec).items()},
    })


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
    from modelmake.inputs.sources import fetch

    root = Path(spec["root"])
    fetched, built_items = [], []
    for item in spec["items"]:  # fetch everything first: a failed item leaves no target at all
        src = item["source"]
        label = f"{spec['task']} {item['what']}"
        key = keys.source_item_key(item, root, spec["version"])
        t0 = time.monotonic()
        obj, built = store.get_or_build(key, lambda out, s=src: fetch(s, out, root), label)
        _report(label, key, built, time.monotonic() - t0)
        fetched.append((obj, Path(item["out"]), label))
        built_items.append(built)
    for obj, out, label in fetched:
        _place(obj, out, label)
    return {"built": any(b for b in built_items)}


# ---------------------------------------------------------------- passes
def _load_datasets(datasets: dict) -> dict:
    from modelmake.inputs.data import load_dataset
    return {name: load_dataset(_single_file(Path(d["dir"])), d["spec"]) for name, d in datasets.items()}


def _single_file(folder: Path) -> Path:
    files = [folder / f for f in digest.list_files(folder)]
    if len(files) != 1:
        raise ValueError(f"{folder}: a dataset source must be one file, found {len(files)}")
    return files[0]


def _run_pass(spec: dict, store: Store) -> None:
    from modelmake.passes.base import StepContext

    static = spec["static"]
    key = keys.pass_key(spec, _content)
    p = passes.get(static["type"])

    def build(out: Path) -> None:
        ctx = StepContext(config=static["config"], model_dir=Path(spec["input"]), out_dir=out,
                          datasets=_load_datasets(spec["datasets"]), step=spec["task"],
                          tokenizer_dir=Path(spec["tokenizer"]) if spec["tokenizer"] else None)
        if "task" in static:  # task_dependent passes only: the task is in their key
            ctx.task = static["task"]
        p.run_function()(ctx)

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, spec["task"])
    _place(obj, Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)
    return {"key": key, "built": built}


# ---------------------------------------------------------------- evaluation

def _test_split(spec: dict) -> tuple[list[str], list[int]]:
    from modelmake.inputs.data import load_dataset

    ds = load_dataset(_single_file(Path(spec["data_dir"])), spec["static"]["data"])
    rows = list(ds.test)
    n = spec["static"]["evaluate"]["max_samples"]
    if n and n < len(rows):
        rows = random.Random(0).sample(rows, n)
    return [t for t, _ in rows], [y for _, y in rows]


def _eval_models(spec: dict) -> dict[str, tuple[str, str]]:
    """role -> (model folder, tokenizer folder) of every model the eval task measures."""
    models = {"model": (spec["model"], spec["tokenizer"])}
    if spec["baseline"]:
        models["baseline"] = (spec["baseline"], spec.get("baseline_tokenizer") or spec["tokenizer"])
    return models


@dataclass
class _Measuring:
    """What every metric family needs: the models, the test split, the store, the key parts."""

    spec: dict
    models: dict[str, tuple[str, str]]
    texts: list[str]
    labels: list[int]
    store: Store

    @property
    def ev(self) -> dict:
        return self.spec["static"]["evaluate"]

    def key(self, kind: str, role: str | None = None, **parts) -> str:
        """A measurement's key: the data, versions and, for one model, its content. Goals and the
        other settings of [evaluate] stay out, so changing them re-measures nothing."""
        static, ev = self.spec["static"], self.ev
        common = {"kind": kind, "data": _content(self.spec["data_dir"]), "data_spec": static["data"],
                  "max_samples": ev["max_samples"], "version": static["version"], "libraries": static["libraries"]}
        if role is not None:
            folder, tok = self.models[role]
            common.update(model=_content(folder), tokenizer=_content(tok))
        return digest.key_of({**common, **parts})

    def stored(self, key: str, what: str, compute: Callable[[], dict]) -> dict:
        return _stored_json(self.store, key, f"{self.spec['task']} {what}", compute)

    def path(self, role: str) -> tuple[Path, Path]:
        folder, tok = self.models[role]
        return Path(folder) / "model.onnx", Path(tok)


def _quality(m: _Measuring) -> dict[str, dict]:
    """Accuracy and F1, stored per model: a property of the model and data alone."""
    if not {"accuracy", "f1"} & set(m.ev["metrics"]):
        return {}
    from modelmake.metrics import evaluate

    out = {}
    for role in m.models:
        model, tok = m.path(role)
        key = m.key("quality", role, max_length=m.ev["max_length"], batch_size=m.ev["batch_size"])
        out[role] = m.stored(key, f"{role} quality", lambda model=model, tok=tok: evaluate.measure_quality(
            model, tok, m.texts, m.labels, batch_size=m.ev["batch_size"], max_length=m.ev["max_length"]))
    return out


def _similarity(m: _Measuring) -> dict[str, dict]:
    """Cosine of the model's outputs with the baseline's on the test texts: one result of the
    model, stored under a key holding both models' content."""
    if "similarity" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import evaluate

    task = m.spec["static"].get("task", "text-classification")
    key = m.key("similarity", task=task, max_length=m.ev["max_length"], batch_size=m.ev["batch_size"],
                models={role: [_content(f), _content(t)] for role, (f, t) in m.models.items()})
    return {"model": m.stored(key, "similarity", lambda: evaluate.measure_similarity(
        m.path("model"), m.path("baseline"), m.texts, task, batch_size=m.ev["batch_size"],
        max_length=m.ev["max_length"]))}


def _timings(m: _Measuring) -> dict[str, dict]:
    """Latency and throughput of every model, timed in turns in one run and stored as one
    object keyed by all of them and by the host: a speed-up is a ratio of two timings, and
    timings taken at different moments on a shared machine do not make a trustworthy one."""
    if not {"latency", "throughput"} & set(m.ev["metrics"]):
        return {}
    from modelmake.metrics import evaluate

    lat = m.ev["latency"]
    key = m.key("latency", latency=lat, host=m.spec["static"]["host"],
                models={role: [_content(f), _content(t)] for role, (f, t) in m.models.items()})

    def timings() -> dict:
        return evaluate.measure_latencies(
            {role: m.path(role) for role in m.models}, m.texts, batch=lat["batch"], sequence=lat["sequence"],
            warmup=lat["warmup"], runs=lat["runs"], threads=lat["threads"], throughput_batch=lat["throughput_batch"],
            throughput_runs=lat["throughput_runs"], max_runs=lat["max_runs"], stable_percent=lat["stable_percent"])
    return m.stored(key, "latency", timings)


def _memory(m: _Measuring) -> dict[str, dict]:
    """Peak memory of each model's session at the latency batch, per model and host."""
    if "memory" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import evaluate

    lat = m.ev["latency"]
    setup = {"batch": lat["batch"], "sequence": lat["sequence"], "threads": lat["threads"],
             "runs": evaluate.MEMORY_RUNS}
    out = {}
    for role in m.models:
        model, tok = m.path(role)
        key = m.key("memory", role, memory=setup, host=m.spec["static"]["host"])
        out[role] = m.stored(key, f"{role} memory", lambda model=model, tok=tok: evaluate.measure_memory(
            model, tok, m.texts, batch=lat["batch"], sequence=lat["sequence"], threads=lat["threads"]))
    return out


def _size(m: _Measuring) -> dict[str, dict]:
    if "size" not in m.ev["metrics"]:
        return {}
    from modelmake.metrics import evaluate

    return {role: {"size_mb": evaluate.size_mb(m.path(role)[0])} for role in m.models}


def _custom(m: _Measuring) -> dict[str, dict]:
    """The recipe's own metrics, per model; keyed by their module's content (and the host, when
    they say they depend on it)."""
    from modelmake.metrics import evaluate

    out: dict[str, dict] = {role: {} for role in m.models}
    for i, c in enumerate(m.ev["custom"]):
        file = m.spec["custom_files"][c["name"]]
        where = f"{m.spec['recipe_file']}: evaluate.custom[{i}].function"
        extra = {"host": m.spec["static"]["host"]} if c["host_dependent"] else {}
        for role in m.models:
            model, tok = m.path(role)
            key = m.key("custom", role, metric=c, code=m.spec["static"]["custom_code"][c["name"]],
                        max_length=m.ev["max_length"], batch_size=m.ev["batch_size"], **extra)
            out[role].update(m.stored(key, f"{role} {c['name']}", lambda model=model, tok=tok: evaluate.measure_custom(
                c["name"], c["function"], Path(file), where, model, tok, m.texts, m.labels,
                batch_size=m.ev["batch_size"], max_length=m.ev["max_length"])))
    return out


# Each family measures what [evaluate] metrics asks of it and returns {role: {metric: value}}.
# Another family is one more function here and a row in evaluate.FAMILIES.
_FAMILIES: tuple[Callable[[_Measuring], dict[str, dict]], ...] = (_quality, _similarity, _timings, _memory, _size,
                                                                       _custom)


def _measure(spec: dict, models: dict[str, tuple[str, str]], texts, labels, store: Store) -> dict[str, dict]:
    """Metrics of the model and its baseline ({role: (model folder, tokenizer folder)}); every
    measurement is a store object of its own, reused by other recipes and later runs."""
    m = _Measuring(spec, models, texts, labels, store)
    out: dict[str, dict] = {role: {} for role in models}
    for family in _FAMILIES:
        for role, values in family(m).items():
            out[role].update(values)
    return out


def _stored_json(store: Store, key: str, label: str, compute: Callable[[], dict]) -> dict:
    """A measurement as a store object of its own, so other recipes and later runs reuse it."""
    def build(folder: Path) -> None:
        (folder / "result.json").write_bytes(digest.canonical(compute()))

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, label)
    _report(label, key, built, time.monotonic() - t0)
    return json.loads((obj / "result.json").read_bytes())


# per-model facts and interval bounds: a difference of them means nothing
_NO_DELTA = ("samples", "runs", "threads", "latency_ms.p50_ci_low", "latency_ms.p50_ci_high")


def combine(final: dict, baseline: dict | None) -> dict:
    """Flat metrics: the model's, the baseline's under `baseline.`, differences under `delta.`."""
    metrics = dict(final)
    if baseline:
        for k, v in baseline.items():
            metrics[f"baseline.{k}"] = v
            if k in final and k not in _NO_DELTA:
                metrics[f"delta.{k}"] = final[k] - v
        if final.get("latency_ms.p50") and baseline.get("latency_ms.p50"):
            metrics["speedup_x.latency_p50"] = baseline["latency_ms.p50"] / final["latency_ms.p50"]
        if final.get("size_mb") and baseline.get("size_mb"):
            metrics["compression_x.size"] = baseline["size_mb"] / final["size_mb"]
    return dict(sorted(metrics.items()))


def _run_eval(spec: dict, store: Store) -> None:
    from modelmake.metrics import goals

    key = keys.eval_key(spec, _content)
    ev = spec["static"]["evaluate"]
    recipe = spec["task"].split(":", 1)[1]

    def build(folder: Path) -> None:
        texts, labels = _test_split(spec)
        models = _eval_models(spec)
        measured = _measure(spec, models, texts, labels, store)
        metrics = combine(measured["model"], measured.get("baseline"))
        if ev["goal"]:
            metrics["goals"] = goals.check(ev["goal"], metrics, ev["custom"])
            if not metrics["goals"]["passed"] and ev["on_goal_failure"] == "fail":
                print_metrics(recipe, metrics)
                raise goals.GoalsFailed(goals.failure_line(metrics["goals"]))
        (folder / "metrics.json").write_bytes(json.dumps(metrics, indent=1, sort_keys=True).encode() + b"\n")

    t0 = time.monotonic()
    try:
        obj, built = store.get_or_build(key, build, spec["task"])
    except Exception:
        # metrics.json of an earlier build would pass for this recipe's: no metrics, no target
        targets.remove(Path(spec["out"]))
        raise
    _place(obj / "metrics.json", Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)
    metrics = json.loads((obj / "metrics.json").read_bytes())
    print_metrics(recipe, metrics)
    if not metrics.get("goals", {"passed": True})["passed"]:
        say(f"warning: {spec['task']}: {goals.failure_line(metrics['goals'])}")
    return {"key": key, "built": built}


def print_metrics(recipe: str, metrics: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from modelmake.metrics import goals

    table = Table(title=f"metrics: {recipe}")
    table.add_column("metric")
    table.add_column("model", justify="right")
    has_base = any(k.startswith("baseline.") for k in metrics)
    if has_base:
        table.add_column("baseline", justify="right")
        table.add_column("delta", justify="right")
    for k, v in metrics.items():
        if k.startswith(("baseline.", "delta.")) or not isinstance(v, (int, float)):
            continue
        row = [k, _fmt(v)]
        if has_base:
            row += [_fmt(metrics.get(f"baseline.{k}")), _fmt(metrics.get(f"delta.{k}"), signed=True)]
        table.add_row(*row)
    Console(soft_wrap=True).print(table)
    verdict = metrics.get("goals")
    if verdict:
        met = sum(r["passed"] for r in verdict["results"])
        say(f"goals of {recipe}: {met} of {len(verdict['results'])} met")
        for r in verdict["results"]:
            say(f"  {'ok    ' if r['passed'] else 'FAILED'} {goals.describe(r)}")


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
    metrics = keys.portable_metrics(json.loads(Path(spec["metrics"]).read_bytes())) if spec["metrics"] else {}
    key = keys.package_key(spec, _content, metrics)

    def build(folder: Path) -> None:
        model = Path(spec["model"]) / "model.onnx"
        config = package.inference_config(model, static["package"]["max_length"],
                                          task=static.get("task", "text-classification"))
        package.build_package(folder / "package.zip", model, Path(spec["tokenizer"]), metrics, config,
                              {"recipe": static["recipe"], "libraries": static["libraries"]})

    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, spec["task"])
    _place(obj / "package.zip", Path(spec["out"]), spec["task"])
    _report(spec["task"], key, built, time.monotonic() - t0)
    return {"key": key, "built": built}


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

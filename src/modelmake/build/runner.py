"""doit actions: compute a step's key, get its result from the store or build it, place it.

`run_step` takes one typed step (build/steps.py, made by compile.py) so doit can run it in a
worker process. A failing step prints one line naming the step and the reason (the traceback
goes to a log file), returns TaskFailed so doit exits non-zero, and leaves no target: nothing is
cached. What a pass or a metric computes lives in passes/ and metrics/; this module only keys,
stores, places and records.

Builds without the bytes: a source or pass result that only the remote holds is placed as a stub
(targets.place_stub: its manifest and a marker, the files left in the remote), since no step may
ever read it. A step that computes reads its input folders through `_local`, which fetches a
stub's files into the store first (a folder read as a tokenizer: its tokenizer files only); one
that is restored reads nothing but manifests. Evaluations, measurements and packages are small
and always downloaded whole; `optimize:<recipe>` fetches the final model it publishes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import traceback
from pathlib import Path
from typing import Callable

from doit.exceptions import TaskFailed

from modelmake import passes
from modelmake.build import hosts, keys, records, targets
from modelmake.build.steps import EvalStep, PackageStep, PassStep, PublishStep, SearchStep, SourceStep, Step
from modelmake.core import digest
from modelmake.core.digest import folder_content
from modelmake.core.progress import say
from modelmake.store import Store
from modelmake.store.local import Stub, Unavailable


class InputUnavailable(Exception):
    """An input folder is a stub whose files could neither be fetched nor made again."""

    plain = True


def run_step(step: Step):
    """The action of every step task (module-level, so doit can pickle it for parallel runs)."""
    return _guarded(_RUN[type(step)], step)


def _guarded(action: Callable[[Step, Store], dict | None], step: Step) -> dict | TaskFailed:
    tolerant = getattr(step, "tolerant", False)
    if tolerant and (failure := _failed_input(step)) is not None:
        say(f"  {step.task}: not run: its trial failed at {failure['task']}")
        return _trial_failed(step, failure)
    store = Store(step.store, remote=step.remote)
    t0 = time.monotonic()
    try:
        result = action(step, store) or {}
        _record(step, store, result, time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - every step failure becomes one line + a log
        log = Path(step.logs) / (records.file_stem(step.task) + ".log")
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
        message = f"{step.task} failed: {first}{where}"
        if tolerant:   # a search trial: recorded as failed (nothing cached), the search goes on
            say(f"warning: {message}; the trial is recorded as failed and the search goes on")
            return _trial_failed(step, {"task": step.task, "error": f"{first}{where}"})
        say(f"error: {message}")
        return TaskFailed(message)
    # doit keeps a returned dict as the task's values: the build reporter shows this outcome
    return {"outcome": "built" if result.get("built") else "restored" if store.used else "done"}


def _trial_failed(step: Step, failure: dict) -> dict:
    for out in step.outputs():
        targets.place_failure(Path(out), failure)
    return {"outcome": "trial failed"}


def _failed_input(step: Step) -> dict | None:
    """The failure of a search trial's step this step reads, if any."""
    for folder in step.inputs().values():
        failure = targets.failure_of(Path(folder))
        if failure is not None:
            return failure
    return None


def _record(step: Step, store: Store, result: dict, seconds: float) -> None:
    """What this run produced and from what (see records.py); `modelmake store gc` keeps its keys,
    `modelmake why` compares its settings and inputs, reports show its times."""
    key = result.get("key")
    meta = store.meta(key) if key else None
    where = {k: result[k] for k in ("worker", "worker_host") if k in result}   # computed on a cluster
    records.write(step, {
        **where, "key": key, "keys": sorted(set(store.used)), "built": result.get("built", False),
        "seconds": round(seconds, 3), "build_seconds": (meta or {}).get("build_seconds"),
        "settings": step.settings(),
        "inputs": {role: folder_content(folder) for role, folder in step.inputs().items()},
    })


def _place(obj: Path | Stub, dest: Path, label: str, store: Store | None = None) -> None:
    """Put a store object (or the stub of one, with `store`) at its target path, saying so when
    it replaces a damaged target."""
    if dest.exists() and (why := targets.problem(dest)) not in (None, targets.NO_RECORD):
        say(f"  {label}: {dest} was damaged ({why}); restoring it from the store")
    if isinstance(obj, Stub):
        manifest = digest.manifest_bytes(obj.manifest())
        if targets.holds(dest, manifest):
            return  # the files are here already: a stub would only lose them
        shown = store.remote.shown if store is not None and store.remote is not None else None
        targets.place_stub(dest, manifest,
                           {"key": obj.key, "remote": shown, "files": obj.files, "size": obj.size})
        return
    (targets.place_folder if obj.is_dir() else targets.place_file)(obj, dest)


def _local(store: Store, folder: str, task: str, names: tuple[str, ...] | None = None) -> Path:
    """The folder holding the files of the input `folder`: itself, or for a stub the store's copy
    of its result, downloaded first (`names`: only these files are read). When the remote cannot
    send them (down since, its copy damaged or cleaned), the step that makes the folder is run
    again here, without making a stub of it: a remote that fails never fails a build."""
    path = Path(folder)
    marker = targets.stub_of(path)
    if marker is None:
        return path
    key, expect = marker["key"], (path / digest.MANIFEST).read_bytes()
    try:
        return store.materialize(key, f"{task} reads {folder}", expect=expect, names=names)
    except Unavailable as e:
        say(f"  {task}: cannot fetch the files of {folder} ({e}); making it here")
        store.forget_stub(key, e.damaged)
    maker = maker_of(folder)
    if maker is None or isinstance(_guarded(_RUN[type(maker)], maker), TaskFailed):
        raise InputUnavailable(f"its input {folder} (key {key[:12]}) could not be fetched nor made again")
    if targets.stub_of(path) is not None or (path / digest.MANIFEST).read_bytes() != expect:
        # this step's key was computed from the other content; the next build starts from the new one
        raise InputUnavailable(f"its input {folder} came out different when made again here (its step is not "
                               "deterministic); run the build again")
    return path


def maker_of(folder: str) -> Step | None:
    """The step of this project that writes `folder` (compiled again: only when a stub's files are lost)."""
    from modelmake.build.compile import load_steps

    want = os.path.normpath(folder)
    for step in load_steps(Path("."))[1]:
        if isinstance(step, (SourceStep, PassStep)) and any(os.path.normpath(o) == want for o in step.outputs()):
            return step
    return None


def _report(task: str, key: str, built: bool, seconds: float) -> None:
    how = f"built in {seconds:.1f}s" if built else "restored from store"
    say(f"  {task}: {how} (key {key[:12]})")


def _get_or_build(store: Store, key: str, build: Callable[[Path], None], label: str,
                  lazy: bool = False) -> tuple[Path | Stub, bool]:
    t0 = time.monotonic()
    obj, built = store.get_or_build(key, build, label, lazy=lazy)
    _report(label, key, built, time.monotonic() - t0)
    return obj, built


# ---------------------------------------------------------------- source
def _run_source(step: SourceStep, store: Store) -> dict:
    from modelmake.inputs.sources import fetch

    root = Path(".")
    fetched, built_items = [], []
    for item in step.items:  # fetch everything first: a failed item leaves no target at all
        label = f"{step.task} {item.what}"
        obj, built = _get_or_build(store, item.key(root, step.version),
                                   lambda out, s=item.source: fetch(s, out, root), label, lazy=True)
        fetched.append((obj, Path(item.out), label))
        built_items.append(built)
    for obj, out, label in fetched:
        _place(obj, out, label, store)
    return {"built": any(built_items)}


# ---------------------------------------------------------------- passes
def _run_pass(step: PassStep, store: Store) -> dict:
    key = step.key(folder_content)
    where: dict = {}
    build = _on_cluster(step, store, key, where, _pass_build(step, store))
    obj, built = _get_or_build(store, key, build, step.task, lazy=True)
    _place(obj, Path(step.out), step.task, store)
    return {"key": key, "built": built, **where}


def _on_cluster(step: PassStep | EvalStep, store: Store, key: str, where: dict,
                build: Callable[[Path], None]) -> Callable[[Path], None]:
    """`build`, or with an executor the build that computes the step on the Dask cluster when
    neither store holds it (`where` receives the worker)."""
    if step.executor is None:
        return build
    from modelmake.build import cluster_build

    return cluster_build.cluster_build(step, store, key, where, local=build)


def run_here(step: PassStep | EvalStep, store: Store) -> dict:
    """A pass or evaluation computed in this process when neither store holds it (a Dask worker's way in)."""
    step = dataclasses.replace(step, executor=None)
    return _run_pass(step, store) if isinstance(step, PassStep) else _run_eval(step, store)


def _pass_build(step: PassStep, store: Store) -> Callable[[Path], None]:
    from modelmake.inputs.data import load_dataset_folder
    from modelmake.passes.base import StepContext

    p = passes.get(step.type)

    def build(out: Path) -> None:
        from modelmake.core.textenc import TOKENIZER_FILES

        local = lambda folder, names=None: _local(store, folder, step.task, names)  # noqa: E731
        ctx = StepContext(config=p.config_class.from_dict(step.config), model_dir=local(step.input), out_dir=out,
                          datasets={n: load_dataset_folder(local(d.dir), d.spec) for n, d in step.datasets.items()},
                          step=step.task,
                          tokenizer_dir=local(step.tokenizer, TOKENIZER_FILES) if step.tokenizer else None)
        if step.model_task is not None:  # task_dependent passes only: the task is in their key
            ctx.task = step.model_task
        p.run_function()(ctx)
    return build


# ---------------------------------------------------------------- evaluation
def _run_eval(step: EvalStep, store: Store) -> dict:
    from modelmake.metrics import goals, measure

    if step.executor is not None:   # measured on the cluster's evaluation workers, keyed by their host
        step = _on_bench_host(step)
    key = step.key(folder_content)
    where: dict = {}

    def keep(key: str, label: str, compute: Callable[[], dict]) -> dict:
        """A measurement as a store object of its own, so other recipes and later runs reuse it."""
        obj, _ = _get_or_build(store, key, lambda folder: (folder / "result.json").write_bytes(
            digest.canonical(compute())), label)
        return json.loads((obj / "result.json").read_bytes())

    def local(folder: str, names: tuple[str, ...] | None = None) -> Path:
        return _local(store, folder, step.task, names)

    def build(folder: Path) -> None:
        from modelmake.inputs.data import evaluation_rows

        def rows() -> tuple[list, list[int] | None]:
            return evaluation_rows(local(step.data_dir), step.data, step.evaluate["max_samples"])

        metrics = measure.evaluate(step.evaluation(), rows, keep, local)
        (folder / "metrics.json").write_bytes(json.dumps(metrics, indent=1, sort_keys=True).encode() + b"\n")

    build = _on_cluster(step, store, key, where, build)
    try:
        obj, built = _get_or_build(store, key, build, step.task)
    except Exception:
        # metrics.json of an earlier build would pass for this recipe's: no metrics, no target
        targets.remove(Path(step.out))
        raise
    if built:  # so that `modelmake why` elsewhere can say this host measured these inputs
        hosts.note_host(store, step, {role: folder_content(f) for role, f in step.inputs().items()})
    _place(obj / "metrics.json", Path(step.out), step.task)
    metrics = json.loads((obj / "metrics.json").read_bytes())
    measure.print_metrics(step.task.partition(":")[2], metrics)
    if not metrics.get("goals", {"passed": True})["passed"]:
        say(f"warning: {step.task}: {goals.failure_line(metrics['goals'])}")
    return {"key": key, "built": built, **where}


def _on_bench_host(step: EvalStep) -> EvalStep:
    """The evaluation keyed by the host of the workers that measure it; with executor_fallback =
    "local" and the scheduler down, measured here and keyed by this host."""
    from modelmake.build import cluster_build
    from modelmake.build.project import find_project
    from modelmake.core.hostinfo import host_fingerprint
    from modelmake.execute import cluster

    cache = find_project(Path(".")).artifacts / cluster_build.BENCH_CACHE   # where compile reads it
    try:
        return dataclasses.replace(step, host=cluster_build.bench_host(step, cache))
    except cluster.SchedulerUnreachable as e:
        if step.executor.fallback != "local":
            raise
        say(f"warning: {step.task}: {e}; measuring here (executor_fallback = \"local\")")
        return dataclasses.replace(step, host=host_fingerprint(), executor=None)


# ---------------------------------------------------------------- package and final model
def _run_package(step: PackageStep, store: Store) -> dict:
    metrics = keys.portable_metrics(json.loads(Path(step.metrics).read_bytes())) if step.metrics else {}
    key = step.key(folder_content, metrics)

    def build(folder: Path) -> None:
        if step.model_task == "text-generation":
            from modelmake.package import decoder

            decoder.build_package(folder / "package.zip", _local(store, step.model, step.task), metrics,
                                          {"recipe": step.recipe, "libraries": step.libraries})
            return
        from modelmake import package  # zipfile, ONNX metadata: only when a package is made

        model = _local(store, step.model, step.task) / "model.onnx"
        tokenizer = _local(store, step.tokenizer, step.task, package.TOKENIZER_FILES)
        config = package.inference_config(model, step.package["max_length"], task=step.model_task,
                                          text_pair=step.text_pair)
        package.build_package(folder / "package.zip", model, tokenizer, metrics, config,
                              {"recipe": step.recipe, "libraries": step.libraries})

    obj, built = _get_or_build(store, key, build, step.task)
    _place(obj / "package.zip", Path(step.out), step.task)
    return {"key": key, "built": built}


def _publish_model(step: PublishStep, store: Store) -> None:
    for target in step.targets:
        _place(_local(store, step.model, step.task) / "model.onnx", Path(target), step.task)
        say(f"  {step.task}: final model at {target}")


def _run_search(step: SearchStep, store: Store) -> dict:
    from modelmake.build import search_run

    return search_run.run_search(step, store, run_step=lambda s: _guarded(_RUN[type(s)], s),
                                 local=lambda folder, names=None: _local(store, folder, step.task, names))


_RUN: dict[type, Callable] = {SourceStep: _run_source, PassStep: _run_pass, EvalStep: _run_eval,
                              PackageStep: _run_package, PublishStep: _publish_model, SearchStep: _run_search}


def clean(paths: list[str]) -> None:
    for p in paths:
        targets.remove(Path(p))

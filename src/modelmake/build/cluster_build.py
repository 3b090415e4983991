"""A pass step computed on a Dask worker, with the shared remote store as the way in and out.

Client (in the runner, inside Store.get_or_build, so only a result neither store holds gets
here): every input folder's result is put on the remote (if only this store holds it), then
`on_worker(step, inputs, versions)` is submitted. The worker checks its versions, places the
inputs as stubs in a scratch folder (their files are fetched from the remote and verified as any
stub's are), runs the step with the same runner (same key, from the same content), publishes the
result to its own store and the remote, and returns the key, the manifest digest and where it ran.
The client then downloads that result into the build's scratch folder (verified against its
manifest) and the store publishes it as if built here: outputs, records and `why` are a local
build's, plus the worker in the record.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from modelmake.build import records, targets
from modelmake.build.steps import DatasetUse, EvalStep, PassStep
from modelmake.core import digest
from modelmake.core import progress
from modelmake.core.progress import say
from modelmake.store import Store
from modelmake.store.local import Elsewhere

WORKER_STORE_ENV = "MODELMAKE_WORKER_STORE"
PROGRESS_TOPIC = "modelmake-progress"


class ClusterInputMissing(Exception):
    plain = True


def modelmake_version() -> str:
    return digest.library_version("modelmake")


# ---------------------------------------------------------------- client
def cluster_build(step: PassStep | EvalStep, store: Store, key: str, where: dict, local: Callable[[Path], None]
                  ) -> Callable[[Path], None]:
    """The build function that computes `step` on the cluster and fills the scratch folder with
    its result; `where` receives the worker's address and host. `local`: the build here, for
    executor_fallback = "local" when the scheduler cannot be reached."""
    from modelmake.execute import cluster

    def build(scratch: Path) -> None:
        if step.executor.fallback == "local":
            try:
                cluster.client(step.executor.address)
            except cluster.SchedulerUnreachable as e:
                say(f"warning: {step.task}: {e}; building here (executor_fallback = \"local\")")
                return local(scratch)
        inputs = {folder: _shared(store, folder, step.task) for folder in step.inputs().values()}
        resources = resources_of(step)
        say(f"  {step.task}: computing on the Dask cluster {step.executor.address}"
            + (f" (resources {resources})" if resources else ""))
        versions = {"modelmake": modelmake_version(), **step.libraries}
        cluster.follow(step.executor.address, PROGRESS_TOPIC, _show_progress)
        result = cluster.run(step.executor.address, on_worker, step, inputs, versions,
                             os.environ.get("MODELMAKE_PLUGINS", ""), resources=resources, label=step.task)
        if result["key"] != key:
            raise cluster.ClusterFailed(f"the worker computed key {result['key'][:12]}, this build {key[:12]}")
        from modelmake.store import remote_transfer

        entry, _ = remote_transfer.download(store.remote, key, scratch, f"{step.task} from the cluster")
        if entry is None or digest.bytes_digest(digest.manifest_bytes(entry.manifest())) != result["manifest"]:
            raise cluster.ClusterFailed(f"the remote {store.remote.shown} does not hold the worker's result {key[:12]}")
        where.update(worker=result["worker"], worker_host=result["host"])
        say(f"  {step.task}: computed on {result['worker']}")
        # the worker's build time, not this round trip; the remote has it already
        return Elsewhere({**(result.get("meta") or {}), "worker": result["worker"]}, on_remote=True)
    return build


def resources_of(step: PassStep | EvalStep) -> dict[str, float] | None:
    """The worker resources a step needs: its pass type's placement, or the evaluations'."""
    return step.executor.resources("eval" if isinstance(step, EvalStep) else step.type)


def bench_host(step: EvalStep, cache: Path) -> dict:
    """The host fingerprint of the workers that evaluate (placement `eval`), which an evaluation's
    key names instead of this host's; remembered in `cache` so that `modelmake status` computes
    the same keys without asking the cluster."""
    import json

    from modelmake.core.files import atomic_file
    from modelmake.core.hostinfo import host_fingerprint
    from modelmake.execute import cluster

    resources = resources_of(step)
    c = cluster.client(step.executor.address)
    workers = [a for a, w in c.scheduler_info()["workers"].items()
               if all(w.get("resources", {}).get(r, 0) >= n for r, n in resources.items())]
    if not workers:
        raise cluster.ClusterFailed(f"no worker of the Dask cluster has the resources {resources} that evaluations ask for")
    found = c.run(host_fingerprint, workers=workers)
    kinds = sorted({json.dumps(fp, sort_keys=True) for fp in found.values()})
    if len(kinds) > 1:
        say(f"warning: {step.task}: the workers with {resources} are {len(kinds)} kinds of host; "
            "evaluations are keyed by (and sent to) the first kind")
    fp = json.loads(kinds[0])
    known = _read_json(cache)
    known[bench_id(step.executor)] = fp
    atomic_file(cache, lambda tmp: tmp.write_text(json.dumps(known, indent=1, sort_keys=True) + "\n"))
    return fp


BENCH_CACHE = ".cluster-hosts.json"   # in artifacts/: the evaluation workers' host, as last found


def bench_id(executor) -> str:
    return f"{executor.address} {sorted(executor.resources('eval').items())}"


def cached_bench_host(executor, cache: Path) -> dict | None:
    """The bench host an earlier build found for this executor (see bench_host), or None."""
    return _read_json(cache).get(bench_id(executor))


def _read_json(path: Path) -> dict:
    import json

    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _show_progress(event) -> None:
    _, msg = event
    if isinstance(msg, dict) and not str(msg.get("line", "")).startswith(f"  {msg.get('task')}:"):
        say(f"    [{msg.get('worker')}] {str(msg.get('line', '')).strip()}")


def _shared(store: Store, folder: str, task: str) -> tuple[str, bytes]:
    """(store key, manifest bytes) of an input folder, its result put on the remote first."""
    manifest = (Path(folder) / digest.MANIFEST).read_bytes()
    marker = targets.stub_of(Path(folder))
    key = marker["key"] if marker is not None else _origin(folder, manifest)
    if key is None or (store.upload(key, task) is not True and store.remote_manifest(key) is None):
        raise ClusterInputMissing(f"its input {folder} is not in the store or the remote; workers cannot read it")
    return key, manifest


def _origin(folder: str, manifest: bytes) -> str | None:
    """The store key of the result placed at `folder`: from the record of the step that wrote it."""
    from modelmake.build.runner import maker_of

    maker = maker_of(folder)
    record = (records.read(maker) or {}) if maker is not None else {}
    return next((k for k in [record.get("key"), *(record.get("keys") or [])]
                 if isinstance(k, str) and Store(maker.store).manifest_bytes(k) == manifest), None)


# ---------------------------------------------------------------- worker
def on_worker(step: PassStep | EvalStep, inputs: dict[str, tuple[str, bytes]], versions: dict[str, str],
              plugins: str) -> dict:
    """Run on a Dask worker: compute `step` from its inputs in the shared remote store
    (`plugins`: the client's MODELMAKE_PLUGINS, which must be importable here too)."""
    from distributed import get_worker

    from modelmake.build import runner
    from modelmake.inputs import plugins as plugin_modules
    from modelmake.core.hostinfo import host_fingerprint
    from modelmake.execute.cluster import WorkerMismatch

    worker = get_worker()
    address = worker.address
    here = {"modelmake": modelmake_version(), **digest.library_versions(tuple(step.libraries))}
    for name, want in versions.items():
        if here.get(name) != want:
            raise WorkerMismatch(address, f"worker {address} has {name} {here.get(name)}, the client {want}")
    if isinstance(step, EvalStep) and step.host != host_fingerprint():
        raise WorkerMismatch(address, f"worker {address} is another kind of host than the one the evaluation's key names")
    plugin_modules.load(plugins)
    root = Path(tempfile.mkdtemp(prefix="modelmake-worker-"))
    store_dir = os.environ.get(WORKER_STORE_ENV) or os.path.join(tempfile.gettempdir(), "modelmake-worker-store")
    try:
        for folder, (key, manifest) in inputs.items():
            targets.place_stub(root / folder, manifest, {"key": key, "remote": step.remote.shown})
        moved = _relocated(step, root, store_dir)
        store = Store(store_dir, remote=step.remote)

        def forward(line: str) -> None:   # the step's progress lines, to the client that waits for it
            try:
                worker.log_event(PROGRESS_TOPIC, {"task": step.task, "worker": address, "line": line})
            except Exception:  # noqa: BLE001 - progress must never fail a step
                pass
        with progress.forwarded(forward):
            result = runner.run_here(moved, store)
        # built here: uploaded by the build already; found in this worker's store: put it there now
        if not result["built"] and store.upload(result["key"], step.task) is not True:
            raise RuntimeError(f"could not put the result on the remote {step.remote.shown}")
        manifest = store.manifest_bytes(result["key"])
        return {"key": result["key"], "manifest": digest.bytes_digest(manifest), "worker": address,
                "host": host_fingerprint(), "meta": store.meta(result["key"])}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _relocated(step: PassStep | EvalStep, root: Path, store_dir: str) -> PassStep | EvalStep:
    """The step with its folders under `root` (where its inputs are placed) and this worker's store."""
    def at(folder: str | None) -> str | None:
        return str(root / folder) if folder else None
    common = {"base": str(root / step.base), "store": store_dir, "executor": None}
    if isinstance(step, EvalStep):
        return dataclasses.replace(step, model=at(step.model), tokenizer=at(step.tokenizer), baseline=at(step.baseline),
                                   baseline_tokenizer=at(step.baseline_tokenizer), data_dir=at(step.data_dir),
                                   out=at(step.out), **common)
    return dataclasses.replace(step, input=at(step.input), out=at(step.out), tokenizer=at(step.tokenizer),
                               datasets={n: DatasetUse(at(d.dir), d.spec) for n, d in step.datasets.items()}, **common)

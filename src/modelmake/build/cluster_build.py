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
from modelmake.build.steps import DatasetUse, PassStep, SourceStep
from modelmake.core import digest
from modelmake.core import progress
from modelmake.core.progress import say
from modelmake.store import Store

WORKER_STORE_ENV = "MODELMAKE_WORKER_STORE"
PROGRESS_TOPIC = "modelmake-progress"


class ClusterInputMissing(Exception):
    plain = True


def modelmake_version() -> str:
    return digest.library_version("modelmake")


# ---------------------------------------------------------------- client
def cluster_build(step: PassStep, store: Store, key: str, where: dict, local: Callable[[Path], None]
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
        resources = step.executor.resources(step.type)
        say(f"  {step.task}: computing on the Dask cluster {step.executor.address}"
            + (f" (resources {resources})" if resources else ""))
        versions = {"modelmake": modelmake_version(), **step.libraries}
        cluster.follow(step.executor.address, PROGRESS_TOPIC, _show_progress)
        result = cluster.run(step.executor.address, on_worker, step, inputs, versions,
                             os.environ.get("MODELMAKE_PLUGINS", ""), resources=resources,
                             label=step.task.replace("/", "-"))
        if result["key"] != key:
            raise cluster.ClusterFailed(f"the worker computed key {result['key'][:12]}, this build {key[:12]}")
        from modelmake.store import remote_transfer

        entry, _ = remote_transfer.download(store.remote, key, scratch, f"{step.task} from the cluster")
        if entry is None or digest.bytes_digest(digest.manifest_bytes(entry.manifest())) != result["manifest"]:
            raise cluster.ClusterFailed(f"the remote {store.remote.shown} does not hold the worker's result {key[:12]}")
        where.update(worker=result["worker"], worker_host=result["host"])
        say(f"  {step.task}: computed on {result['worker']}")
    return build


def _show_progress(event) -> None:
    _, msg = event
    if isinstance(msg, dict) and not str(msg.get("line", "")).startswith(f"  {msg.get('task')}:"):
        say(f"    [{msg.get('worker')}] {str(msg.get('line', '')).strip()}")


def _shared(store: Store, folder: str, task: str) -> tuple[str, bytes]:
    """(store key, manifest bytes) of an input folder, its result put on the remote first."""
    manifest = (Path(folder) / digest.MANIFEST).read_bytes()
    marker = targets.stub_of(Path(folder))
    key = marker["key"] if marker is not None else _origin(folder, manifest)
    if key is None or store.upload(key, task) is not True:
        if key is None or store.remote_manifest(key) is None:
            raise ClusterInputMissing(f"its input {folder} is not in the store or the remote; workers cannot read it")
    return key, manifest


def _origin(folder: str, manifest: bytes) -> str | None:
    """The store key of the result placed at `folder`: from the record of the step that wrote it."""
    from modelmake.build.compile import load_steps

    want = os.path.normpath(folder)
    for s in load_steps(Path("."))[1]:
        if not isinstance(s, (SourceStep, PassStep)) or want not in map(os.path.normpath, s.outputs()):
            continue
        record = records.read(s) or {}
        for k in [record.get("key")] + list(record.get("keys") or []):
            if isinstance(k, str) and Store(s.store).manifest_bytes(k) == manifest:
                return k
    return None


# ---------------------------------------------------------------- worker
def on_worker(step: PassStep, inputs: dict[str, tuple[str, bytes]], versions: dict[str, str],
              plugins: str) -> dict:
    """Run on a Dask worker: compute `step` from its inputs in the shared remote store
    (`plugins`: the client's MODELMAKE_PLUGINS, which must be importable here too)."""
    from distributed import get_worker

    from modelmake.build import runner
    from modelmake.inputs import plugins as plugin_modules
    from modelmake.core.hostinfo import host_fingerprint
    from modelmake.execute.cluster import WorkerMismatch

    address = get_worker().address
    here = {"modelmake": modelmake_version(), **digest.library_versions(tuple(step.libraries))}
    for name, want in versions.items():
        if here.get(name) != want:
            raise WorkerMismatch(address, f"worker {address} has {name} {here.get(name)}, the client {want}")
    plugin_modules.load(plugins)
    root = Path(tempfile.mkdtemp(prefix="modelmake-worker-"))
    store_dir = os.environ.get(WORKER_STORE_ENV) or os.path.join(tempfile.gettempdir(), "modelmake-worker-store")
    try:
        for folder, (key, manifest) in inputs.items():
            targets.place_stub(root / folder, manifest, {"key": key, "remote": step.remote.shown})
        moved = dataclasses.replace(
            step, input=str(root / step.input), out=str(root / step.out), base=str(root / step.base),
            store=store_dir, tokenizer=str(root / step.tokenizer) if step.tokenizer else None,
            datasets={n: DatasetUse(str(root / d.dir), d.spec) for n, d in step.datasets.items()}, executor=None)
        store = Store(store_dir, remote=step.remote)
        worker = get_worker()

        def forward(line: str) -> None:   # the step's progress lines, to the client that waits for it
            try:
                worker.log_event(PROGRESS_TOPIC, {"task": step.task, "worker": address, "line": line})
            except Exception:  # noqa: BLE001 - progress must never fail a step
                pass
        with progress.forwarded(forward):
            result = runner.run_pass_here(moved, store)
        if store.upload(result["key"], step.task) is not True:
            raise RuntimeError(f"could not put the result on the remote {step.remote.shown}")
        manifest = store.manifest_bytes(result["key"])
        return {"key": result["key"], "manifest": digest.bytes_digest(manifest), "worker": address,
                "host": host_fingerprint()}
    finally:
        shutil.rmtree(root, ignore_errors=True)

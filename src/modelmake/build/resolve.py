"""Every task's store key and whether its result is in the store, computed without building.

`modelmake status`/`why` (explain.py), `modelmake compare --rev` and reports ask the same
question: "what key would this task have, and is that result already built?". A key needs the
content digests of the folders the task reads, and those are other tasks' results, so keys are
resolved chain by chain from the sources (whose keys come from their specs alone):

- a source item's key is SourceItem.key(); its folder's content is the content of its store
  object;
- a pass/eval/package input's content is the content of the store object of the task that
  produces that folder; when that object is missing (collected, or another store) but the
  folder in artifacts/ is intact and its build record names the same key, the folder itself;
- a package key also needs the recipe's metrics: the eval result's metrics.json.

When an input cannot be known (nothing upstream was built), the task's key is None and
`unknown` says which task has to be built first. Nothing here imports an ML library.

A result whose files are in the remote only (a stub in the store, see store/local.py) gives its
content from its entry. Given a store with a remote, a result missing here but held by the remote
gives its content from the remote's entry (nothing is downloaded), and an evaluation's
metrics.json (which a package key needs) is downloaded into the store: `modelmake status`,
`remote status`, `pull` and `compare --rev` resolve the keys of a fresh clone (or of a revision
CI built) that way.

    from modelmake.build.compile import load_steps
    from modelmake.build.resolve import resolve
    project, steps = load_steps(root)
    res = resolve(project, steps)          # {task name: Resolution}
    res["eval:bert-int8"].in_store, res["eval:bert-int8"].metrics_file
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from modelmake.build import keys, records
from modelmake.build.compile import compile_steps
from modelmake.build.project import Project
from modelmake.build.steps import EvalStep, PackageStep, PassStep, SourceStep, Step
from modelmake.core import digest
from modelmake.core.digest import folder_content
from modelmake.store import Store

@dataclass
class Resolution:
    task: str                      # e.g. "pass:tiny/fuse"
    kind: str                      # source, pass, eval or package
    key: str | None = None         # the result's store key (None for sources: see items; or unknown)
    in_store: bool = False         # the store holds the result(s): objects, or stubs (not verified here)
    in_remote: bool = False        # not in the store, but the remote holds it (asked only with a remote)
    unknown: str | None = None     # why the key cannot be computed yet (one line), else None
    inputs: dict[str, str | None] = field(default_factory=dict)   # role -> content digest
    items: dict[str, str] = field(default_factory=dict)           # sources: item ("model", "data.x") -> key
    metrics_file: Path | None = None  # eval: metrics.json of this key's result, when it exists

    @property
    def keys(self) -> list[str]:
        """Every store key of this task's result (one, or one per source item)."""
        return list(self.items.values()) if self.kind == "source" else [self.key] if self.key else []


def resolve(project: Project, steps: list[Step] | None = None, store: Store | None = None) -> dict[str, Resolution]:
    """{task name: Resolution} for every source, pass, eval and package step of `steps`
    (default: the project's compiled steps), against `store` (default: the project's store).
    Step paths are relative to project.root."""
    steps = compile_steps(project) if steps is None else steps
    return _Resolver(project, steps, store or Store(project.store)).run()


def reading_store(project: Project) -> Store:
    """The project's store with its remote, for commands that read (status, why, compare,
    report): a result CI or a colleague built counts as built. A remote that fails is said once
    (on stdout, which these commands point at stderr while resolving) and they answer from the
    local store."""
    store = Store(project.store, remote=project.remote)
    if store.remote is not None:
        store.remote.fallback = "answering from the local store only"
    return store


def producers(steps: list[Step]) -> dict[str, tuple[str, str | None]]:
    """Output folder or file (normalized path) -> (the task that writes it, the source item or None)."""
    out: dict[str, tuple[str, str | None]] = {}
    for step in steps:
        if isinstance(step, SourceStep):
            for item in step.items:
                out[_norm(item.out)] = (step.task, item.what)
        elif isinstance(step, (PassStep, EvalStep, PackageStep)):
            out[_norm(step.out)] = (step.task, None)
    return out


class _Resolver:
    def __init__(self, project: Project, steps: list[Step], store: Store):
        self.root, self.store = project.root, store
        self.specs = {s.task: s for s in steps if isinstance(s, (SourceStep, PassStep, EvalStep, PackageStep))}
        self.producer = producers(steps)
        self.done: dict[str, Resolution] = {}

    def run(self) -> dict[str, Resolution]:
        for name in self.specs:
            self.task(name)
        return dict(self.done)

    # -- one task
    def task(self, name: str) -> Resolution:
        if name in self.done:
            return self.done[name]
        spec = self.specs[name]
        res = Resolution(task=name, kind=spec.kind)
        if isinstance(spec, SourceStep):
            for item in spec.items:
                res.items[item.what] = item.key(self.root, spec.version)
            self._where(res)
            self.done[name] = res
            return res

        contents: dict[str, str] = {}
        for role, folder in spec.inputs().items():
            digest_, why = self.content_of(folder)
            res.inputs[role] = digest_
            if digest_ is None:
                res.unknown = res.unknown or why
            else:
                contents[folder] = digest_
        metrics: dict = {}
        if isinstance(spec, PackageStep) and spec.metrics and res.unknown is None:
            metrics_file, why = self.metrics_of(spec.metrics)
            if metrics_file is None:
                res.unknown = why
            else:
                metrics = keys.portable_metrics(json.loads(metrics_file.read_bytes()))
        if res.unknown is None:
            content = contents.__getitem__
            res.key = spec.key(content, metrics) if isinstance(spec, PackageStep) else spec.key(content)
            if isinstance(spec, EvalStep):
                res.metrics_file = self._eval_metrics(spec, res.key)
            self._where(res)
        self.done[name] = res
        return res

    # -- what a task reads
    def content_of(self, folder: str) -> tuple[str | None, str]:
        """(content digest or None, why unknown) of a folder a task reads."""
        where = self.producer.get(_norm(folder))
        if where is None:  # not produced by any task: whatever is on disk
            path = self.root / folder
            if (path / digest.MANIFEST).is_file():
                return folder_content(path), ""
            return None, f"{folder} does not exist and no task produces it"
        up = self.task(where[0])
        key = up.items.get(where[1]) if where[1] else up.key
        if key is None:
            return None, up.unknown or f"{up.task} cannot be resolved"
        if self._has(key):
            return digest.bytes_digest(self.store.manifest_bytes(key)), ""
        if self._placed(self.specs[up.task], folder, key):
            return folder_content(self.root / folder), ""
        manifest = self.store.remote_manifest(key)
        if manifest is not None:
            return digest.bytes_digest(digest.manifest_bytes(manifest)), ""
        return None, f"{up.task} is not built: no store object {key[:12]}, no intact {folder}"

    def metrics_of(self, path: str) -> tuple[Path | None, str]:
        """The metrics.json a package reads: its eval task's result."""
        where = self.producer.get(_norm(path))
        if where is None:
            p = self.root / path
            return (p, "") if p.is_file() else (None, f"{path} does not exist and no task produces it")
        up = self.task(where[0])
        if up.key is None:
            return None, up.unknown or f"{up.task} cannot be resolved"
        if up.metrics_file is None:
            return None, f"{up.task} is not built: no store object {up.key[:12]}, no intact {path}"
        return up.metrics_file, ""

    def _eval_metrics(self, spec: EvalStep, key: str) -> Path | None:
        obj = self.store.object_dir(key) / "metrics.json"
        if obj.is_file():
            return obj
        if self._placed(spec, spec.out, key):
            return self.root / spec.out
        if self.store.remote is not None and self.store.restore(key, spec.task) is not None:
            return obj
        return None

    # -- helpers
    def _has(self, key: str) -> bool:
        return self.store.known(key)

    def _where(self, res: Resolution) -> None:
        res.in_store = all(self._has(k) for k in res.keys)
        if not res.in_store and self.store.remote is not None:
            res.in_remote = all(self._has(k) or self.store.remote_manifest(k) is not None for k in res.keys)

    def _placed(self, spec: Step, out: str, key: str) -> bool:
        return records.placed(spec, out, key, self.root)


def _norm(path: str) -> str:
    return os.path.normpath(path)

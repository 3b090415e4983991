"""Every task's store key and whether its result is in the store, computed without building.

`modelmake status`/`why` (explain.py), `modelmake compare --rev` and reports ask the same
question: "what key would this task have, and is that result already built?". A key needs the
content digests of the folders the task reads, and those are other tasks' results, so keys are
resolved chain by chain from the sources (whose keys come from their specs alone):

- a source item's key is keys.source_item_key(item); its folder's content is the content of
  its store object;
- a pass/eval/package input's content is the content of the store object of the task that
  produces that folder; when that object is missing (collected, or another store) but the
  folder in artifacts/ is intact and its build record names the same key, the folder itself;
- a package key also needs the recipe's metrics: the eval result's metrics.json.

When an input cannot be known (nothing upstream was built), the task's key is None and
`unknown` says which task has to be built first. Nothing here imports an ML library.

Given a store with a remote, a result missing here but held by the remote gives its content from
the remote's entry (nothing is downloaded), and an evaluation's metrics.json (which a package key
needs) is downloaded into the store: `modelmake remote status` and `modelmake pull` resolve the
keys of a fresh clone that way.

    from modelmake.build.resolve import load_tasks, resolve
    project, tasks = load_tasks(root)
    res = resolve(project, tasks)          # {task name: Resolution}
    res["eval:bert-int8"].in_store, res["eval:bert-int8"].metrics_file
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from modelmake.core import digest
from modelmake.build import keys, records, targets
from modelmake.build.graph import Project, compile_tasks, find_project
from modelmake.store import Store

STORE, ARTIFACTS, REMOTE = "store", "artifacts", "remote"  # where an input's content was found


@dataclass
class Resolution:
    task: str                      # e.g. "pass:tiny/fuse"
    kind: str                      # source, pass, eval or package
    key: str | None = None         # the result's store key (None for sources: see items; or unknown)
    in_store: bool = False         # the result's object(s) exist in the store (not verified here)
    unknown: str | None = None     # why the key cannot be computed yet (one line), else None
    inputs: dict[str, str | None] = field(default_factory=dict)   # role -> content digest
    inputs_from: dict[str, str] = field(default_factory=dict)     # role -> STORE, ARTIFACTS or REMOTE
    items: dict[str, str] = field(default_factory=dict)           # sources: item ("model", "data.x") -> key
    content: dict[str, str] = field(default_factory=dict)         # output folder (spec path) -> content digest
    metrics_file: Path | None = None  # eval: metrics.json of this key's result, when it exists

    @property
    def keys(self) -> list[str]:
        """Every store key of this task's result (one, or one per source item)."""
        return list(self.items.values()) if self.kind == "source" else [self.key] if self.key else []


def spec_of(task: dict) -> dict | None:
    """The runner spec of a compiled step task (None for group tasks without an action)."""
    actions = task.get("actions") or []
    if not actions or not isinstance(actions[0], tuple) or not actions[0][1]:
        return None
    spec = actions[0][1][0]
    return spec if isinstance(spec, dict) and "task" in spec else None


def load_plugins() -> None:
    """Import $MODELMAKE_PLUGINS, as dodo.py does, so recipes may use their pass types."""
    from modelmake.inputs import plugins
    from modelmake.inputs.recipe import RecipeError

    try:
        plugins.load(os.environ.get("MODELMAKE_PLUGINS", ""))
    except plugins.PluginError as e:
        raise RecipeError("MODELMAKE_PLUGINS", "", str(e)) from None


def load_tasks(root: Path) -> tuple[Project, list[dict]]:
    """The project at root and its compiled tasks (plugins loaded). Raises RecipeError for a bad
    recipe or plugin."""
    load_plugins()
    project = find_project(root)
    return project, compile_tasks(project)


def resolve(project: Project, tasks: list[dict] | None = None, store: Store | None = None) -> dict[str, Resolution]:
    """{task name: Resolution} for every source, pass, eval and package task of `tasks`
    (default: the project's compiled tasks), against `store` (default: the project's store).
    Spec paths are relative to project.root."""
    tasks = compile_tasks(project) if tasks is None else tasks
    return _Resolver(project, tasks, store or Store(project.store)).run()


class _Resolver:
    def __init__(self, project: Project, tasks: list[dict], store: Store):
        self.root, self.store = project.root, store
        self.specs = {s["task"]: s for s in map(spec_of, tasks)
                      if s is not None and keys.kind_of(s) in ("source", "pass", "eval", "package")}
        self.producer: dict[str, tuple[str, str | None]] = {}  # output path -> (task, source item)
        for name, spec in self.specs.items():
            if keys.kind_of(spec) == "source":
                for item in spec["items"]:
                    self.producer[_norm(item["out"])] = (name, item["what"])
            else:
                self.producer[_norm(spec["out"])] = (name, None)
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
        kind = keys.kind_of(spec)
        res = Resolution(task=name, kind=kind)
        if kind == "source":
            for item in spec["items"]:
                res.items[item["what"]] = keys.source_item_key(item, self.root, spec["version"])
            res.in_store = all(self._has(k) for k in res.items.values())
            for item in spec["items"]:
                if self._has(res.items[item["what"]]):
                    res.content[item["out"]] = self._object_content(res.items[item["what"]])
            self.done[name] = res
            return res

        contents: dict[str, str] = {}
        for role, folder in keys.inputs(spec).items():
            digest_, how, why = self.content_of(folder)
            res.inputs[role] = digest_
            if digest_ is None:
                res.unknown = res.unknown or why
            else:
                contents[folder] = digest_
                res.inputs_from[role] = how
        metrics: dict = {}
        if kind == "package" and spec["metrics"] and res.unknown is None:
            metrics_file, why = self.metrics_of(spec["metrics"])
            if metrics_file is None:
                res.unknown = why
            else:
                metrics = keys.portable_metrics(json.loads(metrics_file.read_bytes()))
        if res.unknown is None:
            content = contents.__getitem__
            res.key = (keys.pass_key(spec, content) if kind == "pass"
                       else keys.eval_key(spec, content) if kind == "eval"
                       else keys.package_key(spec, content, metrics))
            res.in_store = self._has(res.key)
            if kind == "pass" and res.in_store:
                res.content[spec["out"]] = self._object_content(res.key)
            if kind == "eval":
                res.metrics_file = self._eval_metrics(spec, res.key)
        self.done[name] = res
        return res

    # -- what a task reads
    def content_of(self, folder: str) -> tuple[str | None, str, str]:
        """(content digest or None, STORE/ARTIFACTS/REMOTE, why unknown) of a folder a task reads."""
        where = self.producer.get(_norm(folder))
        if where is None:  # not produced by any task: whatever is on disk
            path = self.root / folder
            if (path / digest.MANIFEST).is_file():
                return keys.folder_content(path), ARTIFACTS, ""
            return None, "", f"{folder} does not exist and no task produces it"
        up = self.task(where[0])
        key = up.items.get(where[1]) if where[1] else up.key
        if key is None:
            return None, "", up.unknown or f"{up.task} cannot be resolved"
        if self._has(key):
            return self._object_content(key), STORE, ""
        if self._placed(self.specs[up.task], folder, key):
            return keys.folder_content(self.root / folder), ARTIFACTS, ""
        manifest = self.store.remote_manifest(key)
        if manifest is not None:
            return digest.bytes_digest(digest.manifest_bytes(manifest)), REMOTE, ""
        return None, "", f"{up.task} is not built: no store object {key[:12]}, no intact {folder}"

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

    def _eval_metrics(self, spec: dict, key: str) -> Path | None:
        obj = self.store.object_dir(key) / "metrics.json"
        if obj.is_file():
            return obj
        if self._placed(spec, spec["out"], key):
            return self.root / spec["out"]
        if self.store.remote is not None and self.store.restore(key, spec["task"]) is not None:
            return obj
        return None

    # -- helpers
    def _has(self, key: str) -> bool:
        return self.store.has(key)

    def _object_content(self, key: str) -> str:
        return keys.folder_content(self.store.object_dir(key))

    def _placed(self, spec: dict, out: str, key: str) -> bool:
        """The target in artifacts/ is as placed, and the task's last record says it came from key."""
        record = records.read(spec, self.root)
        if not record or (record.get("key") != key and key not in (record.get("keys") or [])):
            return False
        path = self.root / out
        return path.exists() and targets.problem(path) is None


def _norm(path: str) -> str:
    return os.path.normpath(path)

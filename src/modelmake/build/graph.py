"""Typed steps -> doit task dicts. The only module that knows doit's dict format.

Each task's action is the runner with its step (build/steps.py), which also rides along in the
task's `meta`; `file_dep` are the manifests of the folders it reads (and the single files it
reads), `targets` what it writes, and `uptodate` its settings (normalized config, code and
library versions) plus an integrity check of its targets. doit decides what is stale; the action
then asks the store for the result by key, so stale-but-known results are restored.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from doit.tools import config_changed

from modelmake import passes
from modelmake.build import lock, targets
from modelmake.build.checker import XXH3Checker
from modelmake.build.compile import compile_steps
from modelmake.build.console import BuildReporter
from modelmake.build.project import Project, find_project
from modelmake.build.steps import PassStep, PublishStep, SourceStep, Step, manifest_of
from modelmake.inputs import plugins
from modelmake.inputs.recipe import RecipeError

GROUP_DOCS = {"source": "fetch and verify pinned model and data sources",
              "pass": "run one optimization pass of a recipe", "eval": "evaluate a recipe's model",
              "package": "package a recipe's model",
              "search": "judge a search's trials and place the selected one"}


def _doc(step: Step) -> str:
    if isinstance(step, PassStep):
        return passes.get(step.type).summary
    if isinstance(step, SourceStep):
        return f"fetch and verify sources of {step.recipe}"
    return {"eval": f"evaluate {step.task.partition(':')[2]}", "package": f"package {step.recipe}",
            "search": f"select the best trial of {step.recipe}"}.get(step.kind, "")


def run_step(step: Step):
    """The action of every task. The runner (and the pass, store and metric code it imports) is
    loaded when a task runs, not when doit only checks that everything is up to date."""
    from modelmake.build import runner
    return runner.run_step(step)


def clean(paths: list[str]) -> None:
    from modelmake.build import runner
    runner.clean(paths)


def _target(path: str) -> str:
    """doit's target for an output: a file itself, a folder its manifest."""
    return path if Path(path).suffix else manifest_of(path)


def task_of(step: Step) -> dict:
    """The doit task of one step."""
    outs = step.outputs()
    if isinstance(step, PublishStep):
        return {
            "basename": step.task, "doc": step.description,
            "actions": [(run_step, [step])] if step.targets else None,
            "file_dep": [manifest_of(f) for f in step.inputs().values()],
            "targets": outs, "task_dep": list(step.needs), "meta": {"step": step},
            "clean": [(clean, [outs])],
            "uptodate": [(targets.intact, [outs])],
            "verbosity": 2,
        }
    basename, _, sub = step.task.partition(":")
    uptodate: list = [config_changed(step.settings())]
    # a target edited on disk makes its task stale, so the action restores it from the store
    uptodate.append((targets.intact, [outs]))
    return {
        "basename": basename, "name": sub, "doc": _doc(step),
        "actions": [(run_step, [step])],
        "file_dep": sorted({manifest_of(f) for f in step.inputs().values()} | set(step.files())),
        "targets": [_target(o) for o in outs],
        "meta": {"step": step},
        "clean": [(clean, [outs])],
        "uptodate": uptodate,
        "verbosity": 2,
    }


def compile_tasks(project: Project) -> list[dict]:
    steps = compile_steps(project)
    tasks = [task_of(s) for s in steps]
    recipes = sorted({s.recipe for s in steps})
    tasks.append({"basename": "optimize", "doc": "build every recipe in recipes/",
                  "actions": None, "task_dep": [f"optimize:{n}" for n in recipes]})
    return tasks


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

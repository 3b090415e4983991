"""Helpers for build tests: a throwaway project on the tiny model, and `doit` runs parsed."""
from __future__ import annotations

import datetime as dt
import math
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from modelmake.core import digest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

TINY_RECIPE = """\
description = "tiny BERT -> ONNX -> fused -> int8"

[model]
path = "models/tiny"

[data.reviews]
path = "data/reviews.csv"
text = "text"
label = {{ column = "category", map = {{ rotten = 0, fresh = 1 }} }}
split = {{ by = "movie_name", test = 0.3, seed = 0 }}

[[pass]]
name = "finetune"
type = "finetune"
data = "reviews"
epochs = 2
batch_size = 8
max_length = 16
learning_rate = 1e-3

[[pass]]
name = "export"
type = "onnx-export"

[[pass]]
name = "fuse"
type = "ort-fusion"
{extra_passes}
[evaluate]
data = "reviews"
metrics = ["accuracy", "f1", "latency", "size"]
baseline = "export"
max_length = 16
latency = {{ batch = 1, sequence = 16, warmup = 1, runs = 5, throughput_batch = 2, throughput_runs = 1 }}

[package]
format = "zip"
"""

QUANTIZE = """
[[pass]]
name = "quantize"
type = "dynamic-int8"
per_channel = true
"""


def recipe_text(extra_passes: str = QUANTIZE) -> str:
    return TINY_RECIPE.format(extra_passes=extra_passes)


@dataclass
class Run:
    rc: int
    out: str
    err: str
    executed: set[str] = field(default_factory=set)   # tasks whose action ran
    built: list[str] = field(default_factory=list)     # results computed (not from the store)
    restored: list[str] = field(default_factory=list)  # results restored from the store
    keys: dict[str, str] = field(default_factory=dict)  # result -> the key prefix the run printed

    def computed(self, task: str) -> bool:
        """The result of `task` was computed in this run: by the task itself, or by another task
        of the same key. doit may run either of two equal tasks (a shared prefix) first, and then
        the second one restores what the first one built."""
        if task in self.built:
            return True
        key = self.keys.get(task)
        return task in self.restored and any(self.keys.get(b) == key for b in self.built)

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def sigint_as_on_a_terminal() -> None:
    """preexec_fn of a build a test interrupts with SIGINT. A build started from a terminal gets
    SIGINT's default action (Python's KeyboardInterrupt); background jobs of a non-interactive
    shell (e.g. a CI script run with `&`) inherit SIGINT ignored, and Python keeps it ignored:
    reset it so that a Ctrl-C test means the same everywhere."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def make_project(root: Path, recipes: dict[str, str] | None = None, model=None) -> Path:
    """A project of the tiny reviews, the `recipes` and a model: `model(root)` writes it (default:
    the tiny random BERT in models/tiny)."""
    from tinymodel import make_tiny_bert, make_tiny_reviews_csv

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    (model or (lambda r: make_tiny_bert(r / "models" / "tiny")))(root)
    make_tiny_reviews_csv(root / "data" / "reviews.csv", n=96)
    (root / "recipes").mkdir(exist_ok=True)
    for name, text in (recipes or {"tiny": recipe_text()}).items():
        (root / "recipes" / f"{name}.toml").write_text(text)
    return root


def shipped_project(root: Path, *recipes: str) -> Path:
    """A project holding dodo.py and the named recipes of recipes/ as they ship (real assets)."""
    (root / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", root / "dodo.py")
    for name in recipes:
        shutil.copy(REPO / f"recipes/{name}.toml", root / f"recipes/{name}.toml")
    return root


def build_project(root: Path, recipes: dict[str, str] | None = None, files: dict[str, str] | None = None,
                  target: str = "optimize") -> tuple[Path, "Run"]:
    """A project on the tiny model (plus `files`, relative path -> text), built once: the
    module-scoped fixture of test modules that look at one build; `copy_project` gives a test a
    copy of its own to change."""
    project = make_project(root, recipes)
    for rel, text in (files or {}).items():
        (project / rel).write_text(text)
    run = doit(project, target)
    assert run.rc == 0, run
    return project, run


def copy_project(project: Path, tmp_path: Path) -> Path:
    """A copy of a built project (artifacts, store and doit's DB included) that a test may change."""
    dest = tmp_path / "proj"
    shutil.copytree(project, dest, symlinks=True)
    return dest


# the build reporter (modelmake.build.console) prints "[3/9] pass:tiny/fuse ..." when a step starts
STARTED = re.compile(r"^\[\d+/\d+\] (\S+) \.\.\.$")


def started_line(task: str) -> str:
    """The end of the line printed when `task` starts running (not when it is up to date)."""
    return f"] {task} ...\n"


def doit(project: Path, *args: str, env: dict | None = None, timeout: float = 600) -> Run:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS / "plugins"), os.environ.get("PYTHONPATH", "")])}
    full_env.pop("MODELMAKE_STORE", None)
    for var in ("MODELMAKE_REMOTE", "MODELMAKE_REMOTE_UPLOAD", "MODELMAKE_REMOTE_AUTHORIZATION"):
        full_env.pop(var, None)  # a developer's own remote must not leak into tests
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "doit", *args], cwd=project, capture_output=True,
                          text=True, env=full_env, timeout=timeout)
    run = Run(proc.returncode, proc.stdout, proc.stderr)
    for line in proc.stdout.splitlines():
        if m := STARTED.match(line):
            run.executed.add(m.group(1))
        if m := re.match(r"^  (.+?): built in ", line):
            run.built.append(m.group(1))
        if m := re.match(r"^  (.+?): restored from store", line):
            run.restored.append(m.group(1))
        if m := re.match(r"^  (.+?): (?:built in \S+|restored from store) \(key ([0-9a-f]+)\)$", line):
            run.keys[m.group(1)] = m.group(2)
    return run


def parse_text(tmp_path: Path, text: str, name: str = "tiny"):
    """Parse `text` as recipes/<name>.toml of a scratch folder, as a build would read it."""
    from modelmake.inputs.recipe import parse_recipe

    (tmp_path / "recipes").mkdir(exist_ok=True)
    file = tmp_path / "recipes" / f"{name}.toml"
    file.write_text(text)
    return parse_recipe(file, f"recipes/{name}.toml")


def recipe_error(tmp_path: Path, text: str, name: str = "tiny") -> str:
    """The one-line error a bad recipe gives; asserts it is one line naming the recipe file."""
    import pytest

    from modelmake.inputs.recipe import RecipeError

    with pytest.raises(RecipeError) as info:
        parse_text(tmp_path, text, name)
    line = str(info.value)
    assert "\n" not in line and line.startswith(f"recipes/{name}.toml: "), line
    return line


def steps_of(project: Path) -> dict:
    """{task name: typed step} of a project's recipes, compiled as a build would (nothing runs)."""
    from modelmake.build.compile import compile_steps
    from modelmake.build.project import find_project

    return {s.task: s for s in compile_steps(find_project(project))}
HOST_DEPENDENT = ("latency_ms", "throughput_per_s", "threads", "runs", "speedup_x")


def snapshot(project: Path) -> dict[str, str]:
    """Digests of every deterministic artifact (timings are host- and moment-dependent)."""
    art = project / "artifacts/tiny"
    out = {}
    for manifest in sorted((art / "steps").rglob(digest.MANIFEST)):
        step = manifest.parent
        assert not any(p.startswith(".mm-") for p in step.relative_to(art).parts), step
        if not (step / ".mm-remote.json").is_file():  # a stub holds its manifest only (files in the remote)
            assert digest.verify_folder(step) is None, step
        out[step.relative_to(art).as_posix()] = digest.bytes_digest(manifest.read_bytes())
    for name in ("model.onnx", "package.zip"):
        out[name] = digest.file_digest(art / name)
    metrics = json.loads((art / "metrics.json").read_text())
    portable = {k: v for k, v in metrics.items() if not any(h in k for h in HOST_DEPENDENT)}
    out["metrics.json (portable part)"] = digest.key_of(portable)
    return out


def passes_built(run: Run) -> set[str]:
    return {b for b in run.built if b.startswith("pass:")}


def file_bytes(project: Path, rel: str) -> bytes:
    return (project / rel).read_bytes()


def wipe_outputs(project: Path, keep_store: bool = True) -> None:
    """Remove targets and doit's DB (the CI case); keep artifacts/.store unless told otherwise."""
    art = project / "artifacts"
    for p in art.iterdir() if art.exists() else []:
        if keep_store and p.name == ".store":
            continue
        shutil.rmtree(p) if p.is_dir() else p.unlink()


# ---------------------------------------------------------------- one pass, in-process
def run_pass(type_name: str, model_dir: Path, out_dir: Path, datasets: dict | None = None, *,
             tokenizer_dir: Path | None = None, task: str = "text-classification", **config) -> Path:
    """Run one pass into a new `out_dir`, its typed config made of `config` over the defaults
    (normalized as a recipe would be: keys whose `when` does not hold are unset)."""
    from modelmake.passes import get
    from modelmake.passes.base import StepContext

    p = get(type_name)
    out_dir.mkdir(parents=True)
    p.run_function()(StepContext(config=p.config_class.make(**config), model_dir=model_dir, out_dir=out_dir,
                                 datasets=datasets or {}, step=type_name, tokenizer_dir=tokenizer_dir, task=task))
    return out_dir


# ---------------------------------------------------------------- a tiny TOML writer
BARE = re.compile(r"[A-Za-z0-9_-]+\Z")


def _str(s: str) -> str:
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _key(k: str) -> str:
    return k if BARE.match(k) else _str(k)


def _val(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(_val(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_val(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def _is_aot(v) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def to_toml(doc: dict) -> str:
    """Top-level tables as [sections] (recursively), top-level arrays of tables as [[sections]],
    everything deeper inline."""
    lines: list[str] = []

    def table(path: list[str], d: dict) -> None:
        lines.append("[" + ".".join(map(_key, path)) + "]")
        lines.extend(f"{_key(k)} = {_val(v)}" for k, v in d.items() if not isinstance(v, dict))
        for k, v in d.items():
            if isinstance(v, dict):
                table(path + [k], v)

    lines.extend(f"{_key(k)} = {_val(v)}" for k, v in doc.items()
                 if not isinstance(v, dict) and not _is_aot(v))
    for k, v in doc.items():
        if isinstance(v, dict):
            table([k], v)
        elif _is_aot(v):
            for item in v:
                lines.append(f"[[{_key(k)}]]")
                lines.extend(f"{_key(kk)} = {_val(vv)}" for kk, vv in item.items())
    return "\n".join(lines) + "\n"

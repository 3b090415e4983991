"""`modelmake compare`: metrics across recipes, or of recipes between two git revisions.

    modelmake compare [recipe ...] [--format terminal|markdown|json]
    modelmake compare --rev HEAD~1 [--rev2 workspace|REV] [recipe ...] [--all]

Across recipes, each recipe's artifacts/<recipe>/metrics.json is one column; a cell shows the
value and, in parentheses, its change against that recipe's own baseline step.

Between revisions, metrics.json is git-ignored, so a revision's metrics come from the build
store: the revision's recipes (and local sources tracked by git) are read with `git archive`
into a temp folder and compiled; resolve.py computes their eval keys chain by chain without
building; when the store holds that eval result, its metrics.json is the revision's metrics.
"workspace" means the current artifacts/. Keys carry this host's fingerprint and library
versions, so a revision counts as built when it was built with this environment on this host.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import shlex
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from modelmake.core import usercode
from modelmake.inputs.recipe import RecipeError
from modelmake.metrics.catalogue import AGAINST, BOOKKEEPING, RATIOS, measured_metric

WORKSPACE = "workspace"
# reading order of the known metrics; bookkeeping (how it was measured) is shown last
ORDER = ("accuracy", "f1", "latency_ms.p50", "latency_ms.p90", "latency_ms.p99", "latency_ms.mean",
         "throughput_per_s", "size_mb")


# ---------------------------------------------------------------- reading metrics
def numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def goals_of(metrics: dict) -> dict | None:
    g = metrics.get("goals")
    return g if isinstance(g, dict) and isinstance(g.get("passed"), bool) else None


def goals_text(goals: dict | None) -> str:
    """"pass", "FAIL (accuracy)", or "" when the recipe sets no goals."""
    if goals is None:
        return ""
    if goals["passed"]:
        return "pass"
    failed = []
    for r in goals.get("results") or []:
        if isinstance(r, dict) and r.get("passed") is False:
            name = r.get("metric") or r.get("name") or r.get("goal")
            if isinstance(name, str):
                failed.append(name)
    return f"FAIL ({', '.join(failed)})" if failed else "FAIL"


def metric_names(all_metrics: list[dict], with_against: bool = False) -> list[str]:
    """Numeric metric names in reading order: quality, speed, size, others, ratios, bookkeeping."""
    names = {k for m in all_metrics for k, v in m.items() if numeric(v)}
    own = {k for k in names if not k.startswith(AGAINST + RATIOS) and k not in BOOKKEEPING}

    def rank(k: str) -> tuple[int, bool, str]:
        # a known metric in its place, one that extends it (latency_ms.p50_ci_low) right after it,
        # any other metric after all known ones
        known = [i for i, name in enumerate(ORDER) if k.startswith(name)]
        place = max(known, key=lambda i: len(ORDER[i])) if known else len(ORDER)
        return place, k not in ORDER, k

    ratios = sorted(k for k in names if k.startswith(RATIOS))
    out = sorted(own, key=rank) + ratios + [k for k in BOOKKEEPING if k in names]
    if with_against:
        out += sorted(k for k in names if k.startswith(AGAINST))
    return out


def fmt(metric: str, v, signed: bool = False) -> str:
    if not numeric(v):
        return ""
    if isinstance(v, int):
        return f"{v:+d}" if signed else str(v)
    base = measured_metric(metric)
    if base.startswith(RATIOS):
        return f"{v:+.2f}x" if signed else f"{v:.2f}x"
    digits = (4 if base in ("accuracy", "f1") else 2 if base.startswith("latency_ms") or base == "size_mb"
              else 1 if base.startswith("throughput") else None)
    if digits is None:
        return f"{v:+.4g}" if signed else f"{v:.4g}"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


@dataclass
class RecipeMetrics:
    name: str
    metrics: dict | None          # artifacts/<recipe>/metrics.json (None: not built yet)
    baseline: dict | None         # what evaluation compares against: {"step": name} or {"recipe": name}
    evaluated: bool               # the recipe has an [evaluate] table
    stale: str | None = None      # why metrics.json is out of date with the recipe, else None


@dataclass
class Comparison:
    recipes: list[RecipeMetrics]
    notes: list[str] = field(default_factory=list)

    @property
    def shown(self) -> list[RecipeMetrics]:
        return [r for r in self.recipes if r.metrics is not None]


def load_comparison(root: Path, names: list[str] | None = None) -> Comparison:
    """Each selected recipe's metrics in artifacts/ (all recipes when names is empty), with notes
    on recipes that have none yet and on metrics that no longer match their recipe."""
    from modelmake.build.compile import load_steps
    from modelmake.build.resolve import reading_store, resolve

    project, steps = load_steps(root)
    recipes = _recipes(project)
    # a search's trials may be named too (`<recipe>@<trial>`): they are columns like recipes
    trials = {s.task.removeprefix("eval:") for s in steps
              if s.task.startswith("eval:") and "@" in s.task}
    selected = _select(names, sorted(recipes), trials)
    with contextlib.redirect_stdout(sys.stderr):  # what the remote says is not the answer
        resolved = resolve(project, steps, reading_store(project))
    out: list[RecipeMetrics] = []
    notes: list[str] = []
    for name in selected:
        recipe, _, trial = name.partition("@")
        r = recipes[recipe]
        rm = RecipeMetrics(name, None, baseline_of(r.evaluate), bool(r.evaluate))
        path = project.artifacts / recipe / (f"trials/{trial}/metrics.json" if trial else "metrics.json")
        failed = _failed(path) if trial else None
        if failed:
            notes.append(f"{name}: the trial failed ({failed}); see artifacts/{recipe}/search.json")
        elif not r.evaluate:
            if names:
                notes.append(f"{name}: no metrics: {_shown(project, r)} has no [evaluate] table")
        elif path.is_file():
            rm.metrics = read_metrics(path)
            rm.stale = _staleness(resolved.get(f"eval:{name}"), path)
            if rm.stale:
                notes.append(f"{name}: artifacts/{name}/metrics.json is out of date: {rm.stale}; "
                             f"`doit optimize:{name}` refreshes it (`modelmake why eval:{name}` says what changed)")
        else:
            notes.append(f"{name}: no metrics yet; build them with `doit optimize:{name}`")
        out.append(rm)
    return Comparison(out, notes)


def baseline_of(evaluate: dict | None) -> dict | None:
    if not evaluate:
        return None
    if evaluate.get("baseline_recipe"):
        return {"recipe": evaluate["baseline_recipe"]}
    return {"step": evaluate["baseline"]} if evaluate.get("baseline") else None


def baseline_text(baseline: dict | None) -> str:
    return " ".join(next(iter(baseline.items()))) if baseline else ""


def read_metrics(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise RecipeError(str(path), "", f"unreadable metrics ({e.__class__.__name__}); rebuild with doit") from None
    if not isinstance(data, dict):
        raise RecipeError(str(path), "", "expected a JSON object of metrics")
    return data


def _staleness(res, path: Path) -> str | None:
    """Why metrics.json in artifacts/ is not the result the recipe has now (None: it is)."""
    if res is None:
        return None
    if res.metrics_file is None or res.metrics_file.read_bytes() != path.read_bytes():
        return "the recipe or its inputs changed since it was built"
    return None


def _recipes(project) -> dict:
    from modelmake.inputs.recipe import load_recipes

    return load_recipes(project.recipes_dir, project.root)


def _shown(project, r) -> str:
    try:
        return str(r.file.resolve().relative_to(project.root))
    except ValueError:
        return str(r.file)


def _failed(path: Path) -> str | None:
    from modelmake.build import targets

    failure = targets.failure_of(path) if path.is_file() else None
    return f"{failure['task']}: {failure['error']}" if failure else None


def _select(names: list[str] | None, known: list[str], trials: set[str] = frozenset()) -> list[str]:
    for n in names or []:
        if n not in known and n not in trials:
            if "@" in n and n.partition("@")[0] in known:
                raise RecipeError("recipes/", "", f"no trial {n!r} (`doit list --all` shows the eval:<recipe>@<trial> tasks)")
            raise RecipeError("recipes/", "", f"no recipe {n!r} (recipes: {', '.join(known) or 'none'})")
    return list(dict.fromkeys(names)) if names else known


# ---------------------------------------------------------------- tables
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    right: set[int] = field(default_factory=set)   # right-aligned columns
    title: str = ""


def comparison_table(comp: Comparison) -> Table:
    shown = comp.shown
    all_metrics = [r.metrics for r in shown]
    t = Table(["metric"] + [r.name + (" (stale)" if r.stale else "") for r in shown], [],
              right=set(range(1, len(shown) + 1)), title="metrics (change against each recipe's baseline)")
    if any(r.baseline for r in shown):
        t.rows.append(["baseline"] + [baseline_text(r.baseline) for r in shown])
    for k in metric_names(all_metrics):
        row = [k]
        for m in all_metrics:
            cell = fmt(k, m.get(k))
            if cell and numeric(m.get(f"delta.{k}")):
                cell += f" ({fmt(k, m[f'delta.{k}'], signed=True)})"
            row.append(cell)
        t.rows.append(row)
    if any(goals_of(m) for m in all_metrics):
        t.rows.append(["goals"] + [goals_text(goals_of(m)) for m in all_metrics])
    return t


def comparison_json(comp: Comparison) -> dict:
    recipes = {}
    for r in comp.recipes:
        m = r.metrics
        recipes[r.name] = {
            "metrics": {k: v for k, v in sorted(m.items()) if numeric(v)} if m is not None else None,
            "baseline": r.baseline, "goals": goals_of(m) if m else None, "stale": r.stale,
        }
    return {"recipes": recipes, "notes": comp.notes}


def render(table: Table, fmt_name: str, out=None) -> None:
    out = out or sys.stdout
    if fmt_name == "markdown":
        out.write(markdown(table))
    elif fmt_name == "terminal" and out.isatty():
        from rich.console import Console
        from rich.table import Table as RichTable

        rt = RichTable(title=table.title or None)
        for i, h in enumerate(table.headers):
            rt.add_column(h, justify="right" if i in table.right else "left")
        for row in table.rows:
            rt.add_row(*row)
        Console(file=out).print(rt)
    else:
        out.write(plain(table))


def plain(table: Table) -> str:
    widths = [max(len(r[i]) for r in [table.headers] + table.rows) for i in range(len(table.headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i in table.right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    body = [line(table.headers), line(["-" * w for w in widths])] + [line(r) for r in table.rows]
    return (f"{table.title}\n" if table.title else "") + "\n".join(body) + "\n"


def markdown(table: Table) -> str:
    def cell(s: str) -> str:
        return s.replace("|", "\\|")
    head = "| " + " | ".join(cell(h) for h in table.headers) + " |"
    sep = "| " + " | ".join("---:" if i in table.right else "---" for i in range(len(table.headers))) + " |"
    rows = ["| " + " | ".join(cell(c) for c in r) + " |" for r in table.rows]
    return (f"**{cell(table.title)}**\n\n" if table.title else "") + "\n".join([head, sep, *rows]) + "\n"


def print_notes(notes: list[str], fmt_name: str) -> None:
    # notes go to stdout in markdown (they belong in the CI comment), to stderr otherwise so
    # `--format json` output stays parseable
    if notes and fmt_name == "markdown":
        print("\n" + "\n".join(f"- {n}" for n in notes))
    elif notes:
        print("\n".join(f"note: {n}" for n in notes), file=sys.stderr)


# ---------------------------------------------------------------- git revisions
class RevError(Exception):
    """A problem with a git revision; one line."""


def _git(root: Path, *args: str, binary: bool = False):
    try:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=not binary)
    except FileNotFoundError:
        raise RevError("git is not installed") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if binary else proc.stderr
        raise RevError((err.strip().splitlines() or [f"git {args[0]} failed"])[-1])
    return proc.stdout


@dataclass
class RevMetrics:
    rev: str                         # as the user wrote it
    sha: str | None                  # None for the workspace
    metrics: dict[str, dict] = field(default_factory=dict)   # recipe -> metrics
    missing: dict[str, str] = field(default_factory=dict)    # recipe -> one line: why none
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.rev if self.sha is None or self.rev == self.sha[:len(self.rev)] else f"{self.rev} ({self.sha[:8]})"


def workspace_metrics(root: Path) -> RevMetrics:
    comp = load_comparison(root)
    out = RevMetrics(WORKSPACE, None, notes=list(comp.notes))
    for r in comp.recipes:
        if r.metrics is not None:
            out.metrics[r.name] = r.metrics
        elif r.evaluated:
            out.missing[r.name] = f"no metrics in the workspace; build them with `doit optimize:{r.name}`"
    return out


def revision_metrics(root: Path, rev: str) -> RevMetrics:
    """Metrics of every evaluated recipe as of git revision `rev`, read from the build store."""
    from modelmake.build.compile import compile_steps, load_plugins
    from modelmake.build.project import Project, find_project
    from modelmake.build.resolve import reading_store, resolve
    from modelmake.inputs.recipe import load_recipes

    load_plugins()
    root = Path(root).resolve()
    project = find_project(root)
    try:
        top = Path(_git(root, "rev-parse", "--show-toplevel").strip()).resolve()
    except RevError:
        raise RevError(f"{root} is not in a git repository") from None
    prefix = root.relative_to(top).as_posix()
    prefix = "" if prefix == "." else prefix + "/"
    try:
        sha = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
    except RevError:
        raise RevError(f"{rev!r} is not a git revision here") from None
    out = RevMetrics(rev, sha)
    with tempfile.TemporaryDirectory(prefix="modelmake-rev-") as tmp:
        tree = Path(tmp)
        if not _extract(root, sha, [f"{prefix}recipes"], prefix, tree):
            raise RevError(f"{prefix}recipes/ does not exist at {rev}")
        try:
            recipes = load_recipes(tree / "recipes", tree)
            for path in sorted({p for r in recipes.values() for p in _local_paths(r)}):
                if Path(path).is_absolute() or (tree / path).exists():
                    continue
                if ".." in Path(path).parts:
                    raise RevError(f"{path} is outside the project; --rev cannot read it as of {rev}")
                if not _extract(root, sha, [prefix + path], prefix, tree):
                    if not (root / path).exists():
                        continue  # compiling says which recipe key names it
                    # not in git at that revision (ignored, untracked, added later): the working copy is all there is
                    (tree / path).parent.mkdir(parents=True, exist_ok=True)
                    (tree / path).symlink_to(root / path)
                    out.notes.append(f"{path} is not in git at {rev}; the working copy was used")
            rev_project = Project(tree, tree / "artifacts", project.store)
            # the remote too: a revision CI built is found there (entries and metrics.json are read)
            with contextlib.redirect_stdout(sys.stderr):
                resolved = resolve(rev_project, compile_steps(rev_project), reading_store(project))
        except RecipeError as e:
            raise RecipeError(f"{rev}:{prefix}{e.file}", e.key, e.message) from None
        for name, r in sorted(recipes.items()):
            if not r.evaluate:
                continue
            res = resolved[f"eval:{name}"]
            if res.metrics_file is not None:
                out.metrics[name] = read_metrics(res.metrics_file)
            else:
                out.missing[name] = _not_built(project, name, rev, sha, prefix)
    return out


def _not_built(project, name: str, rev: str, sha: str, prefix: str) -> str:
    """One line: not in the store, and how to build it without touching this checkout."""
    wt = f"/tmp/mm-{sha[:8]}"
    store = shlex.quote(str(project.store))
    cd = shlex.quote(f"{wt}/{prefix}".rstrip("/"))
    how = (f"git worktree add {wt} {sha[:8]} && (cd {cd} && MODELMAKE_STORE={store} doit optimize:{name}) "
           f"&& git worktree remove --force {wt}")
    return f"not built at {rev} ({sha[:8]}) on this host; build it with: {how}"


def _local_paths(r) -> list[str]:
    """Project files a recipe's keys read: local sources and custom metric modules."""
    paths = [s.spec["path"] for s in (r.model, r.model_tokenizer) if s is not None and s.kind == "path"]
    paths += [d["source"]["path"] for d in r.data.values() if d["source"]["kind"] == "path"]
    for c in (r.evaluate or {}).get("custom") or []:
        paths += usercode.module_paths(c["function"])
    return paths


def _extract(root: Path, sha: str, paths: list[str], prefix: str, dest: Path) -> bool:
    """Write the files under `paths` at `sha` into dest (without the project's prefix). False when
    git has no such path at that revision."""
    if not _git(root, "ls-tree", "--name-only", sha, "--", *paths).strip():
        return False
    data = _git(root, "archive", "--format=tar", sha, "--", *paths, binary=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if not (member.isfile() or member.isdir()) or not member.name.startswith(prefix):
                continue  # links could point outside the temp folder
            member.name = member.name[len(prefix):]
            if member.name:
                tar.extract(member, dest, filter="data")
    return True


def diff_table(old: RevMetrics, new: RevMetrics, recipes: list[str], with_against: bool) -> Table:
    t = Table(["recipe", "metric", old.label, new.label, "change"], [], right={2, 3, 4},
              title=f"metrics: {old.label} -> {new.label}")
    for name in recipes:
        a, b = old.metrics.get(name), new.metrics.get(name)
        if a is None or b is None:
            continue
        for k in metric_names([a, b], with_against):
            x, y = a.get(k), b.get(k)
            change = ""
            if numeric(x) and numeric(y):
                change = fmt(k, y - x, signed=True) if not k.startswith(RATIOS) else f"{y - x:+.2f}x"
                if x and not isinstance(x, int):
                    change += f" ({(y - x) / abs(x):+.1%})"
            t.rows.append([name, k, fmt(k, x), fmt(k, y), change])
        ga, gb = goals_of(a), goals_of(b)
        if ga or gb:
            t.rows.append([name, "goals", goals_text(ga), goals_text(gb), ""])
    return t


def diff_json(old: RevMetrics, new: RevMetrics, recipes: list[str]) -> dict:
    out = {}
    for name in recipes:
        a, b = old.metrics.get(name), new.metrics.get(name)
        entry: dict = {"old": old.label, "new": new.label}
        if a is None or b is None:
            entry["missing"] = {old.label: old.missing.get(name), new.label: new.missing.get(name)}
        else:
            entry["metrics"] = {}
            for k in metric_names([a, b], with_against=True):
                x, y = a.get(k), b.get(k)
                entry["metrics"][k] = {"old": x if numeric(x) else None, "new": y if numeric(y) else None,
                                       "diff": y - x if numeric(x) and numeric(y) else None}
            entry["goals"] = {"old": goals_of(a), "new": goals_of(b)}
        out[name] = entry
    return out


def _side(root: Path, rev: str) -> RevMetrics:
    return workspace_metrics(root) if rev == WORKSPACE else revision_metrics(root, rev)


def compare_revisions(root: Path, rev: str, rev2: str, names: list[str], fmt_name: str, with_against: bool) -> int:
    old, new = _side(root, rev), _side(root, rev2)
    known = sorted(set(old.metrics) | set(old.missing) | set(new.metrics) | set(new.missing))
    for n in names:
        if n not in known:
            raise RecipeError("recipes/", "", f"no evaluated recipe {n!r} at {old.label} or {new.label} "
                                              f"(recipes: {', '.join(known) or 'none'})")
    selected = list(dict.fromkeys(names)) or known
    lines = []  # what cannot be compared: part of the answer, so with the table (stderr for json)
    for side, other in ((old, new), (new, old)):
        for n in selected:
            if n in side.missing:
                lines.append(f"{n}: {side.missing[n]}")
            elif n not in side.metrics and n in other.metrics:
                lines.append(f"{n}: no such evaluated recipe at {side.label}")
    about = lambda note: note.split(":", 1)[0] in selected  # noqa: E731 - notes start with their recipe
    notes = [n for n in old.notes if about(n)] + [n for n in new.notes if about(n) and n not in old.notes]
    if fmt_name == "json":
        print(json.dumps(diff_json(old, new, selected), indent=1, sort_keys=True))
        print_notes(lines, fmt_name)
    else:
        table = diff_table(old, new, selected, with_against)
        if table.rows:
            render(table, fmt_name)
        for line in lines:
            print(f"- {line}" if fmt_name == "markdown" else line)
    print_notes(notes, fmt_name)
    both = [n for n in selected if n in old.metrics and n in new.metrics]
    return 0 if both and len(both) == len(selected) else 1


# ---------------------------------------------------------------- command
def main(command: str, args: list[str]) -> int:
    ap = argparse.ArgumentParser(
        prog="modelmake compare",
        description="compare metrics across recipes, or of recipes between two git revisions")
    ap.add_argument("recipes", nargs="*", help="recipes to show (default: all with metrics)")
    ap.add_argument("--format", choices=("terminal", "markdown", "json"), default="terminal",
                    help="terminal table (plain text when not a terminal), GitHub markdown, or JSON")
    ap.add_argument("--rev", help="compare with the metrics of this git revision (read from the build store)")
    ap.add_argument("--rev2", default=WORKSPACE, help="the other side of --rev: 'workspace' (default) or a git revision")
    ap.add_argument("--all", action="store_true", help="with --rev: also the baseline.* and delta.* metrics")
    a = ap.parse_args(args)
    root = Path.cwd()
    try:
        if a.rev:
            return compare_revisions(root, a.rev, a.rev2, a.recipes, a.format, a.all)
    except RevError as e:
        print(f"error: --rev: {e}", file=sys.stderr)
        return 2
    if a.rev2 != WORKSPACE:
        print("error: --rev2 needs --rev", file=sys.stderr)
        return 2
    comp = load_comparison(root, a.recipes)
    if a.format == "json":
        print(json.dumps(comparison_json(comp), indent=1, sort_keys=True))
    elif comp.shown:
        render(comparison_table(comp), a.format)
    print_notes(comp.notes, a.format)
    return 0 if comp.shown else 1

"""What a searching recipe costs, cold and incrementally; prints one markdown table.

    python benchmarks/search.py [--recipe bert-int8-search] [--add KEY=VALUE] [--repeats 3]
                                [--workdir DIR] [--project DIR]

Builds recipes/<recipe>.toml (a recipe with a grid `[search]`) in a scratch project (its own
artifacts and store) with the real `doit` CLI, through incremental.py's doit(), and times:

1. the cold search (`doit optimize:<recipe>`): every trial built;
2. the same command again: it must run no pass (the script says so and exits 1 otherwise);
3. the search after adding ONE value to the recipe's [search.space] (`--add KEY=VALUE`, e.g.
   `--add quantize.reduce_range=true`; VALUE is a TOML value, a bare word is a string);
4. each new trial built on its own: a fresh project holding a plain recipe of that trial's chain
   (no [search]), a copy of the store as it was before the edit, and the chain's steps the search
   had already built restored into place beforehand (untimed), so the timed `doit eval:<trial>`
   pays only the trial's new passes and its evaluation;
5. the ratio of 3 to the sum of 4: what the search adds around the new work (loading every
   trial's tasks, checking the old ones, the search step re-timing its finalists). The goal
   quoted by the issue is a ratio of at most 1.2.
3 and 4 are repeated `--repeats` times in turns, each from the project and store as they were
before the edit, and the medians are shown: an evaluation times batch-1 latency until its
interval is tight, so on a shared machine one evaluation of a model can take several times as
long as another of the same model (same key, four times the runs).

Trials are counted from the build's output: a trial is its `eval:<recipe>@<trial>` task, built,
restored from the store or up to date; passes are the `pass:` tasks that were built (executed).

Default `--add` for bert-int8-search: `quantize.type=fp16`. A grid adds the product of the other
keys for each new value, so adding a per_channel or reduce_range value there adds 4 trials, and
the one-value key `quantize.data` only applies to static-int8 (4 trials again, and the recipe has
one dataset). fp16 declares none of per_channel, reduce_range or data, so the trials that differ
only there are one: exactly ONE new trial (`quantize:fp16`), after the shared fine-tune, export
and fusion, the chain recipes/bert-fp16.toml builds. Other recipes need `--add`.

`--project DIR` benchmarks a copy of another project folder (its recipes, models and data;
its artifacts are left out) instead of this repository's dodo.py and recipes/<recipe>.toml: the
way to try the script on a small project in seconds (tests/buildkit.py's make_project).
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from incremental import ENV, REPO, doit  # this folder's incremental.py: one way to run a build
from overhead import cpu  # this folder's overhead.py: CPU model, cores and the int8-relevant flags

from modelmake.core.values import toml_value
from modelmake.inputs.recipe import RecipeError, parse_recipe, parse_recipe_text
from modelmake.search import space, trials as trialset

DEFAULT_RECIPE = "bert-int8-search"
DEFAULT_ADD = {"bert-int8-search": "quantize.type=fp16"}   # why: the module docstring
GOAL_RATIO = 1.2

# a scratch project must not reach the user's shared store or remote: the cold search would
# restore instead of build (incremental.py's ENV keeps them; doit() reads this same dict)
for var in ("MODELMAKE_STORE", "MODELMAKE_REMOTE", "MODELMAKE_REMOTE_UPLOAD", "MODELMAKE_REMOTE_AUTHORIZATION"):
    ENV.pop(var, None)

# the reporter's line when a task ends: "[3/9] pass:r/fuse ... built in 4.1s" (or restored, up to date, ...)
ENDED = re.compile(r"^\[\d+/\d+\] (\S+) \.\.\. (built|restored|up to date|done|failed)(?: in ([\d.]+)s)?", re.M)
# a result's line: "  eval:r@t: built in 0.3s (key 92f0c326ba94)" (sub-results have words before the colon)
KEYED = re.compile(r"^  ((?:pass|eval):\S+): (?:built in \S+|restored from store) \(key ([0-9a-f]+)\)$", re.M)


class Build:
    """One `doit` run: its wall time and each task's outcome, read from the output."""

    def __init__(self, recipe: str, wall: float, out: str):
        self.recipe, self.wall, self.out = recipe, wall, out
        self.outcome = {m.group(1): m.group(2) for m in ENDED.finditer(out)}
        self.seconds = {m.group(1): float(m.group(3)) for m in ENDED.finditer(out) if m.group(3)}
        self.keys = {m.group(1): m.group(2) for m in KEYED.finditer(out)}

    def trials(self, how: str) -> list[str]:
        """Suffixes of the trials whose evaluation ended `how` (built, restored, up to date)."""
        prefix = f"eval:{self.recipe}@"
        return [t[len(prefix):] for t, o in self.outcome.items() if t.startswith(prefix) and o == how]

    def passes(self, how: str) -> list[str]:
        return [t for t, o in self.outcome.items() if t.startswith("pass:") and o == how]

    def ran(self) -> list[str]:
        """Tasks whose action ran (anything but up to date)."""
        return [t for t, o in self.outcome.items() if o != "up to date"]

    def trial_cell(self) -> str:
        parts = [f"{len(self.trials('built'))} built", f"{len(self.trials('restored'))} restored"]
        if self.trials("up to date"):
            parts.append(f"{len(self.trials('up to date'))} up to date")
        return ", ".join(parts)

    def pass_cell(self) -> str:
        built, restored = self.passes("built"), self.passes("restored")
        steps = ", ".join(_counted([t.rsplit("/", 1)[-1] for t in built]))
        cell = f"{len(built)} executed" + (f" ({steps})" if built else "")
        return cell + (f", {len(restored)} restored" if restored else "")


def _counted(names: list[str]) -> list[str]:
    """["quantize", "quantize", "fuse"] -> ["2× quantize", "fuse"] in first-seen order."""
    return [f"{names.count(n)}× {n}" if names.count(n) > 1 else n for n in dict.fromkeys(names)]


def build(project: Path, recipe: str, target: str) -> Build:
    return Build(recipe, *doit(project, target))


def grid_trials(file: Path, text: str) -> dict:
    """suffix -> Trial of a grid search recipe (`file` holding `text`), as the build derives them."""
    try:
        r = parse_recipe_text(text, file.stem, file.parent.parent, f"recipes/{file.name}", file)
        spec = space.parse(r, f"recipes/{file.name}")
    except RecipeError as e:   # a bad --add value: the recipe parser's one line says which
        sys.exit(f"error: {e}")
    if spec is None or spec.sampler != "grid":
        sys.exit(f"{file}: this benchmark needs a [search] with sampler = \"grid\" (its trials do not "
                 "depend on results, so the ones a new value adds are known)")
    return {t.suffix: t for t in trialset.trials(r, spec, f"recipes/{file.name}", trialset.grid(spec))}


def add_value(file: Path, assignment: str) -> tuple[str, str]:
    """The recipe's text with VALUE appended to the list of KEY in [search.space] (a one-line
    list), and "KEY += VALUE"; checked before anything is built, written after the re-run."""
    key, eq, raw = assignment.partition("=")
    key, raw = key.strip().strip('"'), raw.strip()
    if not eq or not key or not raw:
        sys.exit(f"--add: expected KEY=VALUE, e.g. quantize.reduce_range=true; got {assignment!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw   # a bare word: a string (pass types, dataset names)
    text = file.read_text()
    line = re.compile(rf'^(\s*"{re.escape(key)}"\s*=\s*\[)(.*?)(\]\s*(?:#.*)?)$', re.M)
    found = line.search(text)
    if not found:
        sys.exit(f"--add: {file.name} has no one-line list \"{key}\" = [...] in [search.space]")
    before = tomllib.loads(text)["search"]["space"][key]
    if value in before:
        sys.exit(f"--add: {key} already lists {toml_value(value)}")
    edited = text[:found.start(2)] + found.group(2).rstrip() + f", {toml_value(value)}" + text[found.end(2):]
    if tomllib.loads(edited)["search"]["space"][key] != before + [value]:
        sys.exit(f"--add: editing {file.name} did not give {key} = {before + [value]}")
    return edited, f"{key} += {toml_value(value)}"


HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"-]+)\s*\]\]?\s*(?:#.*)?$")


def plain_recipe(text: str, steps, goals: bool) -> str:
    """The recipe without its search and with `steps` as its passes: one trial as an ordinary
    chain. Its evaluation says on_goal_failure = "warn" when there are goals, as a trial's does
    (build/trial_steps.py), so that its key, and so its work, is the trial's."""
    blocks: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        m = HEADER.match(line)
        if m:
            blocks.append((m.group(1).replace('"', ""), []))
        blocks[-1][1].append(line)
    out = []
    for name, lines in blocks:
        if name == "pass" or name == "search" or (name or "").startswith("search."):
            continue
        if name == "evaluate" and goals:
            lines = [lines[0], 'on_goal_failure = "warn"'] + [
                x for x in lines[1:] if not re.match(r"\s*on_goal_failure\s*=", x)]
        out += lines
    for s in steps:
        out += ["", "[[pass]]", f"name = {toml_value(s.name)}", f"type = {toml_value(s.type)}"]
        # None is a default TOML cannot write; leaving the key out gives the same normalized config
        out += [f"{k} = {toml_value(v)}" for k, v in s.config.items() if v is not None]
    return "\n".join(out) + "\n"


def copy_project(src: Path, dest: Path) -> None:
    """Recipes, models, data and dodo.py; not the artifacts (their store, doit's DB)."""
    shutil.copytree(src, dest, ignore=lambda d, names: ["artifacts"] if Path(d) == src else [])


def own_build(project: Path, store: Path, work: Path, recipe: str, trial, shared: int, goals: bool,
              i: int) -> tuple[Build, str]:
    """Time one new trial on its own: a plain recipe of its chain in a fresh copy of the project
    with the store as it was before the edit. Returns the build and its recipe name."""
    name = f"new-trial-{i}"
    dest = work / name
    if dest.exists():   # a previous repeat's
        shutil.rmtree(dest)
    copy_project(project, dest)
    for f in (dest / "recipes").iterdir():   # only this recipe: doit loads no other's tasks
        f.unlink()
    text = (project / "recipes" / f"{recipe}.toml").read_text()
    (dest / "recipes" / f"{name}.toml").write_text(plain_recipe(text, trial.steps, goals))
    (dest / "artifacts").mkdir()
    shutil.copytree(store, dest / "artifacts" / ".store")
    if shared:  # the steps the search already had: in place before the clock starts, as in the search
        doit(dest, f"pass:{name}/{trial.steps[shared - 1].name}")
    return build(dest, name, f"eval:{name}"), name


def shared_length(trial, others) -> int:
    """How many leading steps of `trial` some other trial has the same (the search built them)."""
    best = 0
    for o in others:
        n = 0
        while n < min(len(trial.steps), len(o.steps)) and trial.steps[n] == o.steps[n]:
            n += 1
        best = max(best, n)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default=DEFAULT_RECIPE, help=f"recipe name (default {DEFAULT_RECIPE})")
    ap.add_argument("--add", metavar="KEY=VALUE",
                    help="value added to a [search.space] list (default for bert-int8-search: quantize.type=fp16)")
    ap.add_argument("--workdir", type=Path, help="scratch folder, kept (default: a temp folder, removed)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="times the edit and the own builds are timed, in turns; medians (default 3)")
    ap.add_argument("--project", type=Path, help="benchmark a copy of this project folder instead of the repo's recipe")
    args = ap.parse_args()
    add = args.add or DEFAULT_ADD.get(args.recipe)
    if add is None:
        ap.error(f"--add KEY=VALUE is needed for {args.recipe} (a value to add to its [search.space])")

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-search-"))).resolve()
    if work.exists():
        shutil.rmtree(work)
    project = work / "project"
    if args.project:
        copy_project(args.project.resolve(), project)
    else:
        (project / "recipes").mkdir(parents=True)
        shutil.copy(REPO / "dodo.py", project)
        shutil.copy(REPO / "recipes" / f"{args.recipe}.toml", project / "recipes")
    file = project / "recipes" / f"{args.recipe}.toml"
    if not file.is_file():
        sys.exit(f"{file}: no such recipe")
    target = f"optimize:{args.recipe}"
    goals = bool((parse_recipe(file, f"recipes/{file.name}").evaluate or {}).get("goal"))
    before = grid_trials(file, file.read_text())
    edited, edit = add_value(file, add)
    after = grid_trials(file, edited)
    new = [s for s in after if s not in before]
    if not new:
        sys.exit(f"--add {add}: the grid has no new trial")
    date = time.strftime("%Y-%m-%d %H:%M")
    rows = []

    cold = build(project, args.recipe, target)
    rows.append(("cold search", f"{cold.wall:.1f} s", cold.trial_cell(), cold.pass_cell(),
                 f"{len(before)} trials in the grid"))

    rerun = build(project, args.recipe, target)
    ran_passes = [t for t in rerun.ran() if t.startswith("pass:")]
    others = [t for t in rerun.ran() if not t.startswith("pass:")]
    rerun_note = ("no pass ran" if not ran_passes else f"FAIL: passes ran: {', '.join(ran_passes)}") + (
        f"; other tasks ran: {', '.join(others)}" if others else "")
    rows.append(("re-run", f"{rerun.wall:.2f} s", rerun.trial_cell(), rerun.pass_cell(), rerun_note))

    # every repeat starts from the project as the re-run left it (artifacts, store, doit's DB):
    # the new trial must be built each time, not restored from the previous repeat
    before_edit = work / "artifacts-before-edit"
    shutil.copytree(project / "artifacts", before_edit)
    file.write_text(edited)
    olds = list(before.values())
    added_walls, own_walls, keys_differ = [], [], set()
    for r in range(args.repeats):
        # in turns (search, own builds, search, ...): a slow spell of a shared machine (batch-1
        # latency runs until its interval is tight, so eval time moves with the load) hits both
        if r:
            shutil.rmtree(project / "artifacts")
            shutil.copytree(before_edit, project / "artifacts")
        added = build(project, args.recipe, target)
        added_walls.append(added.wall)
        own_total, own_passes, notes = 0.0, 0, []
        for i, suffix in enumerate(new, 1):
            own, name = own_build(project, before_edit / ".store", work, args.recipe, after[suffix],
                                  shared_length(after[suffix], olds), goals, i)
            own_total += own.wall
            own_passes += len(own.passes("built"))
            if own.keys.get(f"eval:{name}") != added.keys.get(f"eval:{args.recipe}@{suffix}"):
                keys_differ.add(suffix)
            notes.append(f"{suffix}: {own.pass_cell()}")
        own_walls.append(own_total)
    search_s = added.seconds.get(f"search:{args.recipe}")
    times = f" (median of {args.repeats}: " if args.repeats > 1 else ""
    rows.append((f"after adding a value ({edit})", f"{statistics.median(added_walls):.1f} s", added.trial_cell(),
                 added.pass_cell(), f"new: {', '.join(new)}" + (f"; search step {search_s:.1f} s" if search_s is not None else "")
                 + (times + ", ".join(f"{w:.1f}" for w in added_walls) + " s)" if times else "")))
    check = (f"WARNING: evaluation key differs from the search's for {', '.join(sorted(keys_differ))} (not the same work)"
             if keys_differ else "same evaluation key as in the search")
    rows.append(("the new candidates' own builds" if len(new) > 1 else "the new candidate's own build",
                 f"{statistics.median(own_walls):.1f} s", f"{len(new)} built", f"{own_passes} executed",
                 "; ".join(notes) + f"; {check}" + (times + ", ".join(f"{w:.1f}" for w in own_walls) + " s)" if times else "")))
    ratios = [a / o for a, o in zip(added_walls, own_walls)]
    ratio = statistics.median(ratios)
    rows.append(("ratio: after adding / own builds", f"{ratio:.2f}x", "", "",
                 f"goal ≤ {GOAL_RATIO}: {'met' if ratio <= GOAL_RATIO else 'NOT met'}"
                 + (f" (median of the per-repeat ratios {', '.join(f'{x:.2f}' for x in ratios)})" if times else "")))

    print(f"\nrecipe: {args.recipe}" + (f" (project {args.project})" if args.project else "")
          + f"; date: {date}; machine: {cpu()}\n")
    print("| scenario | wall time | trials | passes | notes |")
    print("| --- | ---: | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nre-run: {'no pass ran' if not ran_passes else 'passes ran, none should have: ' + ', '.join(ran_passes)}")
    if not args.workdir:
        shutil.rmtree(work)
    return 1 if ran_passes else 0


if __name__ == "__main__":
    sys.exit(main())

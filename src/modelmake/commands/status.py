"""`modelmake status` and `modelmake why`: what a build would do, and why, without building.

A task is judged by its store key, the way a build judges it (resolve.py computes the keys):
- up to date: its last run here (records.py) produced the current key and its targets are intact;
- restorable: not up to date, but the store holds the current key: a build copies it back;
- stale: a build has to compute it;
- never built: no record here and nothing in the store.
With a remote, a result it holds counts as restorable too (its entry is read, nothing is
downloaded but the evaluations' metrics.json a package key needs), and a step placed as a stub
(its files left in the remote, targets.py) is "up to date (files in the remote)".
`why` names the difference: settings (Step.settings()) against the record's, input digests
against the record's (and which task makes each input), damaged or missing targets; for an
evaluation that must be measured, that timings are keyed by host (and which other hosts the
remote's note says measured the same inputs, hosts.py).
Nothing here imports an ML library, so both answer in well under a second.
"""
from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from modelmake.core import digest
from modelmake.build import hosts, records, targets
from modelmake.build.compile import load_steps
from modelmake.build.resolve import Resolution, producers, reading_store, resolve
from modelmake.build.steps import EvalStep, PackageStep, PublishStep, SearchStep, SourceStep, Step
from modelmake.metrics.catalogue import PORTABLE

UP_TO_DATE, RESTORABLE, STALE, NEVER = "up to date", "restorable", "stale", "never built"
STATES = (UP_TO_DATE, RESTORABLE, STALE, NEVER)
_STYLES = {UP_TO_DATE: "green", RESTORABLE: "cyan", STALE: "yellow", NEVER: "dim"}
MISSING = object()  # a setting that one side does not have


@dataclass
class Verdict:
    task: str
    recipe: str
    state: str
    reasons: list[str] = field(default_factory=list)  # why it is (not) up to date, most telling first
    keys: list[str] = field(default_factory=list)      # current store key(s), when they can be known
    last_keys: list[str] = field(default_factory=list)  # store key(s) of the last run here
    last_run: str | None = None                      # when the last run here finished (UTC)
    files: str | None = None   # where the files of a stub target are ("remote" or "store"), else None

    @property
    def shown_state(self) -> str:
        return f"{self.state} (files in the {self.files})" if self.files else self.state

    def as_json(self) -> dict:
        return {"task": self.task, "recipe": self.recipe, "state": self.state, "reasons": self.reasons,
                "keys": self.keys, "last_keys": self.last_keys, "last_run": self.last_run, "files": self.files}


# ---------------------------------------------------------------- comparing settings
def setting_changes(old: dict, new: dict) -> list[str]:
    """`path: old -> new` for every setting that differs (`config.per_channel: true -> false`)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for path in sorted(set(a) | set(b), key=_path_order):
        before, after = a.get(path, MISSING), b.get(path, MISSING)
        # compared as the key sees them: 1 and true are different settings
        if before is MISSING or after is MISSING or digest.canonical(before) != digest.canonical(after):
            note = " (the step's code version)" if path == "version" else ""
            out.append(f"{path}: {_show(before)} -> {_show(after)}{note}")
    return out


def _path_order(path: str) -> tuple:
    # what users edit first, then versions and host
    head = path.split(".", 1)[0]
    rank = {"config": 0, "type": 0, "items": 0, "evaluate": 0, "package": 0, "datasets": 1, "data": 1,
            "version": 2, "libraries": 3, "host": 4}.get(head, 1)
    return rank, path


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict) and value:
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    # source items are a list; naming them by what they fetch reads better than an index
    if isinstance(value, list) and value and all(isinstance(v, dict) and "what" in v for v in value):
        out = {}
        for v in value:
            out.update(_flatten({k: x for k, x in v.items() if k != "what"}, f"{prefix}.{v['what']}"))
        return out
    return {prefix: value}


def _show(value) -> str:
    if value is MISSING:
        return "(not set)"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return value if value and value.strip() == value and value.isprintable() else json.dumps(value)
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _input_name(role: str) -> str:
    return "input model" if role == "input" else f"input {role}"


# ---------------------------------------------------------------- judging tasks
class Explainer:
    def __init__(self, root: Path):
        self.project, steps = load_steps(root)
        self.root = self.project.root
        self.store = reading_store(self.project)  # a result CI built is restorable, not stale
        self.resolved = resolve(self.project, steps, self.store)
        self.specs: dict[str, Step] = {s.task: s for s in steps}
        # folder a task writes -> the task, so an input can be traced to the step that makes it
        self.producer: dict[str, str] = {out: task for out, (task, _) in producers(steps).items()}
        self.verdicts: dict[str, Verdict] = {}
        for name in self.specs:
            self.judge(name)

    def recipe_of(self, task: str) -> str:
        return self.specs[task].recipe

    def judge(self, name: str) -> Verdict:
        if name in self.verdicts:
            return self.verdicts[name]
        spec = self.specs[name]
        v = (self._judge_optimize(spec) if isinstance(spec, PublishStep)
             else self._judge_search(spec) if isinstance(spec, SearchStep)
             else self._judge_step(spec, self.resolved[name]))
        self.verdicts[name] = v
        return v

    def _judge_step(self, spec: Step, res: Resolution) -> Verdict:
        name = spec.task
        record = records.read(spec, self.root)
        current = res.keys  # one key, or one per source item; empty when it cannot be known yet
        last = ([record["key"]] if record and isinstance(record.get("key"), str)
                else [k for k in (record or {}).get("keys") or [] if isinstance(k, str)])
        v = Verdict(name, self.recipe_of(name), STALE, keys=current, last_keys=last,
                    last_run=(record or {}).get("finished"))
        present = self._any_target(spec)
        changes: list[str] = []
        if record is not None:
            settings = record.get("settings")
            if isinstance(settings, dict):
                changes += setting_changes(settings, spec.settings())
        changes += self._input_changes(spec, res, record)
        same_key = bool(current) and record is not None and set(current) <= set(last)
        if record is not None and not same_key and not changes:
            changes += self._unexplained(spec, res, record)
        # a step that was never placed here is "not built", not a list of missing files
        problems = self._target_problems(spec) if present or record is not None else []

        if same_key and not problems:
            v.state = UP_TO_DATE
            v.reasons = self._stub_notes(spec, v) + [self._done_note(record, res)]
            return v
        absent = [] if record is not None or present else ["not in artifacts/ (no build record, no target)"]
        if current and res.in_store:
            v.state = RESTORABLE
            v.reasons = absent + changes + problems + [
                f"the store holds its result for the current inputs and settings (key {current[0][:12]}): "
                "a build restores it without recomputing"]
            return v
        if current and res.in_remote:
            v.state = RESTORABLE
            v.reasons = absent + changes + problems + [
                f"the remote {self.store.remote.shown} holds its result for the current inputs and settings "
                f"(key {current[0][:12]}): a build restores it without recomputing"]
            return v
        v.state = NEVER if absent else STALE
        v.reasons = changes + problems
        missing = [k for k in current if not self.store.known(k)]
        if missing:
            verb = "fetches" if isinstance(spec, SourceStep) else "computes" if absent else "recomputes"
            where = "the store" if self.store.remote is None else "the store nor the remote"
            v.reasons.append(f"not in {where} (key {', '.join(k[:12] for k in missing)}): a build {verb} it")
        if isinstance(spec, EvalStep):
            v.reasons += self._host_notes(spec, res)
        return v

    def _stub_notes(self, spec: Step, v: Verdict) -> list[str]:
        """An up-to-date step whose folder holds only its manifest: where its files are."""
        out, places = [], set()
        for rel in spec.outputs():
            marker = targets.stub_of(self.root / rel)
            if marker is None:
                continue
            local = self.store.has(marker["key"])
            places.add("store" if local else "remote")
            where = "the local store" if local else f"the remote {marker.get('remote') or ''}".rstrip()
            n, size = marker.get("files"), marker.get("size")
            what = f"{n} file{'' if n == 1 else 's'}" if isinstance(n, int) else "files"
            what += f", {size / 1e6:.1f} MB" if isinstance(size, (int, float)) else ""
            out.append(f"{rel} holds only its manifest; its files ({what}) are in {where}, fetched when a step "
                       f"reads them; `modelmake pull {spec.recipe}` puts them there")
        if places:
            v.files = "remote" if "remote" in places else "store"
        return out

    def _host_notes(self, spec: EvalStep, res: Resolution) -> list[str]:
        """An evaluation the remote lacks: its timings are keyed by host, and which other kinds of
        host measured the same inputs (the remote's note)."""
        if self.store.remote is None or res.key is None or any(d is None for d in res.inputs.values()):
            return []
        here = (f"timings (latency, throughput, memory) are keyed by host, and this host is "
                f"{hosts.describe(spec.host)} (the host.* settings)")
        others = hosts.other_hosts(self.store, spec, dict(res.inputs))
        if not others:
            return [f"{here}; the remote holds no evaluation of these inputs measured on it"]
        return [f"the remote holds this evaluation of the same inputs measured on another kind of host "
                f"({'; '.join(hosts.describe(h) for h in others[-3:])}); {here}, so it is measured again here "
                "(accuracy and other host-independent measurements are reused)"]

    def _input_changes(self, spec: Step, res: Resolution, record: dict | None) -> list[str]:
        out = []
        last = (record or {}).get("inputs")
        last = last if isinstance(last, dict) else {}
        for role, folder in spec.inputs().items():
            now, before = res.inputs.get(role), last.get(role)
            maker = self.producer.get(os.path.normpath(folder))
            if now is None:
                out.append(self._pending(_input_name(role), maker, folder))
            elif record is None:
                continue
            elif before is None:
                out.append(f"{_input_name(role)} ({folder}) was not read by the last build here")
            elif before != now:
                out.append(f"{_input_name(role)} changed: {before[:12]} -> {now[:12]} "
                           f"({f'made by {maker}' if maker else folder})")
        known = all(res.inputs.get(role) is not None for role in spec.inputs())
        if isinstance(spec, PackageStep) and spec.metrics and res.key is None and known:
            maker = self.producer.get(os.path.normpath(spec.metrics))
            # host-bound timings are not in a package: a re-run evaluation often gives the same key
            out.append(f"the metrics it carries are known once {maker or spec.metrics} has run "
                       "(if they come out the same, the package is restored)")
        return out

    def _pending(self, what: str, maker: str | None, folder: str) -> str:
        """An input whose content is known only after the task that makes it runs."""
        if maker is None:
            return f"{what} ({folder}) does not exist"
        if self.judge(maker).state == NEVER:
            return f"{what} exists once {maker} is built"
        return f"{what} changes when {maker} is rebuilt"

    def _unexplained(self, spec: Step, res: Resolution, record: dict) -> list[str]:
        """The key moved although settings and input digests did not: name what else is in it."""
        if isinstance(spec, SourceStep):
            last = set(record.get("keys") or [])
            changed = [item for item in spec.items if res.items.get(item.what) not in last]
            return [f"{i.what}: {i.source.get('path', 'its source')} changed since the last build here"
                    for i in changed] or ["its sources changed"]
        if isinstance(spec, PackageStep) and spec.metrics:
            maker = self.producer.get(os.path.normpath(spec.metrics), spec.metrics)
            return [f"the metrics it carries ({', '.join(PORTABLE)}, made by {maker}) changed"]
        if res.key is None:
            return [res.unknown or "its key cannot be known yet"]
        return [f"its key changed: {str(record.get('key'))[:12]} -> {res.key[:12]}"]

    def _target_problems(self, spec: Step) -> list[str]:
        out = []
        for rel in spec.outputs():
            problem = targets.problem(self.root / rel)
            if problem is None:
                continue
            if problem == "missing":
                out.append(f"target {rel} is missing")
            elif problem == targets.NO_RECORD:
                out.append(f"target {rel} was not placed by modelmake ({problem})")
            else:
                out.append(f"target {rel} was damaged or edited on disk: {problem}")
        return out

    def _any_target(self, spec: Step) -> bool:
        return any((self.root / rel).exists() for rel in spec.outputs())

    def _done_note(self, record: dict, res: Resolution) -> str:
        how = "built" if record.get("built") else "restored from the store"
        took = record.get("build_seconds")
        took = f", originally built in {took:.1f} s" if isinstance(took, (int, float)) and not record.get("built") \
            else f" in {took:.1f} s" if isinstance(took, (int, float)) else ""
        key = f"key {res.keys[0][:12]}, " if len(res.keys) == 1 else ""
        return f"{key}{how}{took} on {record.get('finished', '?')}; targets intact"

    def _judge_search(self, spec: SearchStep) -> Verdict:
        """A search is up to date when every trial's evaluation is, its settings are those of its
        last run and its targets (search.json, the selected model, metrics, package) are intact."""
        v = Verdict(spec.task, spec.recipe, STALE)
        trials = {t.suffix: self.judge(self.producer[os.path.normpath(t.metrics)]) for t in spec.trials}
        never = [s for s, tv in trials.items() if tv.state == NEVER]
        if never:
            v.state = NEVER
            v.reasons = [f"{len(never)} of {len(trials)} trials not evaluated yet (first: {never[0]})"]
            return v
        record = records.read(spec, self.root)
        changes = setting_changes(record["settings"], spec.settings()) \
            if record is not None and isinstance(record.get("settings"), dict) else []
        pending = [f"trial {s} is {tv.state}" for s, tv in trials.items() if tv.state != UP_TO_DATE]
        problems = self._target_problems(spec)
        if record is None:
            v.reasons = ["never run here: a build judges the trials and selects one"]
        elif not changes and not pending and not problems:
            v.state = UP_TO_DATE
            try:
                chosen = json.loads((self.root / spec.out).read_bytes()).get("selected")
            except (OSError, ValueError):
                chosen = None
            v.reasons = [f"selected trial {chosen} of {len(trials)}" if chosen else f"judged {len(trials)} trials"]
            if not spec.planned:
                v.reasons.append("a tpe search: it asks Optuna again for its later trials when it runs")
            return v
        else:
            v.reasons = changes + pending[:5] + problems
        v.state = RESTORABLE if not changes and all(tv.state in (UP_TO_DATE, RESTORABLE) for tv in trials.values()) \
            and record is not None else STALE
        return v

    def _judge_optimize(self, spec: PublishStep) -> Verdict:
        """The final model published at artifacts/<recipe>/model.onnx: a copy of the last step's."""
        name = spec.task
        v = Verdict(name, spec.recipe, STALE)
        if not spec.targets and spec.needs:   # a search: its model is the selected trial's
            up = self.judge(spec.needs[0])
            v.state, v.reasons = up.state, [f"follows {spec.needs[0]}"]
            return v
        maker = self.producer.get(os.path.normpath(spec.model))
        up = self.judge(maker) if maker else None
        problems = self._target_problems(spec)
        if up is not None and up.state == NEVER:
            v.state, v.reasons = NEVER, [f"the final model is published once {maker} is built"]
            return v
        if up is not None and up.state != UP_TO_DATE:
            again = "rebuilt" if up.state == STALE else "restored"
            v.state, v.reasons = up.state, problems + [f"the final model is copied again after {maker} is {again}"]
            return v
        if not problems and all(self._same_file(self.root / t, self.root / spec.model) for t in spec.targets):
            v.state = UP_TO_DATE
            v.reasons = [f"{', '.join(spec.targets)} is the model of {maker}"]
            return v
        v.state = RESTORABLE
        v.reasons = problems or [f"{', '.join(spec.targets)} differs from the model of {maker}"]
        v.reasons.append(f"a build copies it from {spec.model}")
        return v

    @staticmethod
    def _same_file(target: Path, folder: Path) -> bool:
        try:
            entry = digest.read_manifest(folder)["files"][target.name]
            return target.stat().st_size == entry["size"] and digest.file_digest(target) == entry["xxh3"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    # -- selection
    def names(self) -> list[str]:
        return list(self.specs)

    def recipes(self) -> list[str]:
        return sorted({self.recipe_of(n) for n in self.specs})

    def select(self, what: str) -> list[str] | None:
        """Tasks named by `what`: a task name, a recipe (all its tasks) or optimize:<recipe>."""
        if what in self.specs and not isinstance(self.specs[what], PublishStep):
            return [what]
        recipe = what.removeprefix("optimize:")
        tasks = [n for n in self.specs if self.recipe_of(n) == recipe]
        return tasks or None

    def suggest(self, what: str) -> list[str]:
        """The closest names (several only when about as close as each other)."""
        scored = sorted(((difflib.SequenceMatcher(None, what, n).ratio(), n) for n in self.names() + self.recipes()),
                        reverse=True)
        return [n for r, n in scored[:3] if r >= 0.6 and r >= scored[0][0] - 0.05]


# ---------------------------------------------------------------- output
def _paint(state: str, text: str, color: bool) -> str:
    """`text` in the state's colour on a terminal (rich renders the escape codes), plain otherwise."""
    if not color:
        return text
    from rich.console import Console
    from rich.text import Text

    console = Console(force_terminal=True, color_system="standard", width=10_000)
    with console.capture() as captured:
        console.print(Text(text, style=_STYLES[state]), end="")
    return captured.get()


def _use_color(stream) -> bool:
    from modelmake.core.progress import interactive
    return interactive(stream) and not os.environ.get("NO_COLOR")


def summary(verdicts: list[Verdict]) -> dict[str, int]:
    return {s: sum(v.state == s for v in verdicts) for s in STATES if any(v.state == s for v in verdicts)}


def _summary_line(counts: dict[str, int]) -> str:
    total = sum(counts.values())
    return f"{total} task{'s' if total != 1 else ''}: " + ", ".join(f"{n} {s}" for s, n in counts.items())


def print_status(verdicts: list[Verdict], out=None) -> None:
    out = out or sys.stdout
    if not verdicts:
        print("no recipes in recipes/", file=out)
        return
    color = _use_color(out)
    width = max((len(v.task) for v in verdicts), default=0)
    by_recipe: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_recipe.setdefault(v.recipe, []).append(v)
    for recipe, group in by_recipe.items():
        counts = summary(group)
        print(f"{recipe}  ({', '.join(f'{n} {s}' for s, n in counts.items())})", file=out)
        for v in group:
            note = v.reasons[0] if v.state != UP_TO_DATE and v.reasons else f"(files in the {v.files})" if v.files else ""
            state = _paint(v.state, f"{v.state:<11}", color)
            print(f"  {state}  {v.task:<{width}}  {note}".rstrip(), file=out)
    print(_summary_line(summary(verdicts)), file=out)
    if any(v.state != UP_TO_DATE for v in verdicts):
        print("`modelmake why <task or recipe>` says why", file=out)


def print_why(verdicts: list[Verdict], out=None) -> None:
    out = out or sys.stdout
    color = _use_color(out)
    for v in verdicts:
        since = f" (compared with its last build here, {v.last_run})" if v.last_run and v.state != UP_TO_DATE else ""
        print(f"{v.task}: {_paint(v.state, v.shown_state, color)}{since}", file=out)
        for reason in v.reasons:
            print(f"  - {reason}", file=out)


# ---------------------------------------------------------------- command
def main(command: str, argv: list[str]) -> int:
    if command == "status":
        ap = argparse.ArgumentParser(prog="modelmake status", description=(
            "every recipe's tasks: up to date / restorable (the store has the result) / stale / never built; "
            "nothing is built"))
        ap.add_argument("recipes", nargs="*", help="only these recipes (default: all)")
    else:
        ap = argparse.ArgumentParser(prog="modelmake why", description=(
            "why a task (pass:<recipe>/<step>, eval:<recipe>, ...) or every task of a recipe is or is "
            "not up to date; nothing is built"))
        ap.add_argument("target", help="a task name or a recipe name")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)

    with contextlib.redirect_stdout(sys.stderr):  # what the remote says (a warning, a download) is not the answer
        ex = Explainer(Path.cwd())
    wanted = [args.target] if command == "why" else args.recipes
    names: list[str] = []
    for what in wanted:
        found = ex.select(what)
        if found is None:
            close = ex.suggest(what)
            hint = f" (did you mean {', '.join(close)}?)" if close else \
                f" (recipes: {', '.join(ex.recipes())})" if ex.recipes() else " (recipes/ has no recipes)"
            print(f"error: no task or recipe named {what!r}{hint}", file=sys.stderr)
            return 2
        names += [n for n in found if n not in names]
    verdicts = [ex.verdicts[n] for n in (names or ex.names())]
    try:
        _print(command, verdicts, args.json)
    except BrokenPipeError:  # `modelmake status | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _print(command: str, verdicts: list[Verdict], as_json: bool) -> None:
    if as_json:
        print(json.dumps({"tasks": [v.as_json() for v in verdicts], "summary": summary(verdicts)}, indent=1))
    elif command == "status":
        print_status(verdicts)
    else:
        print_why(verdicts)

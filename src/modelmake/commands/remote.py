"""`modelmake remote status|clean`, `modelmake push`, `modelmake pull`: the shared remote store by hand.

Builds use the remote by themselves (read-through and write-back, store/local.py). These commands
work on the current keys of the project's recipes, resolved without building (build/resolve.py;
a result missing here is resolved from the remote's entry):
- `remote status [recipe ...] [--json]`: each step's result is local and remote, local only,
  remote only (a build downloads it), missing (a build computes it) or unknown (its inputs are
  built nowhere yet);
- `push [recipe ...]`: upload the current results this store holds, and the measurements their
  evaluations used (from the build records), that the remote lacks;
- `pull [recipe ...]`: download every current result the remote holds into the local store, and
  fill the step folders a build left as stubs (their files in the remote) in artifacts/;
- `remote clean [--dry-run] [--older-than DAYS]`: remove results no current recipe uses and older
  than DAYS, then what nothing lists (store/remote_gc.py). `modelmake store gc` never touches the remote.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from modelmake.build import records
from modelmake.build.steps import SearchStep
from modelmake.build.compile import load_steps
from modelmake.build.resolve import Resolution, resolve
from modelmake.commands.store import live_keys
from modelmake.store import Store
from modelmake.store.remote import RemoteError
from modelmake.store.remote_entry import ac_key

BOTH, LOCAL, REMOTE, MISSING, UNKNOWN = "local+remote", "local only", "remote only", "missing", "unknown"
STATES = (BOTH, LOCAL, REMOTE, MISSING, UNKNOWN)


class _Stop(Exception):
    """One line for the user, and the exit status."""

    def __init__(self, line: str, status: int):
        super().__init__(line)
        self.status = status


class _Session:
    """The project, its store with the remote, and the current keys of the chosen recipes."""

    def __init__(self, recipes: list[str]):
        self.project, steps = load_steps(Path.cwd())
        if self.project.remote is None:
            raise _Stop("error: no remote configured: set MODELMAKE_REMOTE=<url> or [tool.modelmake] "
                        "remote = \"<url>\" in pyproject.toml", 2)
        self.store = Store(self.project.store, remote=self.project.remote)
        self.remote = self.store.remote
        self.remote.warn = False  # a failing remote is this command's error, said once at the end
        self._held: dict[str, bool] = {}
        self.specs = {s.task: s for s in steps}
        known = sorted({s.recipe for s in steps})
        for r in recipes:
            if r not in known:
                raise _Stop(f"error: no recipe named {r!r} (recipes: {', '.join(known) or 'none'})", 2)
        self.resolved = resolve(self.project, steps, self.store)
        self.tasks = [t for t in self.resolved if not recipes or self.specs[t].recipe in recipes]
        self.check()

    def check(self) -> None:
        if self.remote.down:
            raise _Stop(f"error: remote {self.remote.shown}: {self.remote.down}", 1)

    def holds(self, key: str) -> bool:
        from modelmake.store.remote_transfer import holds

        if key not in self._held:
            self._held[key] = bool(holds(self.remote, key))
        return self._held[key]


# ---------------------------------------------------------------- remote status
def _state(s: _Session, res: Resolution) -> tuple[str, list[dict]]:
    if not res.keys:
        return UNKNOWN, []
    rows = [{"key": k, "local": s.store.has(k), "remote": s.holds(k)} for k in res.keys]
    local, remote = all(r["local"] for r in rows), all(r["remote"] for r in rows)
    if local:
        return (BOTH if remote else LOCAL), rows
    return (REMOTE if all(r["local"] or r["remote"] for r in rows) else MISSING), rows


def status(s: _Session, as_json: bool) -> int:
    out = []
    for task in s.tasks:
        res = s.resolved[task]
        state, rows = _state(s, res)
        out.append({"task": task, "recipe": s.specs[task].recipe, "state": state, "keys": rows,
                    "reason": res.unknown if state == UNKNOWN else None})
    s.check()
    counts = {st: sum(1 for o in out if o["state"] == st) for st in STATES}
    if as_json:
        print(json.dumps({"remote": s.remote.shown, "tasks": out, "summary": counts}, indent=1))
        return 0
    width = max((len(o["task"]) for o in out), default=0)
    recipe = None
    for o in out:
        if o["recipe"] != recipe:
            recipe = o["recipe"]
            print(recipe)
        note = {LOCAL: "`modelmake push` uploads it", REMOTE: "a build restores it, `modelmake pull` downloads it",
                MISSING: "a build computes it", UNKNOWN: o["reason"]}.get(o["state"], "")
        print(f"  {o['state']:<12}  {o['task']:<{width}}  {note}".rstrip())
    said = ", ".join(f"{n} {st}" for st, n in counts.items() if n)
    print(f"{len(out)} steps: {said or 'none'} (remote {s.remote.shown})")
    return 0


# ---------------------------------------------------------------- push and pull
def _labelled_keys(s: _Session, with_records: bool) -> list[tuple[str, str]]:
    """(key, label) of every current result of the chosen recipes, upstream first; with_records
    adds the keys their last runs used (an evaluation's measurements)."""
    out: dict[str, str] = {}
    for task in s.tasks:
        res = s.resolved[task]
        for what, key in (res.items.items() if res.kind == "source" else [(None, k) for k in res.keys]):
            out.setdefault(key, f"{task} {what}" if what else task)
        record = records.read(s.specs[task], s.project.root) if with_records else None
        for key in (record or {}).get("keys") or []:
            if isinstance(key, str):
                out.setdefault(key, f"{task} ({key[:12]})")
    if with_records:   # a search's finalist timing and its selected trial's package
        chosen = {s.specs[t].recipe for t in s.tasks}
        for spec in s.specs.values():
            if isinstance(spec, SearchStep) and spec.recipe in chosen:
                for step in spec.recorded():
                    for key in (records.read(step, s.project.root) or {}).get("keys") or []:
                        if isinstance(key, str):
                            out.setdefault(key, f"{step.task} ({key[:12]})")
    return list(out.items())


def push(s: _Session) -> int:
    if not s.project.remote.upload:
        raise _Stop("error: uploads are switched off (MODELMAKE_REMOTE_UPLOAD=0 or remote_upload = false)", 2)
    pushed = there = absent = 0
    for key, label in _labelled_keys(s, with_records=True):
        if s.holds(key):  # a stub here counts too: its files are there
            there += 1
        elif not s.store.has(key):
            absent += 1
        elif s.store.upload(key, label):
            pushed += 1
        if s.remote.down or s.remote.uploads_off:
            raise _Stop(f"error: remote {s.remote.shown}: {s.remote.down or s.remote.uploads_off}", 1)
    print(f"pushed {pushed} results to {s.remote.shown}; {there} already there; "
          f"{absent} not in the local store (a build makes them)")
    return 0


def pull(s: _Session) -> int:
    pulled = here = absent = 0
    unknown = [t for t in s.tasks if not s.resolved[t].keys]
    for key, label in _labelled_keys(s, with_records=False):
        if s.store.has(key):
            here += 1
        elif s.store.restore(key, label) is not None:
            pulled += 1
        else:
            absent += 1
        s.check()
    filled, unfilled = _fill_stubs(s)
    s.check()
    print(f"pulled {pulled} results from {s.remote.shown}; {here} already here; "
          f"{absent + len(unknown)} in neither store (a build computes them)"
          + (f"; filled {filled} step folders in artifacts/" if filled else ""))
    for line in unfilled:
        print(line, file=sys.stderr)
    return 1 if unfilled else 0


def _fill_stubs(s: _Session) -> tuple[int, list[str]]:
    """Replace the stub folders of the chosen recipes' steps in artifacts/ (a manifest and a
    marker, their files in the remote) by full copies, as a build that downloads everything would
    have placed them. Under the project lock: no build writes artifacts/ meanwhile."""
    from modelmake.build import lock, targets
    from modelmake.core import digest
    from modelmake.store.local import Unavailable

    stubs = [(task, s.project.root / out) for task in s.tasks for out in s.specs[task].outputs()
             if targets.stub_of(s.project.root / out) is not None]
    if not stubs:
        return 0, []
    filled, unfilled = 0, []
    held = lock.acquire_project_lock(s.project.artifacts)
    try:
        for task, path in stubs:
            marker = targets.stub_of(path)
            if marker is None or targets.problem(path) is not None:
                continue  # changed meanwhile, or damaged: the next build deals with it
            try:
                obj = s.store.materialize(marker["key"], task, expect=(path / digest.MANIFEST).read_bytes())
            except Unavailable as e:
                unfilled.append(f"error: {task}: {s.project.rel(path)} stays a stub: {e}")
                continue
            targets.place_folder(obj, path)
            filled += 1
    finally:
        held.close()
    return filled, unfilled


# ---------------------------------------------------------------- remote clean
def clean(s: _Session, dry_run: bool, days: float) -> int:
    from modelmake.store.remote_gc import collect

    live = {k for res in s.resolved.values() for k in res.keys} | live_keys(s.project.root)
    try:
        got = collect(s.remote, {ac_key(k) for k in live}, days * 86400, dry_run=dry_run)
    except RemoteError as e:
        raise _Stop(f"error: remote {s.remote.shown}: {e.reason}", 1) from None
    verb = "would remove" if dry_run else "removed"
    print(f"{verb} {len(got.dead_entries)} of {got.entries} results and {len(got.dead_blobs)} of {got.blobs} "
          f"blobs ({got.freed / 1e6:.1f} MB) from {s.remote.shown}"
          + (f" and {len(got.leftovers)} temp files of killed uploads" if got.leftovers else "")
          + f"; kept: results current recipes use or newer than {days:g} days")
    return 0


def main(command: str, argv: list[str]) -> int:
    if command == "remote":
        ap = argparse.ArgumentParser(prog="modelmake remote", description="the shared remote store")
        sub = ap.add_subparsers(dest="command", required=True)
        st = sub.add_parser("status", help="which current results are local, remote, missing")
        st.add_argument("recipes", nargs="*", help="only these recipes (default: all)")
        st.add_argument("--json", action="store_true", help="machine-readable output")
        cl = sub.add_parser("clean", help="remove results no current recipe uses, older than --older-than")
        cl.add_argument("--dry-run", action="store_true", help="only report what would be removed")
        cl.add_argument("--older-than", type=float, default=30.0, metavar="DAYS",
                        help="keep results written less than DAYS ago (default 30)")
    else:
        ap = argparse.ArgumentParser(prog=f"modelmake {command}", description=(
            "upload the current results of this store that the remote lacks" if command == "push" else
            "download every current result the remote holds into the local store"))
        ap.add_argument("recipes", nargs="*", help="only these recipes (default: all)")
    args = ap.parse_args(argv)
    try:
        s = _Session(getattr(args, "recipes", []))
        if command == "push":
            return push(s)
        if command == "pull":
            return pull(s)
        if args.command == "status":
            return status(s, args.json)
        return clean(s, args.dry_run, args.older_than)
    except _Stop as e:
        print(str(e), file=sys.stderr)
        return e.status

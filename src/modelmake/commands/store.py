"""`modelmake store verify` and `modelmake store gc`: keep a store healthy and bounded.

gc keeps what the project's current recipes reference: the keys each task last used, recorded
in artifacts/<recipe>/records/ when the task ran. With a store shared between projects, run gc where
all the recipes that use it are (or not at all): it only knows this project's references.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from modelmake.build import records
from modelmake.build.compile import compile_steps
from modelmake.build.project import find_project
from modelmake.store import Store


def live_keys(root: Path) -> set[str]:
    project = find_project(root)
    live: set[str] = set()
    for step in compile_steps(project):
        for s in step.recorded():
            record = records.read(s, project.root)
            if record and isinstance(record.get("keys"), list):
                live.update(record["keys"])
    return live


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(command: str, argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="modelmake store", description="inspect and maintain the build store")
    sub = ap.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="check every object against its manifest")
    v.add_argument("--discard", action="store_true", help="remove damaged objects (they are rebuilt when needed)")
    g = sub.add_parser("gc", help="remove objects no current recipe references")
    g.add_argument("--dry-run", action="store_true", help="only report what would be removed")
    args = ap.parse_args(argv)

    project = find_project(Path.cwd())
    store = Store(project.store)
    if args.command == "verify":
        keys = store.keys()
        damaged = store.verify_all(discard=args.discard)
        for key, problem in damaged.items():
            print(f"damaged {key}: {problem}" + (" (discarded)" if args.discard else ""))
        print(f"{len(keys)} objects verified in {project.store}, {len(damaged)} damaged")
        return 1 if damaged and not args.discard else 0
    live = live_keys(project.root)
    total = len(store.keys())
    dead, freed = store.gc(live, dry_run=args.dry_run)
    verb, freeing = ("would remove", "would free") if args.dry_run else ("removed", "freed")
    print(f"{verb} {len(dead)} of {total} objects, {freeing} {_mb(freed)} "
          f"({len(live)} objects referenced by current recipes)")
    return 0

"""Two versions of modelmake on the same built project, interleaved; prints the table quoted in README.

    python benchmarks/incremental.py --workdir A        # with version a's Python (its checkout's venv)
    python benchmarks/incremental.py --workdir B        # with version b's Python
    python benchmarks/versions.py --a PYTHON_A A --b PYTHON_B B [--repeats 9]

Each project is one that benchmarks/incremental.py built and kept (--workdir). The rows that take
a fraction of a second move with whatever else the machine does, so they are timed in turns
(a, b, a, b, ...) in one run, and the medians are compared:
- no-op rebuild (`doit` with nothing to do),
- rm artifacts + doit DB, keep the store, rebuild (every step restored),
- an edit and its revert of the quantize step (`reduce_range = true` added, then removed): after
  the first round both variants are in the store, so every build restores (the first round is
  left out).
Builds run with Python's bytecode cache (PYTHONDONTWRITEBYTECODE unset), as a user's would.
Where valgrind is installed, the no-op build is also counted in instructions
(`valgrind --tool=callgrind`), which the machine's load does not move: the figure to trust for
differences of a few milliseconds.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from incremental import ENV, RECIPE, doit  # this folder's incremental.py builds the projects


def build(python: str, project: Path) -> float:
    """Seconds a build takes; a missed goal (exit 1, reported, nothing packaged) counts."""
    return doit(project, python=python, goals_may_fail=True)[0]


def instructions(python: str, project: Path) -> int | None:
    """Instructions a no-op build executes, counted by callgrind (None without valgrind)."""
    if shutil.which("valgrind") is None:
        return None
    proc = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", python, "-m", "doit"],
                          cwd=project, env=ENV, capture_output=True, text=True)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    return int(found.group(1)) if proc.returncode == 0 and found else None


def clear_artifacts(project: Path) -> None:
    for entry in (project / "artifacts").iterdir():
        if entry.name != ".store":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def toggle_edit(project: Path) -> None:
    recipe = project / "recipes" / f"{RECIPE}.toml"
    text = recipe.read_text()
    if "reduce_range = true\n" in text:
        text = text.replace("reduce_range = true\n", "")
    else:
        assert "per_channel = true\n" in text, f"{recipe}: expected the quantize step's per_channel = true"
        text = text.replace("per_channel = true\n", "per_channel = true\nreduce_range = true\n")
    recipe.write_text(text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", nargs=2, metavar=("PYTHON", "PROJECT"), required=True)
    ap.add_argument("--b", nargs=2, metavar=("PYTHON", "PROJECT"), required=True)
    ap.add_argument("--repeats", type=int, default=9)
    args = ap.parse_args()
    versions = {"a": (args.a[0], Path(args.a[1])), "b": (args.b[0], Path(args.b[1]))}
    for python, project in versions.values():
        build(python, project)  # up to date before anything is timed
    rows = {"no-op rebuild": {v: [] for v in versions}, "rm artifacts + doit DB, keep store": {v: [] for v in versions},
            "edit or revert of the quantize step (restored)": {v: [] for v in versions}}
    noop, restore, edit = rows.values()
    for i in range(args.repeats):
        for v, (python, project) in versions.items():
            noop[v].append(build(python, project))
        for v, (python, project) in versions.items():
            clear_artifacts(project)
            restore[v].append(build(python, project))
        for v, (python, project) in versions.items():
            toggle_edit(project)
            took = build(python, project)
            if i:  # the first edit builds the variant; from then on both are in the store
                edit[v].append(took)
    for python, project in versions.values():  # leave the recipe as it was
        if "reduce_range = true\n" in (project / "recipes" / f"{RECIPE}.toml").read_text():
            toggle_edit(project)
            build(python, project)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"\ndate: {time.strftime('%Y-%m-%d')}; machine: {cpu}, {os.cpu_count()} cores; a = {args.a[1]}, "
          f"b = {args.b[1]}; medians of {args.repeats} interleaved runs ({args.repeats - 1} for the edit)\n")
    print("| scenario | a | b | b / a |")
    print("| --- | ---: | ---: | ---: |")
    for name, times in rows.items():
        a, b = statistics.median(times["a"]), statistics.median(times["b"])
        print(f"| {name} | {a:.3f} s | {b:.3f} s | {b / a:.2f} |")
    counts = [instructions(python, project) for python, project in versions.values()]
    if None not in counts:
        a, b = counts
        print(f"| no-op rebuild, instructions (callgrind) | {a / 1e6:.1f} M | {b / 1e6:.1f} M | {b / a:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Incremental-build benchmark of the headline recipe; prints the tables quoted in README.

    python benchmarks/incremental.py [--workdir DIR] [--noop-repeats 5]

Builds recipes/bert-int8.toml in a scratch project (its own artifacts and store) and times, with
the real `doit` CLI: a cold build, a no-op rebuild (median of several), an edit of the
quantization config, the revert of that edit, and a rebuild from the store after deleting every
artifact and doit's DB (the CI case). Then it prints fp32 (baseline) vs int8 metrics.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPE = "bert-int8"
# Python caches compiled modules unless told not to; some sandboxes and CI images set
# PYTHONDONTWRITEBYTECODE=1, which makes every no-op compile modelmake's modules again (~0.08 s)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def doit(project: Path, *args: str, goals_may_fail: bool = False, python: str = sys.executable) -> tuple[float, str]:
    """Wall time and output of a build (with `python`'s modelmake); with `goals_may_fail`, a build
    that stops only because a goal is missed counts (its output names the goal), any other failure
    ends the benchmark."""
    t0 = time.perf_counter()
    proc = subprocess.run([python, "-m", "doit", *args], cwd=project, capture_output=True, text=True,
                          env=ENV)
    wall = time.perf_counter() - t0
    missed = goals_may_fail and re.search(r"^\s*FAILED goal .*$", proc.stdout + proc.stderr, re.M)
    if proc.returncode != 0 and not missed:
        sys.exit(f"doit {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout + (f"\nmissed: {missed.group(0).strip()}" if proc.returncode and missed else "")


def summary(out: str) -> str:
    built = [m.group(1).split("/")[-1] for m in re.finditer(r"^  pass:\S+?/(\S+): built", out, re.M)]
    restored = [m.group(1).split("/")[-1] for m in re.finditer(r"^  pass:\S+?/(\S+): restored", out, re.M)]
    ran = len(re.findall(r"^\[\d+/\d+\] \S+ \.\.\.$", out, re.M))  # "[3/9] <task> ..." when a task starts
    parts = [f"{ran} tasks ran"]
    if built:
        parts.append("built: " + ", ".join(built))
    if restored:
        parts.append("restored: " + ", ".join(restored))
    missed = re.search(r"^missed: FAILED goal (.*)$", out, re.M)
    if missed:  # the build stops there, as it should: exit 1, nothing packaged
        parts.append(f"the build fails its goal: {missed.group(1)}")
    return "; ".join(parts) if ran else "nothing ran"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="scratch project folder (default: a temp folder)")
    ap.add_argument("--noop-repeats", type=int, default=5)
    args = ap.parse_args()

    project = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-bench-"))
    if project.exists():
        shutil.rmtree(project)
    (project / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", project)
    shutil.copy(REPO / "recipes" / f"{RECIPE}.toml", project / "recipes")
    recipe = project / "recipes" / f"{RECIPE}.toml"
    target = f"optimize:{RECIPE}"
    rows = []

    wall, out = doit(project, target)
    rows.append(("cold build", wall, summary(out)))
    noops = [doit(project, target) for _ in range(args.noop_repeats)]
    rows.append((f"no-op rebuild (median of {len(noops)})", statistics.median(w for w, _ in noops), summary(noops[-1][1])))
    text = recipe.read_text()
    recipe.write_text(text.replace("per_channel = true", "per_channel = false"))
    wall, out = doit(project, target, goals_may_fail=True)
    rows.append(("edit quantize: per_channel = false", wall, summary(out)))
    recipe.write_text(text)
    wall, out = doit(project, target)
    rows.append(("revert the edit", wall, summary(out)))
    for p in (project / "artifacts").iterdir():
        if p.name != ".store":
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    wall, out = doit(project, target)
    rows.append(("rm artifacts + doit DB, keep store", wall, summary(out)))

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"date: {time.strftime('%Y-%m-%d')}\n")
    print("| scenario | wall time | what ran |")
    print("| --- | ---: | --- |")
    for name, wall, what in rows:
        print(f"| {name} | {wall:.2f} s | {what} |")

    m = json.loads((project / "artifacts" / RECIPE / "metrics.json").read_text())
    print("\n| metric | fp32 (export) | int8 (fused + dynamic int8) | change |")
    print("| --- | ---: | ---: | ---: |")
    for key, fmt in (("accuracy", "{:.4f}"), ("f1", "{:.4f}"), ("latency_ms.p50", "{:.2f}"),
                     ("latency_ms.p90", "{:.2f}"), ("latency_ms.p99", "{:.2f}"),
                     ("throughput_per_s", "{:.1f}"), ("size_mb", "{:.1f}")):
        if key in m:
            base, new = m[f"baseline.{key}"], m[key]
            change = f"{new / base:.2f}x" if key.startswith(("latency", "throughput", "size")) else f"{new - base:+.4f}"
            print(f"| {key} | {fmt.format(base)} | {fmt.format(new)} | {change} |")
    print(f"\nint8 speed-up at p50 (batch {1}, sequence 128): {m.get('speedup_x.latency_p50', float('nan')):.2f}x")
    if not args.workdir:
        shutil.rmtree(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())

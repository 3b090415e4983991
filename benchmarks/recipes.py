"""Every recipe side by side, measured in one run on one machine; prints the table quoted in README.

    python benchmarks/recipes.py [--workdir DIR] [--store DIR] [--rounds 30] [recipe ...]

1. Builds each recipe of recipes/ (or the ones named) with the real `doit` CLI in a scratch
   project. With a fresh store (the default) every build time is a cold one; recipes that share
   a prefix (the same fine-tuning) share its result, as they would for a user. Text-generation
   recipes (model.task = "text-generation": the smollm2 decoders) are left out, and refused when
   named: benchmarks/llm.py builds and times those, with llama.cpp beside them.
2. Quality and size come from each recipe's metrics.json (they do not depend on the host).
3. Latency and throughput of all final models are measured again here, *interleaved*: every
   round runs each model in turn, so load from other processes on a shared machine falls on all
   of them alike, and the medians compare. Each model runs with the session settings it would be
   deployed with (session-tune's, when it recorded some; else ONNX Runtime's defaults).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = "bert-fp32"
TEXT_GENERATION = "text-generation"   # decoders: benchmarks/llm.py times them


def build(project: Path, recipe: str, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", f"optimize:{recipe}"], cwd=project,
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"building {recipe} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall


def step_build_seconds(project: Path, recipe: str) -> float:
    """What the recipe costs from scratch: the original build time of each of its tasks, whether
    this run built it or restored it from a result another recipe built first."""
    total = 0.0
    for f in (project / "artifacts" / recipe / "records").glob("*.json"):
        rec = json.loads(f.read_text())
        total += rec.get("build_seconds") or (rec.get("seconds") if rec.get("built") else 0) or 0
    return total


def final_models(project: Path, recipes: list[str]) -> dict[str, tuple[Path, Path]]:
    """recipe -> (final model.onnx, tokenizer folder), as the build graph lays them out."""
    from modelmake.build.layout import layouts
    from modelmake.build.project import find_project
    from modelmake.inputs.recipe import load_recipes

    proj = find_project(project)
    lays = layouts(proj, load_recipes(proj.recipes_dir, proj.root))
    return {r: (project / lays[r].final / "model.onnx", project / lays[r].tokenizer) for r in recipes
            if (project / lays[r].final / "model.onnx").exists()}


def interleaved_latency(models: dict[str, tuple[Path, Path]], rounds: int, per_round: int,
                        sequence: int, throughput_batch: int) -> dict[str, dict]:
    from modelmake.runtime import batches, sessions, timing

    texts = ["a gripping, beautifully acted film that overstays its welcome by half an hour"]
    running, feeds, big = {}, {}, {}
    for name, (path, tok) in models.items():
        s = sessions.session(path, settings=sessions.tuned_settings(path))
        running[name] = s
        feeds[name] = sessions.feeds(s, batches.fixed(tok, texts, 1, sequence))
        big[name] = sessions.feeds(s, batches.fixed(tok, texts, throughput_batch, sequence))
        timing.warm(s, feeds[name], 10)  # warm-up: first runs allocate and pick kernels
        timing.warm(s, big[name], 1)
    times = {n: [] for n in models}
    batch_times = {n: [] for n in models}
    for r in range(rounds):
        order = list(models) if r % 2 == 0 else list(reversed(models))  # no model always goes first
        for name in order:
            times[name] += timing.timed(running[name], feeds[name], per_round)
            batch_times[name].append(timing.elapsed(running[name], big[name], 1))
    out = {}
    for name in models:
        p = timing.stats(times[name], ("p50", "p90"))
        out[name] = {**p, "throughput": throughput_batch / statistics.median(batch_times[name])}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="recipes to compare (default: all in recipes/ but text-generation ones)")
    ap.add_argument("--workdir", type=Path, help="scratch project folder (default: a temp folder, removed after)")
    ap.add_argument("--store", type=Path, help="store to use (default: a fresh one in the scratch project: cold builds)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=5, help="batch-1 runs per model per round")
    ap.add_argument("--sequence", type=int, default=128)
    ap.add_argument("--throughput-batch", type=int, default=32)
    args = ap.parse_args()

    from modelmake.inputs.recipe import load_recipes

    tasks = {name: r.task for name, r in load_recipes(REPO / "recipes", REPO).items()}
    decoders = [r for r in args.recipes if tasks.get(r) == TEXT_GENERATION]
    if decoders:
        sys.exit(f"{', '.join(decoders)}: text-generation recipes are timed by benchmarks/llm.py, not here")
    recipes = args.recipes or sorted(name for name, task in tasks.items() if task != TEXT_GENERATION)
    project = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-recipes-"))
    (project / "recipes").mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dodo.py", project)
    for f in (REPO / "recipes").glob("*.toml"):
        shutil.copy(f, project / "recipes")
    env = dict(os.environ)
    if args.store:
        env["MODELMAKE_STORE"] = str(args.store.resolve())
    else:
        env.pop("MODELMAKE_STORE", None)

    t_all = time.perf_counter()
    wall = {}
    for r in recipes:
        print(f"building {r} ...", file=sys.stderr, flush=True)
        wall[r] = build(project, r, env)
    total_wall = time.perf_counter() - t_all

    metrics = {r: json.loads((project / "artifacts" / r / "metrics.json").read_text())
               for r in recipes if (project / "artifacts" / r / "metrics.json").exists()}
    models = final_models(project, recipes)
    print(f"timing {len(models)} models interleaved ({args.rounds} rounds) ...", file=sys.stderr, flush=True)
    lat = interleaved_latency(models, args.rounds, args.per_round, args.sequence, args.throughput_batch)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\nmachine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"date: {time.strftime('%Y-%m-%d')}; all recipes built in {total_wall:.0f} s "
          f"({'shared store ' + str(args.store) if args.store else 'fresh store: cold builds'})\n")
    base = lat.get(BASELINE)
    print("| recipe | accuracy | F1 | p50 ms | p90 ms | vs fp32 p50 | throughput/s | size MB | build s | wall s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in recipes:
        m, t = metrics.get(r, {}), lat.get(r)

        def num(v, fmt):
            return fmt.format(v) if isinstance(v, (int, float)) else "–"
        speed = f"{base['p50'] / t['p50']:.2f}x" if base and t else "–"
        print(f"| {r} | {num(m.get('accuracy'), '{:.4f}')} | {num(m.get('f1'), '{:.4f}')} | "
              f"{num(t and t['p50'], '{:.2f}')} | {num(t and t['p90'], '{:.2f}')} | {speed} | "
              f"{num(t and t['throughput'], '{:.1f}')} | {num(m.get('size_mb'), '{:.1f}')} | "
              f"{step_build_seconds(project, r):.0f} | {wall[r]:.0f} |")
    print(f"\nlatency: batch 1 x {args.sequence} tokens, {args.rounds} interleaved rounds of "
          f"{args.per_round} runs per model; throughput: batch {args.throughput_batch}, median of rounds.\n"
          "build s: the recipe's cost from scratch (each task's original build time, shared ones "
          "included); wall s: this run, where results another recipe built first are restored.")
    if not args.workdir:
        shutil.rmtree(project)
    return 0


if __name__ == "__main__":
    sys.exit(main())

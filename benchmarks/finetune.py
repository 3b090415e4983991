"""Fine-tuning with and without length-grouped batches: wall time and accuracy, per seed; prints
the table quoted in docs/recipes.md ("Fine-tuning speed").

    python benchmarks/finetune.py [--workdir DIR] [--seeds 0,1,2] [--groups 0,10,50] [--recipe bert-int8]

bert-int8's fine-tuning settings (MiniLM, 4,000 Rotten Tomatoes reviews, one epoch, max_length 64,
batch 32, learning rate 1e-4) trained in this process by the pass's own `train`, once per seed and
batching: `0` = fine-tuning as it was before (shuffled batches, the default foreach AdamW),
`N` = as it is now, length-grouped in groups of N batches (the pass uses finetune.GROUP) with the
fused AdamW kernel. Accuracy is the fp32
model's on the recipe's test split, batches of 64 sorted by length. The model and data come from
`doit source:bert-int8` in a scratch copy of the project (the pinned wheels).
"""
from __future__ import annotations

import argparse
import contextlib
import io
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
RECIPE = "bert-int8"


def source(work: Path, recipe: str) -> Path:
    """A scratch project holding the recipe's fetched model and data."""
    project = work / "proj"
    if not (project / "artifacts" / recipe / "steps" / "source").is_dir():
        (project / "recipes").mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "dodo.py", project)
        shutil.copy(REPO / "recipes" / f"{recipe}.toml", project / "recipes")
        env = {**os.environ, "MODELMAKE_STORE": str(work / "store")}
        proc = subprocess.run([sys.executable, "-m", "doit", f"source:{recipe}"], cwd=project, env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"doit source:{recipe} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return project


def accuracy(model, tok, test: list[tuple[str, int]]) -> float:
    import torch

    model.eval()
    correct = 0
    order = sorted(range(len(test)), key=lambda i: len(test[i][0]))
    with torch.no_grad():
        for s in range(0, len(order), 64):
            idx = order[s:s + 64]
            enc = tok([test[i][0] for i in idx], truncation=True, max_length=128, padding=True, return_tensors="pt")
            pred = model(**enc).logits.argmax(-1).tolist()
            correct += sum(p == test[i][1] for p, i in zip(pred, idx))
    return correct / len(test)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="scratch folder, reused between runs (default: a temp folder)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--groups", default="0,10,50",
                    help="0 = as before (shuffled, foreach AdamW); s = shuffled with fused AdamW "
                         "(group_by_length = false now); N = length groups of N batches")
    ap.add_argument("--recipe", default=RECIPE, help=f"whose finetune step to run (default {RECIPE})")
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-finetune-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    project = source(work, args.recipe)
    os.chdir(project)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from modelmake.build.compile import load_steps
    from modelmake.inputs.data import load_dataset_folder
    from modelmake.passes import finetune, get

    _, steps = load_steps(project)
    step = next(s for s in steps if s.recipe == args.recipe and s.kind == "pass" and s.type == "finetune")
    use = next(iter(step.datasets.values()))
    data = load_dataset_folder(Path(use.dir), use.spec)
    model_dir = Path(step.input)
    c = step.config
    results: dict[int | str, list[tuple[int, float, float]]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for group in [g if g == "s" else int(g) for g in args.groups.split(",")]:   # interleaved
            finetune.FUSED_ADAMW = group != 0
            if isinstance(group, int) and group:
                finetune.GROUP = group
            cfg = get("finetune").config_class.make(**{**c, "seed": seed,
                                                       "group_by_length": isinstance(group, int) and group > 0})
            rows = finetune.select_rows(data.train, cfg.max_samples, cfg.seed)
            torch.manual_seed(seed)
            model = AutoModelForSequenceClassification.from_pretrained(
                model_dir, num_labels=2, attn_implementation="eager", ignore_mismatched_sizes=True)
            tok = AutoTokenizer.from_pretrained(model_dir)
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                if cfg.method == "lora":   # as the pass does: adapters, trained, merged
                    model = finetune._with_adapters(model, cfg, lambda line: None)
                finetune.train(model, tok, rows, cfg)
                if cfg.method == "lora":
                    model = finetune._merged(model)
            seconds = time.perf_counter() - t0
            acc = accuracy(model, tok, data.test)
            results.setdefault(group, []).append((seed, seconds, acc))
            print(f"groups of {group or '-'} seed {seed}: {seconds:.1f} s, accuracy {acc:.4f}", file=sys.stderr)

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\n{args.recipe}'s fine-tuning; date: {time.strftime('%Y-%m-%d')}; {cpu}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}; "
          f"{len(rows)} rows, {c['epochs']} epoch, max_length {c['max_length']}, batch {c['batch_size']}\n")
    base = statistics.median(s for _, s, _ in results.get(0, [(0, float('nan'), 0)]))
    print("| batching | seconds (median) | speed-up | accuracy per seed | mean accuracy |")
    print("| --- | ---: | ---: | --- | ---: |")
    for group, runs in results.items():
        secs = statistics.median(s for _, s, _ in runs)
        per_seed = ", ".join(f"{a:.4f} (seed {seed})" for seed, _, a in runs)
        label = ("as before: shuffled batches, foreach AdamW" if group == 0
                 else "shuffled batches (group_by_length = false), fused AdamW" if group == "s"
                 else f"length-grouped in groups of {group} batches, fused AdamW")
        print(f"| {label} | {secs:.1f} | {base / secs:.2f}x | {per_seed} | "
              f"{statistics.mean(a for _, _, a in runs):.4f} |")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

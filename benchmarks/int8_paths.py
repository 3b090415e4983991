"""Quality goals of built int8 recipes under both arithmetics of ONNX Runtime's x86 int8 kernels.

    python benchmarks/int8_paths.py [--project DIR] [recipe ...]

ORT's uint8 x int8 kernels sum products exactly on AVX-512 VNNI, AVX-VNNI and AMX hosts and in
saturating int16 pairs on AVX2-only ones (docs/quantization.md, "int8 arithmetic differs between
CPUs"), so a recipe can meet its quality goal on one kind of build machine and fail it on the
other. This measures both on one host. Each recipe's final model is evaluated on the recipe's
test split exactly as its eval step does (the same rows, batching and metric) by ONNX Runtime on
this CPU, and by ONNX Runtime under QEMU's emulation of an AVX2 CPU (tests/avx2.sh; Debian:
`apt-get install qemu-user`), then judged against the recipe's quality goals (`max_drop`,
`at_least`...). On a host whose own kernels are the AVX2 ones, the exact arithmetic comes from
tests/int8ref.py's float64 reference of it instead (ORT reproduces it bit for bit), which is
slow: about ten minutes per recipe (under emulation a recipe takes five to seven minutes on 2
cores). Speed goals cannot be judged either way: timings need the real CPU.

Build the recipes first (`doit optimize:<recipe>`); the default is every recipe of the project
whose final model has uint8 x int8 products. Prints one table row per recipe.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the host's arithmetic and the reference of both live with the int8 tests that check them
sys.path.insert(0, str(ROOT / "tests"))


def _verdict(goals: list[dict], got: dict, base: dict | None, custom: list[dict]) -> str:
    """The recipe's goals on the metrics `got` holds (quality: speed and size are not measured
    here), judged as the eval step judges them."""
    from modelmake.metrics import goals as goal_check

    mine = [g for g in goals if g["metric"] in got]
    if not mine:
        return "-"
    metrics = dict(got) | {f"baseline.{k}": v for k, v in (base or {}).items()}
    verdict = goal_check.check(mine, metrics, custom)
    return "; ".join(("ok: " if r["passed"] else "FAILS: ") + goal_check.describe(r) for r in verdict["results"])


class _Recipe:
    """One built recipe's eval step: its models, test rows and settings."""

    def __init__(self, project, step):
        from modelmake.inputs.data import evaluation_rows

        self.name = step.task.split(":", 1)[1]
        self.e = step.evaluation()
        root = project.root
        self.model = root / step.model / "model.onnx"
        if not self.model.exists():
            raise SystemExit(f"int8_paths: {self.name} is not built ({self.model.parent}): doit optimize:{self.name}")
        self.tokenizer = root / step.tokenizer
        self.baseline = ((root / step.baseline / "model.onnx", root / (step.baseline_tokenizer or step.tokenizer))
                         if step.baseline else None)
        self.texts, self.labels = evaluation_rows(root / step.data_dir, step.data, self.e.evaluate["max_samples"])
        self.similarity = "similarity" in self.e.evaluate["metrics"]
        self.metric = "similarity.cosine_p5" if self.similarity else "accuracy"

    def rows(self, model: Path, tokenizer: Path | None = None):
        """One row of `model`'s outputs per text, batched as the eval step batches them."""
        from modelmake.metrics import evaluate

        ev = self.e.evaluate
        return evaluate.model_outputs(model, tokenizer or self.tokenizer, self.texts, self.e.model_task,
                                      ev["batch_size"], ev["max_length"])

    def similarity_of(self, rows, baseline_rows) -> dict:
        from modelmake.metrics import evaluate

        return evaluate.cosine_stats(rows, baseline_rows, classifier=self.e.model_task == "text-classification")

    def quality(self, model: Path, baseline_rows=None) -> dict:
        """The quality metrics the eval step computes for `model`: accuracy and F1, or the
        similarity of its outputs with the baseline's outputs `baseline_rows`."""
        from modelmake.metrics import evaluate

        if self.similarity:
            return self.similarity_of(self.rows(model), baseline_rows)
        ev = self.e.evaluate
        return evaluate.measure_quality(model, self.tokenizer, self.texts, self.labels, ev["batch_size"], ev["max_length"])

    def base(self) -> dict | None:
        """The baseline's own quality (relative goals compare with it); float: the same on every host."""
        if self.baseline is None or self.similarity:
            return None
        return self.quality(self.baseline[0])


def _recipes(project_dir: Path, names: list[str]) -> dict:
    """The named recipes, or every built one whose final model has uint8 x int8 products."""
    from modelmake.build.compile import load_steps
    from modelmake.build.steps import EvalStep

    project, steps = load_steps(project_dir)
    evals = {s.task.split(":", 1)[1]: s for s in steps if isinstance(s, EvalStep) and not s.tolerant}
    unknown = [r for r in names if r not in evals]
    if unknown:
        raise SystemExit(f"int8_paths: no evaluated recipe named {', '.join(unknown)} in {project.recipes_dir}")
    if names:
        return {n: _Recipe(project, evals[n]) for n in names}
    chosen = {}
    for n, step in sorted(evals.items()):
        if step.model_task == "text-generation":   # weight-only decoders: no uint8 x int8 product
            continue
        if not (project.root / step.model / "model.onnx").exists():
            print(f"int8_paths: {n} is not built, left out (doit optimize:{n})", file=sys.stderr)
        elif _has_uint8_int8(project.root / step.model / "model.onnx"):
            chosen[n] = _Recipe(project, step)
    return chosen


def _emulated(project: Path, names: list[str]) -> dict[str, dict]:
    """recipe -> quality measured by ORT under QEMU's AVX2 CPU (a child process per run)."""
    with tempfile.TemporaryDirectory(prefix="int8-paths-") as tmp:
        out = Path(tmp) / "quality.json"
        # a store of its own: nothing computed under emulation may reach the project's (tests/avx2.sh)
        env = {**os.environ, "MODELMAKE_STORE": str(Path(tmp) / "store")}
        proc = subprocess.run([str(ROOT / "tests" / "avx2.sh"), str(Path(__file__).resolve()), "--measure", str(out),
                               "--project", str(project), *names], env=env)
        if proc.returncode != 0:
            raise SystemExit(f"int8_paths: the run under AVX2 emulation failed (exit {proc.returncode})")
        return json.loads(out.read_text())


def main() -> int:
    import int8ref
    from modelmake.core.hostinfo import int8_path

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="*", help="recipes to measure (default: every one with uint8 x int8 products)")
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)   # the emulated child: write its results here
    args = ap.parse_args()
    project = args.project.resolve()

    recipes = _recipes(project, args.recipes)
    if args.measure:
        # the quality of classifiers; for the similarity of an encoder, its outputs: the float
        # baseline's are the same on every host and come from the parent, not from emulation
        results = {n: r.quality(r.model) if not r.similarity else r.rows(r.model).tolist() for n, r in recipes.items()}
        args.measure.write_text(json.dumps({"arithmetic": int8ref.host_arithmetic(), "results": results}))
        return 0

    here = int8ref.host_arithmetic()
    print(f"this host: int8 path {int8_path()}, ORT's uint8 x int8 products {here}", flush=True)
    # the float baseline's outputs: the same on every host, so computed here and not under emulation
    base_rows = {n: r.rows(*r.baseline) for n, r in recipes.items() if r.similarity}
    got = {n: {here: r.quality(r.model, base_rows.get(n))} for n, r in recipes.items()}
    if here == int8ref.EXACT:
        if shutil.which("qemu-x86_64") is None:
            raise SystemExit("int8_paths: the AVX2 arithmetic needs QEMU user-mode emulation (Debian: apt-get install qemu-user)")
        emulated = _emulated(project, list(recipes))
        assert emulated["arithmetic"] == int8ref.PAIRS, emulated["arithmetic"]
        for n, result in emulated["results"].items():
            got[n][int8ref.PAIRS] = recipes[n].similarity_of(result, base_rows[n]) if recipes[n].similarity else result
    else:
        for n, r in recipes.items():
            with tempfile.TemporaryDirectory(prefix="int8-paths-") as tmp:
                work = Path(tmp) / "model"
                shutil.copytree(r.model.parent, work)
                reference = int8ref.reference_dir(work, int8ref.EXACT) / int8ref.MODEL_FILE
                got[n][int8ref.EXACT] = r.quality(reference, base_rows.get(n))

    bases = {n: r.base() for n, r in recipes.items()}   # before the table: evaluation prints progress
    print("| recipe | metric | fp32 baseline | exact products (VNNI, AMX) | int16 pairs (AVX2) | goals, exact | goals, AVX2 |")
    print("| --- | --- | ---: | ---: | ---: | --- | --- |")
    for n, r in recipes.items():
        base = bases[n]
        ev = r.e.evaluate
        cells = [f"{got[n][a][r.metric]:.4f}" for a in (int8ref.EXACT, int8ref.PAIRS)]
        verdicts = [_verdict(ev["goal"], got[n][a], base, ev["custom"]) for a in (int8ref.EXACT, int8ref.PAIRS)]
        shown_base = f"{base[r.metric]:.4f}" if base else "-"
        print(f"| {n} | {r.metric} | {shown_base} | " + " | ".join(cells + verdicts) + " |", flush=True)
    return 0


def _has_uint8_int8(model: Path) -> bool:
    """Whether ORT runs the model with a uint8 x int8 product (the products whose sums differ)."""
    import int8ref
    import onnx

    from modelmake.runtime.onnxmeta import QUANTIZED_OPS

    if not {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node} & QUANTIZED_OPS:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        return bool(int8ref._uint8_int8_gemms(onnx.load(str(int8ref._optimized(model, Path(tmp) / "g.onnx")))))


if __name__ == "__main__":
    sys.exit(main())

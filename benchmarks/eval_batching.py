"""The accuracy pass of a built recipe, batched in data order (as before) and by length (now).

    python benchmarks/eval_batching.py [--project DIR] [--repeats 3] [recipe [step ...]]

Reads the recipe's test split and its [evaluate] batch_size / max_length, and for the final model
(or each named step's model) times, in one process and alternating, (a) the loop evaluation used
before: texts in data order, each batch padded to its longest text, and (b) evaluation's accuracy
pass now (`evaluate.measure_quality`: rows sorted by token count, outputs put back in order).
Prints the median wall time of each over the repeats, the speed-up, padded tokens of both
plans, and how many predictions differ. Build the recipe's steps first (`doit pass:<recipe>/<step>`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


def data_order_predictions(model: Path, tokenizer: Path, texts: list[str], batch_size: int,
                           max_length: int) -> list[int]:
    from modelmake.core import textenc
    from modelmake.runtime import sessions

    session = sessions.session(model)
    tok, out = textenc.load(tokenizer, max_length), []
    for start in range(0, len(texts), batch_size):
        logits = session.run(None, sessions.feeds(session, textenc.encode_with(tok, texts[start:start + batch_size])))[0]
        out.extend(logits.argmax(axis=-1).tolist())
    return out


def main() -> int:
    from modelmake.build.graph import find_project, layouts
    from modelmake.core import digest, textenc
    from modelmake.inputs.data import load_dataset
    from modelmake.inputs.recipe import load_recipes
    from modelmake.metrics import evaluate
    from modelmake.runtime import batches

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="bert-int8")
    ap.add_argument("steps", nargs="*", help="steps whose model to measure (default: the final model)")
    ap.add_argument("--project", type=Path, default=Path("."))
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    project = find_project(args.project)
    lay = layouts(project, load_recipes(project.recipes_dir, project.root))[args.recipe]
    ev = lay.recipe.evaluate
    data = lay.recipe.data[ev["data"]]
    folder = project.root / lay.data[ev["data"]]
    [file] = digest.list_files(folder)   # a dataset source is one file
    ds = load_dataset(folder / file, {k: v for k, v in data.items() if k != "source"})
    texts, labels = ds.texts("test"), ds.targets("test")
    batch_size, max_length = ev["batch_size"], ev["max_length"]
    tokenizer = project.root / lay.tokenizer
    lengths = [len(e) for e in textenc.encode_each(textenc.load(tokenizer, max_length), texts)]

    def padded(plan: list[list[int]]) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in plan)
    in_order = [list(range(i, min(i + batch_size, len(texts)))) for i in range(0, len(texts), batch_size)]
    print(f"{args.recipe}: {len(texts)} test rows, batch {batch_size}, max_length {max_length}; "
          f"{sum(lengths)} tokens; padded to {padded(in_order)} in data order, "
          f"{padded(batches.length_batches(lengths, batch_size))} by length")
    print("| model | data order s | by length s | speed-up | accuracy before | accuracy now | predictions differing |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for step in args.steps or [None]:
        model = project.root / (lay.step_dir(step) if step else lay.final) / "model.onnx"
        before, now = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            old = data_order_predictions(model, tokenizer, texts, batch_size, max_length)
            before.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            new, _ = evaluate.predict(model, tokenizer, texts, batch_size, max_length)
            now.append(time.perf_counter() - t0)
        quality = evaluate.measure_quality(model, tokenizer, texts, labels, batch_size, max_length)
        old_accuracy = sum(p == y for p, y in zip(old, labels)) / len(labels)
        b, n = statistics.median(before), statistics.median(now)
        print(f"| {step or 'final'} | {b:.2f} | {n:.2f} | {b / n:.2f}x | {old_accuracy:.4f} | "
              f"{quality['accuracy']:.4f} | {sum(x != y for x, y in zip(old, new))} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`modelmake init NAME --model PATH_OR_HUB_ID [--task ...] [--data FILE ...] [--precision int8|int4|fp16]`:
a first recipe, recipes/NAME.toml, with the chain this project measured best for the kind of
model and the precision asked for (README "Every recipe, one run", docs/quantization.md).

The model is looked at to fill what can be known: a Hugging Face folder's config.json (a
classifier head or a bare encoder, model family, attention heads, hidden size, label names), an
ONNX file's inputs, outputs and metadata. A hub id is not fetched (that needs network): its
task is --task's. The recipe is validated before it is written, and an existing one is kept
unless --force; then `doit optimize:NAME` builds it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmake.commands import datafile
from modelmake.commands.recipe_file import Doc, Table, destination, name_from, write_recipe
from modelmake.inputs.recipe import TASKS

HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*\Z")
PRECISIONS = ("int8", "int4", "fp16")
CLASSIFIER, ENCODER = "text-classification", "feature-extraction"

# What each precision's chain gave on all-MiniLM-L6-v2 (README, "Every recipe, one run"), and the
# goals its shipped recipe holds it to.
WHY = {
    "int8": ["Dynamic int8 after ORT's transformer fusions was the best chain measured here: accuracy within",
             "a tenth of a point of fp32, 1.8x (Intel Xeon, AMX) to 2.1x (AMD EPYC, AVX2) faster at p50 (batch 1,",
             "128 tokens), a quarter of the size (recipes/bert-int8.toml). Per-channel scales: per-tensor ones",
             "cost a point of accuracy."],
    "int4": ["Weight-only int4 (MatMulNBits, block 128, int8 compute) straight after export: a fused Attention's",
             "Q/K/V weights would stay float. On the CPUs measured here it is slower and bigger than dynamic int8",
             "(1.0x of fp32 at p50 on an Intel Xeon, 1.29x on an AMD EPYC; 54 MB against 23 MB: the embeddings",
             "stay fp32) and lost 0.7-0.8 points of accuracy;",
             "choose it to shrink a model whose MatMuls dominate its size (recipes/bert-int4.toml)."],
    "fp16": ["fp16 after ORT's fusions halves the file and keeps accuracy, but ONNX Runtime has no fp16 CPU",
             "kernels for these ops: measured 0.97-0.99x at p50. It is for size, or a GPU (recipes/bert-fp16.toml)."],
}
GOALS = {   # precision -> task -> goals (metric, kind, target)
    "int8": {CLASSIFIER: [("accuracy", "max_drop", 0.01), ("latency_ms.p50", "min_speedup", 1.3),
                          ("size_mb", "min_improvement_percent", 50)],
             ENCODER: [("similarity.cosine_p5", "at_least", 0.98), ("latency_ms.p50", "min_speedup", 1.3)]},
    "int4": {CLASSIFIER: [("accuracy", "max_drop", 0.01), ("size_mb", "min_improvement_percent", 30)],
             ENCODER: [("similarity.cosine_p5", "at_least", 0.98), ("size_mb", "min_improvement_percent", 30)]},
    "fp16": {CLASSIFIER: [("accuracy", "max_drop", 0.01), ("size_mb", "min_improvement_percent", 45)],
             ENCODER: [("similarity.cosine_p5", "at_least", 0.98), ("size_mb", "min_improvement_percent", 45)]},
}


class InitError(Exception):
    """A bad argument: str() is the one line to print."""


@dataclass
class Model:
    table: dict[str, Any]
    notes: dict[str, str] = field(default_factory=dict)
    fmt: str = "hf"                  # hf | onnx
    task: str | None = None          # what the model itself says
    has_head: bool | None = None     # a classifier head (None: unknown)
    config: dict = field(default_factory=dict)
    heads: int = 0
    hidden: int = 0
    found: list[str] = field(default_factory=list)   # what inspection read, for the recipe's comment


def _hf_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _from_config(m: Model, config: dict, where: str) -> None:
    m.config = config
    arch = (config.get("architectures") or [""])[0]
    if arch:
        m.has_head = arch.endswith(("ForSequenceClassification", "ForTextClassification"))
        m.found.append(f"architecture {arch} ({'a classifier' if m.has_head else 'no classifier head'})")
    m.heads = int(config.get("num_attention_heads") or config.get("n_head") or 0)
    m.hidden = int(config.get("hidden_size") or config.get("dim") or 0)
    if m.heads and m.hidden:
        m.found.append(f"{m.heads} attention heads, hidden size {m.hidden} ({where})")
    if config.get("id2label") and m.has_head:
        m.found.append(f"labels {', '.join(str(v) for v in config['id2label'].values())}")


def inspect(spec: str, root: Path, revision: str | None) -> Model:
    path = (root / spec) if not os.path.isabs(spec) else Path(spec)
    if path.exists():
        rel = Path(os.path.relpath(path.resolve(), root.resolve())).as_posix()
        onnx_file = path if path.is_file() else path / "model.onnx"
        if path.is_file() and path.suffix.lower() != ".onnx":
            raise InitError(f"--model {spec}: a file that is not .onnx; give a Hugging Face folder, an ONNX model or a hub id")
        if onnx_file.is_file():
            m = Model({"path": rel}, fmt="onnx")
            _onnx(m, onnx_file)
            folder = onnx_file.parent
            if path.is_file() and (folder / "tokenizer.json").is_file():
                m.table["tokenizer"] = Path(os.path.relpath(folder.resolve(), root.resolve())).as_posix()
            if not m.heads and (folder / "config.json").is_file():
                _from_config(m, _hf_config(folder), "config.json beside it")
            return m
        if not (path / "config.json").is_file():
            raise InitError(f"--model {spec}: no config.json or model.onnx in it; give a Hugging Face folder, "
                            "an ONNX model or a hub id")
        m = Model({"path": rel})
        _from_config(m, _hf_config(path), "config.json")
        return m
    # a path whose folder exists here is a path with a typo, not a hub id
    if HUB_ID.match(spec) and not spec.startswith(".") and not (root / spec.split("/")[0]).is_dir():
        m = Model({"hub": spec, "revision": revision or "main"})
        if not revision:
            m.notes["revision"] = "pin a commit hash here (`hf` or the hub page shows it): a branch moves"
        m.found.append("a hub id: not fetched here, so its task is --task's (default text-classification)")
        return m
    raise InitError(f"--model {spec}: no such file or folder, and not a hub id (org/name)")


def _onnx(m: Model, file: Path) -> None:
    import onnx

    from modelmake.metrics import catalogue
    from modelmake.runtime import onnxmeta

    try:
        model = onnx.load(str(file), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - any unreadable model is one line
        raise InitError(f"--model {file}: not an ONNX model ({type(e).__name__})") from None
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    m.found.append(f"ONNX inputs {', '.join(inputs)}; outputs {', '.join(outputs)}")
    if "input_ids" not in inputs:
        raise InitError(f"--model {file}: its inputs are {', '.join(inputs)}; modelmake's ONNX models take "
                        "tokenizer outputs (input_ids, attention_mask, ...)")
    m.task = ENCODER if any(o in catalogue.EMBEDDING_OUTPUTS for o in outputs) else CLASSIFIER
    props = {p.key: p.value for p in model.metadata_props}
    m.heads = int(props.get(onnxmeta.NUM_HEADS, 0) or 0)
    m.hidden = int(props.get(onnxmeta.HIDDEN_SIZE, 0) or 0)
    if m.heads and m.hidden:
        m.found.append(f"{m.heads} attention heads, hidden size {m.hidden} (the model's metadata)")


def _data(files: list[str], root: Path, m: Model, task: str) -> tuple[str, dict, dict, list[str]]:
    """(dataset name, its table, notes, comment)."""
    paths = []
    for f in files:
        p = (root / f) if not os.path.isabs(f) else Path(f)
        if not p.is_file():
            raise InitError(f"--data {f}: no such file")
        paths.append(p)
    rels = [Path(os.path.relpath(p.resolve(), root.resolve())).as_posix() for p in paths]
    cols = datafile.columns(paths[0])
    table: dict[str, Any] = {}
    notes: dict[str, str] = {}
    comment: list[str] = []
    if len(paths) == 1:
        table["path"] = rels[0]
    else:
        test = next((i for i, r in enumerate(rels) if re.search(r"test|valid|eval|dev", Path(r).name)), len(rels) - 1)
        train = [r for i, r in enumerate(rels) if i != test]
        table["files"] = {"train": train[0] if len(train) == 1 else train, "test": rels[test]}
    text = datafile.pick(cols, datafile.TEXT_COLUMNS) or next((c for c in cols), "text")
    table["text"] = text
    if cols and text not in datafile.TEXT_COLUMNS:
        notes["text"] = "the first column; name the one holding the text"
    label = datafile.pick(cols, datafile.LABEL_COLUMNS)
    if label is not None:
        mapping = datafile.label_map(paths, label, m.config)
        table["label"] = {"column": label, **({"map": mapping} if mapping else {})}
        if mapping and not set(mapping) <= set((m.config.get("label2id") or {})):
            notes["label"] = "class ids in sorted order of the values; a trained head's id2label must agree"
        elif mapping:
            notes["label"] = "the model's label2id"
    elif task == CLASSIFIER:
        raise InitError(f"--data {files[0]}: no label column ({', '.join(datafile.LABEL_COLUMNS)}) among "
                        f"{', '.join(cols) or 'its columns'}; a classifier is evaluated on labelled rows")
    if "path" in table:
        table["split"] = {"test": 0.2, "seed": 0}
        comment.append("one file: a fifth of its rows is held out for evaluation (split.by keeps groups together)")
    return name_from(Path(rels[0]).stem.split(".")[0]) if len(paths) == 1 else "data", table, notes, comment


def build_doc(name: str, m: Model, task: str, precision: str, data: tuple | None, model_spec: str) -> Doc:
    doc = Doc(description=f"{model_spec} -> " + {"int8": "ONNX -> fused -> dynamic int8, for CPU",
                                                 "int4": "ONNX -> weight-only int4 (MatMulNBits), for CPU",
                                                 "fp16": "ONNX -> fused -> fp16 (half the size)"}[precision])
    doc.head = [f"Written by `modelmake init {name}`; build it with `doit optimize:{name}`.", ""] + WHY[precision]
    if m.found:
        doc.head += ["", "Read from the model: " + "; ".join(m.found) + "."]
    doc.tables.append(Table("model", {**m.table, "task": task}, notes=m.notes))
    dname = None
    if data is not None:
        dname, dtable, dnotes, dcomment = data
        doc.tables.append(Table(f"data.{dname}", dtable, comment=dcomment, notes=dnotes))
    steps: list[tuple[str, str, dict, list[str]]] = []
    if m.fmt == "hf":
        if task == CLASSIFIER and m.has_head is False:
            if dname is None:
                raise InitError(f"--model {model_spec}: no classifier head ({(m.config.get('architectures') or ['?'])[0]}); "
                                "give --data to train one, or --task feature-extraction for embeddings")
            steps.append(("finetune", "finetune", {"data": dname, "epochs": 1, "max_samples": 4000, "learning_rate": 1e-4,
                                                   "batch_size": 32, "max_length": 64, "seed": 0},
                          ["the model has no classifier head: one is trained on the data's train split",
                           "(recipes/bert-int8.toml's settings: 4,000 rows, one epoch, about 100 s for MiniLM on 2 cores)"]))
        steps.append(("export", "onnx-export", {"opset": 17}, []))
    from modelmake import passes as registry

    fusion_types = next(f.choices for f in registry.get("ort-fusion").fields if f.name == "model_type")
    fuse_cfg: dict[str, Any] = {"model_type": m.config.get("model_type") if m.config.get("model_type") in fusion_types else "bert"}
    if m.heads and m.hidden:
        fuse_cfg.update(num_heads=m.heads, hidden_size=m.hidden)
    can_fuse = m.fmt == "hf" or (m.heads and m.hidden)
    if m.fmt == "onnx":
        # the baseline is a step of the recipe: the input model, fused (or ORT-optimized) but still fp32
        if can_fuse and precision != "int4":
            steps.append(("fuse", "ort-fusion", fuse_cfg, ["the fp32 baseline: the input model with ORT's fusions"]))
        else:
            steps.append(("prepare", "ort-optimize", {"level": "basic"},
                          ["the fp32 baseline: the input model after ORT's basic graph optimizations"
                           + ("" if can_fuse else " (attention heads unknown, so no transformer fusions)")]))
    elif precision != "int4":
        steps.append(("fuse", "ort-fusion", fuse_cfg, []))
    if precision == "int8":
        steps.append(("quantize", "dynamic-int8", {"per_channel": True}, []))
    elif precision == "int4":
        steps.append(("quantize", "int4", {"bits": 4, "block_size": 128, "symmetric": True, "accuracy_level": 4},
                      ["before any fusion; block 128 with int8 compute was the fastest measured (docs/quantization.md)"]))
    else:
        steps.append(("half", "fp16", {"keep_io_types": True}, ["callers keep feeding int64 ids and reading fp32 outputs"]))
    for sname, stype, cfg, comment in steps:
        doc.tables.append(Table("pass", {"name": sname, "type": stype, **cfg}, comment=comment, array=True))
    baseline = next(s[0] for s in steps if registry.get(s[1]).output_format == "onnx")
    goals = GOALS[precision][task]
    metrics = (["accuracy", "f1"] if task == CLASSIFIER else ["similarity"]) + ["latency", "throughput", "size", "memory"]
    goal_lines = [line for metric, kind, target in goals
                  for line in ("", "[[evaluate.goal]]", f"metric = \"{metric}\"", f"{kind} = {target}")]
    if dname is None:
        doc.tail = ["No --data: nothing to evaluate on yet. With a [data.NAME] table, add:", "",
                    "[evaluate]", "data = \"NAME\"", f"metrics = {json.dumps(metrics)}", f"baseline = \"{baseline}\"",
                    "latency = { batch = 1, sequence = 128 }",
                    "", "# the goals the shipped recipe of this chain meets"] + goal_lines
    else:
        doc.tables.append(Table("evaluate", {"data": dname, "metrics": metrics, "baseline": baseline,
                                             "latency": {"batch": 1, "sequence": 128}},
                                comment=[f"measured against the fp32 model of step {baseline!r}; the goals are the "
                                         "ones the shipped recipe of this chain meets"]))
        for metric, kind, target in goals:
            doc.tables.append(Table("evaluate.goal", {"metric": metric, kind: target}, array=True))
    doc.tables.append(Table("package", {"format": "zip"}))
    return doc


def main(command: str = "init", argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=f"modelmake {command}", description="write recipes/NAME.toml for a model, "
                                 "with the chain measured best for its kind and the precision asked for")
    ap.add_argument("name", help="the recipe's name (recipes/NAME.toml)")
    ap.add_argument("--model", required=True, help="a Hugging Face folder, an ONNX model, or a hub id (org/name)")
    ap.add_argument("--task", choices=TASKS, help="what the model outputs (default: what the model says, "
                    "else text-classification; text-generation is not written by init yet)")
    ap.add_argument("--data", nargs="+", metavar="FILE", help="a labelled .csv/.tsv/.jsonl file (a fifth held out "
                    "for evaluation), or a train file and a test file")
    ap.add_argument("--precision", choices=PRECISIONS, default="int8", help="int8 (default), int4 or fp16")
    ap.add_argument("--revision", help="with a hub id: the commit to pin")
    ap.add_argument("-o", "--output", help="the recipe file (default recipes/NAME.toml)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing recipe")
    args = ap.parse_args(argv)
    if name_from(args.name) != args.name:
        print(f"error: {args.name}: recipe names use a-z, 0-9, '-' and '_'", file=sys.stderr)
        return 2
    if args.task == "text-generation" or args.model.lower().endswith(".gguf"):
        print("error: init writes recipes of classifiers and encoders; for a language model copy "
              "recipes/smollm2-int8.toml (a GGUF file) and set its model", file=sys.stderr)
        return 2
    try:
        path, name = destination(args.output or f"recipes/{args.name}.toml", args.name)
        root = Path(os.path.abspath(path)).parent.parent
        m = inspect(args.model, root, args.revision)
        task = args.task or m.task or (ENCODER if m.has_head is False and not args.data else CLASSIFIER)
        data = _data(args.data, root, m, task) if args.data else None
        text = build_doc(name, m, task, args.precision, data, args.model).render()
    except InitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_recipe(path, text, args.force)
    print(f"wrote {path}: {task}, {args.precision}; build it with `doit optimize:{name}`")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main("init", sys.argv[1:]))

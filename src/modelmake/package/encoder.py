"""A classifier's or encoder's deployable zip: model, tokenizer, inference config, metrics, a
predict.py example, manifest; byte-for-byte reproducible (package/archive.py)."""
from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

from modelmake.core.files import atomic_file
from modelmake.core.textenc import TOKENIZER_FILES
from modelmake.package.archive import LEVEL, dumps, entry
from modelmake.metrics.catalogue import EMBEDDING_OUTPUTS
from modelmake.runtime import onnxmeta
from modelmake.runtime.sessions import settings_of

PREDICT_PY = '''\
"""Run this package's model on texts: python predict.py "a great movie" "a dull one"

A classifier prints label, probability and text per line. An embedding model (task
feature-extraction) prints the size, norm and first values of each text's embedding; with
--json it prints one JSON object per text holding the whole vector.
Needs only onnxruntime, tokenizers and numpy; run it from anywhere, it finds its files beside it.
"""
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

HERE = Path(__file__).resolve().parent


def load():
    cfg = json.loads((HERE / "inference_config.json").read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               cfg["session"]["graph_optimization_level"])
    options.intra_op_num_threads = cfg["session"]["intra_op_num_threads"]
    # present when the build timed session settings on its host (session-tune)
    if "inter_op_num_threads" in cfg["session"]:
        options.inter_op_num_threads = cfg["session"]["inter_op_num_threads"]
    if "execution_mode" in cfg["session"]:
        options.execution_mode = getattr(ort.ExecutionMode, cfg["session"]["execution_mode"])
    session = ort.InferenceSession(str(HERE / cfg["model"]), options,
                                   providers=cfg["session"]["providers"])
    tok = Tokenizer.from_file(str(HERE / cfg["tokenizer"]["file"]))
    tok.enable_truncation(max_length=cfg["max_length"])
    tok.enable_padding(pad_id=cfg["tokenizer"]["pad_id"], pad_token=cfg["tokenizer"]["pad_token"])
    return cfg, session, tok


def run(texts):
    """(config, the model's output for the texts, their attention mask)."""
    cfg, session, tok = load()
    encodings = tok.encode_batch(texts)
    columns = {"input_ids": [e.ids for e in encodings],
               "attention_mask": [e.attention_mask for e in encodings],
               "token_type_ids": [e.type_ids for e in encodings]}
    feeds = {i["name"]: np.array(columns[i["name"]], dtype=i["dtype"]) for i in cfg["inputs"]}
    return cfg, session.run([cfg["output"]], feeds)[0], np.array(columns["attention_mask"])


def embed(texts):
    """One embedding per text (float32 rows), as the model makes it."""
    cfg, out, mask = run(texts)
    if cfg["embedding"]["pool_tokens"]:  # token states: mean over the real tokens
        weights = mask[..., None].astype(out.dtype)
        out = (out * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return out


def predict(texts):
    cfg, logits, _ = run(texts)
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    best = probs.argmax(axis=-1)
    return [(cfg["labels"].get(str(int(b)), str(int(b))), float(p[b])) for b, p in zip(best, probs)]


def main(args):
    as_json = "--json" in args
    texts = [a for a in args if a != "--json"]
    if not texts:
        sys.exit(__doc__)
    task = json.loads((HERE / "inference_config.json").read_text(encoding="utf-8")).get("task")
    if task != "feature-extraction":
        for text, (label, prob) in zip(texts, predict(texts)):
            print(f"{label}\\t{prob:.4f}\\t{text}")
        return
    for text, vector in zip(texts, embed(texts)):
        norm = float(np.linalg.norm(vector))
        if as_json:
            print(json.dumps({"text": text, "norm": norm, "embedding": [float(x) for x in vector]}))
        else:
            head = ", ".join(f"{float(x):+.4f}" for x in vector[:4])
            print(f"dim={len(vector)}\\tnorm={norm:.4f}\\t[{head}, ...]\\t{text}")


if __name__ == "__main__":
    main(sys.argv[1:])
'''

README_TXT = '''\
Text classifier exported by modelmake (ONNX Runtime, CPU).
Run:   pip install onnxruntime tokenizers numpy && python predict.py "some text" "another text"
Files: model.onnx (the model), inference_config.json (inputs, labels, session settings),
       metrics.json (accuracy, F1 and size as measured at build time), manifest.json (sha256 of every file).
'''
README_EMBEDDINGS_TXT = '''\
Sentence embedding model exported by modelmake (ONNX Runtime, CPU).
Run:   pip install onnxruntime tokenizers numpy && python predict.py [--json] "some text" "another text"
Files: model.onnx (the model), inference_config.json (inputs, output, pooling, session settings),
       metrics.json (similarity to the baseline model and size as measured at build time),
       manifest.json (sha256 of every file).
'''


_PAIR_EDITS = (  # predict.py of a model that reads pairs of texts: the arguments are taken two by two
    ('"""Run this package\'s model on texts: python predict.py "a great movie" "a dull one"\n',
     '"""Run this package\'s model on pairs of texts: python predict.py "first" "second" [more pairs]\n'),
    ('    texts = [a for a in args if a != "--json"]\n    if not texts:\n        sys.exit(__doc__)\n',
     '    given = [a for a in args if a != "--json"]\n    if not given or len(given) % 2:\n        sys.exit(__doc__)\n'
     '    texts = list(zip(given[0::2], given[1::2]))  # tokenized as pairs\n'),
)


def predict_script(text_pair: bool = False) -> str:
    """predict.py of a package; the one of single texts is PREDICT_PY as it is."""
    script = PREDICT_PY
    if text_pair:
        for old, new in _PAIR_EDITS:
            if old not in script:  # pragma: no cover - a change of PREDICT_PY must keep these lines
                raise RuntimeError(f"predict.py template changed; update _PAIR_EDITS ({old.strip()[:40]})")
            script = script.replace(old, new)
    return script


def _tokenizer_block(tokenizer_dir: Path) -> dict:
    from tokenizers import Tokenizer

    from modelmake.core import textenc

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    pad_id, pad_token = textenc.padding_of(Path(tokenizer_dir), tok)
    return {"file": "tokenizer.json", "pad_id": pad_id, "pad_token": pad_token}


def inference_config(model_onnx: Path, max_length: int, tokenizer_dir: Path | None = None,
                     task: str = "text-classification", text_pair: bool = False) -> dict:
    """How to run the model: inputs and outputs (symbolic dims kept), labels or how the embedding
    is pooled, session settings.

    The session settings are ORT's defaults, or those session-tune recorded in the model's metadata.
    """
    import onnx
    from onnx import helper

    model = onnx.load(str(model_onnx), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}

    def describe(value) -> dict:
        t = value.type.tensor_type
        return {"name": value.name,
                "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

    props = {p.key: p.value for p in model.metadata_props}
    outputs = [describe(o) for o in model.graph.output]
    config = {
        "model": "model.onnx",
        "task": task,
        "inputs": [describe(i) for i in model.graph.input if i.name not in initializers],
        "outputs": outputs,
        "output": next((o["name"] for o in outputs if o["name"] == "logits"), outputs[0]["name"]),
        "labels": json.loads(props.get(onnxmeta.ID2LABEL, "{}")),
        "max_length": int(max_length),
        "session": {"providers": ["CPUExecutionProvider"],
                    "graph_optimization_level": "ORT_ENABLE_ALL",
                    "intra_op_num_threads": 0},
    }
    if text_pair:   # the model was trained or evaluated on pairs of texts
        config["text_pair"] = True
    if task != "text-classification":
        config.update(_embedding_block(outputs, props))
    tuned = settings_of(props)
    if tuned is not None:
        config["session"].update(tuned)
    if tokenizer_dir is not None:
        config["tokenizer"] = _tokenizer_block(tokenizer_dir)
    return config


def _embedding_block(outputs: list[dict], props: dict[str, str]) -> dict:
    """The output holding the embedding (chosen as evaluation chooses it) and how it
    was pooled: in the graph (onnx-export records how) or, for token states, by predict.py."""
    names = [o["name"] for o in outputs]
    output = next((n for n in EMBEDDING_OUTPUTS if n in names), names[0])
    pool_tokens = len(next(o for o in outputs if o["name"] == output)["shape"]) == 3
    return {"output": output, "labels": {},
            "embedding": {"pool_tokens": pool_tokens,
                          "pooling": "mean" if pool_tokens else props.get(onnxmeta.POOLING),
                          "normalized": False if pool_tokens else
                          {"true": True, "false": False}.get(props.get(onnxmeta.NORMALIZE, ""))}}


def build_package(out_zip: Path, model_onnx: Path, tokenizer_dir: Path, metrics: dict,
                  inference_config: dict, extra_manifest: dict) -> None:
    """Write the package zip atomically; `inference_config` gets a tokenizer block if it lacks one."""
    if "files" in extra_manifest:
        raise ValueError("extra_manifest may not contain 'files' (the manifest's own file list)")
    tokenizer_dir, out_zip = Path(tokenizer_dir), Path(out_zip)
    if onnxmeta.external_files(model_onnx):
        raise ValueError(f"{model_onnx} keeps weights in external files; the package holds model.onnx only")
    config = dict(inference_config)
    config.setdefault("tokenizer", _tokenizer_block(tokenizer_dir))
    files: dict[str, bytes] = {
        "model.onnx": Path(model_onnx).read_bytes(),
        "inference_config.json": dumps(config),
        "metrics.json": dumps(metrics),
        "predict.py": predict_script(bool(config.get("text_pair"))).encode("utf-8"),
        "README.txt": (README_EMBEDDINGS_TXT if "embedding" in config else README_TXT).encode("utf-8"),
    }
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            files[name] = (tokenizer_dir / name).read_bytes()
    manifest = dict(extra_manifest)
    manifest["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                         for name, data in sorted(files.items())}
    files["manifest.json"] = dumps(manifest)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as zf:
            for name in sorted(files):
                zf.writestr(entry(name), files[name], compress_type=zipfile.ZIP_DEFLATED,
                            compresslevel=LEVEL)
    atomic_file(out_zip, write)

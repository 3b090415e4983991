"""Build keys: pure functions of a task's spec and the content digests of the folders it reads.

runner.py computes them to get or build a result; `modelmake status` and `modelmake why` compute
the same keys without building anything, taking an input's content from the store object that
would fill it when the folder in artifacts/ is stale or missing. One definition serves both, so
what status says would be restored is exactly what a build restores.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from modelmake.core import digest
from modelmake.metrics.catalogue import PORTABLE, measured_metric

Content = Callable[[str], str]  # folder path as written in a spec -> that folder's content digest


def folder_content(folder: str | Path) -> str:
    """A folder's content digest: the digest of its manifest's bytes (the same for its store object)."""
    return digest.bytes_digest((Path(folder) / digest.MANIFEST).read_bytes())


def kind_of(spec: dict) -> str:
    """source, pass, eval, package or optimize: the task group a spec belongs to."""
    return spec["task"].split(":", 1)[0]


def inputs(spec: dict) -> dict[str, str]:
    """The folders a task reads, by role. Their content digests are part of its key."""
    kind = kind_of(spec)
    if kind == "pass":
        out = {"input": spec["input"]}
        out.update({f"data.{n}": d["dir"] for n, d in sorted(spec["datasets"].items())})
        if spec["tokenizer"]:
            out["tokenizer"] = spec["tokenizer"]
        return out
    if kind == "eval":
        out = {"model": spec["model"], "tokenizer": spec["tokenizer"], "data": spec["data_dir"]}
        if spec["baseline"]:
            out["baseline"] = spec["baseline"]
        if spec.get("baseline_tokenizer"):  # evaluate.baseline_recipe: the other recipe's tokenizer
            out["baseline_tokenizer"] = spec["baseline_tokenizer"]
        return out
    if kind == "package":
        return {"model": spec["model"], "tokenizer": spec["tokenizer"]}
    return {}


def source_item_key(item: dict, root: Path, version: int) -> str:
    """Key of one fetched source. A local path is its own pin, so its files' content is in the key;
    wheels and hub snapshots are pinned by the sha256/revision the recipe gives."""
    src = item["source"]
    if src["kind"] != "path":
        return digest.key_of({"kind": "source", "source": src, "version": version})
    from modelmake.inputs.sources import local_files

    path = Path(root) / src["path"]
    files = local_files(path) if path.exists() else []
    content = {str(f.relative_to(path) if path.is_dir() else f.name): digest.file_digest(f) for f in files}
    return digest.key_of({"kind": "source", "source": src, "content": content, "version": version})


def pass_key(spec: dict, content: Content) -> str:
    return digest.key_of({
        "kind": "pass", **spec["static"], "input": content(spec["input"]),
        "data_content": {n: content(d["dir"]) for n, d in spec["datasets"].items()},
        "tokenizer": content(spec["tokenizer"]) if spec["tokenizer"] else None,
    })


def eval_key(spec: dict, content: Content) -> str:
    return digest.key_of({"kind": "eval", **spec["static"],
                          **{role: content(folder) for role, folder in inputs(spec).items()}})


def portable_metrics(metrics: dict) -> dict:
    """What of a recipe's metrics goes into its package: timings belong to the host that measured
    them, not to the artifact, so leaving them out keeps the package byte-identical anywhere."""
    return {k: v for k, v in metrics.items() if measured_metric(k) in PORTABLE}


def package_key(spec: dict, content: Content, metrics: dict) -> str:
    return digest.key_of({"kind": "package", **spec["static"], "model": content(spec["model"]),
                          "tokenizer": content(spec["tokenizer"]), "metrics": portable_metrics(metrics)})


def static_of(spec: dict) -> dict:
    """The settings part of a task's key (config, versions, libraries, host): what `why` compares."""
    if kind_of(spec) == "source":
        return {"items": [{k: v for k, v in i.items() if k != "out"} for i in spec["items"]],
                "version": spec["version"]}
    return spec.get("static", {})

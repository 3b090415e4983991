"""Text datasets as a recipe declares them: texts (or pairs of texts), labels if any, train and test.

One file is split by a seeded group hash: each group (e.g. movie name) lands wholly on one side,
and a group's side never depends on which other rows exist. Files given per split (or a Hugging
Face dataset's splits, fetched as Parquet) are used as given, in the order given. The folder a
source step fetched is read here; errors are DataErrors whose message is one line naming the
file, the line or row and the column.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash

from modelmake.inputs.datafiles import DataError, read_rows  # noqa: F401 - DataError is this module's error

Text = str | tuple[str, str]        # one text, or a pair (tokenized as a pair)
Row = tuple[Text, int | None]       # (text, class id); None for a dataset without labels
# the index of a folder holding files per split: {"train": [{"file": rel, "from": as the user names it}]}
INDEX = "modelmake-splits.json"
_INT = re.compile(r"^\s*[+-]?\d+\s*\Z")


@dataclass(frozen=True)
class Dataset:
    train: list[Row]
    test: list[Row]
    labels: dict[int, str]          # id -> label name, as the model's id2label ({} without labels)
    labelled: bool = True

    def texts(self, split: str) -> list[Text]:
        return [t for t, _ in getattr(self, split)]

    def targets(self, split: str) -> list[int]:
        return [y for _, y in getattr(self, split)]


def _q(value: object, limit: int = 40) -> str:
    """A value from the file, quoted for a one-line message (control characters escaped, cut)."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _columns(names) -> str:
    names = list(names)
    shown = ", ".join(_q(n) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "") if names else "none"


@dataclass
class _Reader:
    """Rows of files -> (text, class id) by the recipe's columns and label rules."""

    spec: dict[str, Any]
    unmapped: dict[str, int] = field(default_factory=dict)
    seen_ids: set[int] = field(default_factory=set)

    @property
    def text_cols(self) -> list[str]:
        t = self.spec["text"]
        return [t] if isinstance(t, str) else list(t)

    def needed(self) -> dict[str, str]:
        """recipe key -> column."""
        cols = self.text_cols
        out = {"text": cols[0]} if len(cols) == 1 else {f"text[{i}]": c for i, c in enumerate(cols)}
        if self.spec["label"] is not None:
            out["label.column"] = self.spec["label"]["column"]
        by = (self.spec.get("split") or {}).get("by")
        return {**out, **({"split.by": by} if by else {})}

    def read(self, path: Path, shown: str) -> list[tuple[str, dict]]:
        needed = self.needed()
        columns, rows = read_rows(path, shown, tuple(dict.fromkeys(needed.values())))
        if columns == []:
            raise DataError(f"{shown}: empty file (no header row)")
        if columns is not None:
            for key, col in needed.items():
                if col not in columns:
                    raise DataError(f"{shown}: no column {_q(col)} (the recipe's {key}); "
                                    f"the header has: {_columns(columns)}")
        return rows

    def value(self, shown: str, where: str, row: dict, key: str, jsonish: bool) -> Any:
        col = self.needed()[key]
        v = row.get(col)
        if v is None:   # a JSON object without the key, a short CSV row, a null
            what = "no key" if jsonish else "no value in column"
            raise DataError(f"{shown}: {where}: {what} {_q(col)} (the recipe's {key})")
        if isinstance(v, bytes):   # a binary Parquet/Arrow column
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{shown}: {where}: column {_q(col)}: not UTF-8 text: byte 0x{v[e.start]:02x} "
                                f"at offset {e.start}") from None
        return v

    def label(self, shown: str, where: str, row: dict, jsonish: bool) -> int | None:
        """The row's class id; None when the row is dropped (its label is not a class)."""
        label = self.spec["label"]
        raw = self.value(shown, where, row, "label.column", jsonish)
        if "map" in label:
            cid = label["map"].get(str(raw))
        else:
            cid = _class_id(raw)
            if cid is None:
                raise DataError(f"{shown}: {where}: column {_q(label['column'])} value {_q(raw)} is not a class id "
                                "(an integer 0..n-1); give label.map to map label values to ids")
            if cid < 0 or ("names" in label and cid >= len(label["names"])):
                cid = None
        if cid is None:
            if label.get("unknown") == "fail":
                classes = "in label.map" if "map" in label else (
                    f"a class id 0..{len(label['names']) - 1} (label.names)" if "names" in label else "a class id >= 0")
                raise DataError(f"{shown}: {where}: column {_q(label['column'])} value {_q(raw)} is not {classes} "
                                "(the recipe's label.unknown = \"fail\")")
            self.unmapped[str(raw)] = self.unmapped.get(str(raw), 0) + 1
            return None
        self.seen_ids.add(cid)
        return cid

    def rows(self, path: Path, shown: str) -> list[tuple[Row, str | None]]:
        """(text, class id) and the row's group (split.by) of every row the recipe keeps."""
        rows = self.read(path, shown)
        jsonish = kind_is_jsonish(path.name)
        out = []
        labelled = self.spec["label"] is not None
        keys = list(self.needed())
        for where, row in rows:
            cid = self.label(shown, where, row, jsonish) if labelled else None
            if labelled and cid is None:
                continue   # rows whose label is not a class are not part of the task (documented)
            got = {k: self.value(shown, where, row, k, jsonish) for k in keys}
            texts = [str(got[k]) for k in keys if k.startswith("text")]
            text: Text = texts[0] if len(texts) == 1 else (texts[0], texts[1])
            out.append(((text, cid), str(got["split.by"]) if "split.by" in got else None))
        return out

    def no_class_error(self, shown: str) -> DataError:
        label = self.spec["label"]
        common = sorted(self.unmapped, key=lambda v: -self.unmapped[v])[:5]
        have = ", ".join(_q(v) for v in common) + (f" and {len(self.unmapped) - 5} more" if len(self.unmapped) > 5 else "")
        if "map" in label:
            return DataError(f"{shown}: no row's {_q(label['column'])} value is in label.map "
                             f"({', '.join(_q(k) for k in label['map'])}); the file has: {have}")
        return DataError(f"{shown}: no row's {_q(label['column'])} value is a class id; the file has: {have}")

    def labels(self) -> dict[int, str]:
        label = self.spec["label"]
        if label is None:
            return {}
        if "map" in label:
            return {v: k for k, v in sorted(label["map"].items(), key=lambda kv: kv[1])}
        if "names" in label:
            return dict(enumerate(label["names"]))
        return {i: f"LABEL_{i}" for i in range(max(self.seen_ids, default=-1) + 1)}


def kind_is_jsonish(name: str) -> bool:
    """Whether rows are objects that may lack a key (JSON), rather than a table with a header."""
    base = name.lower().removesuffix(".bz2").removesuffix(".gz")
    return base.endswith((".jsonl", ".json"))


def _class_id(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and _INT.match(raw):
        return int(raw)
    return None


def _in_test(group: str, seed: int, fraction: float) -> bool:
    h = xxhash.xxh3_64_intdigest(f"{seed}\x00{group}".encode())
    return h / 2**64 < fraction


def load_dataset(path: Path, spec: dict) -> Dataset:
    """One file, split by group. `spec` is a recipe's normalized `[data.NAME]` (inputs/dataspec.py)."""
    shown = path.name
    reader = _Reader(spec)
    split = spec["split"]
    by, fraction, seed = split.get("by"), split["test"], split["seed"]
    rows = reader.rows(path, shown)
    if not rows and not reader.unmapped:
        raise DataError(f"{shown}: no data rows")
    if not rows:
        raise reader.no_class_error(shown)
    train, test, groups = [], [], set()
    for i, (row, group) in enumerate(rows):
        group = group if by else str(i)   # without split.by every row is its own group
        groups.add(group)
        (test if _in_test(group, seed, fraction) else train).append(row)
    if not train or not test:
        groups_by = f"{len(groups)} group(s) by {_q(by)}" if by else f"{len(groups)} row(s)"
        raise DataError(f"{shown}: the split (test = {fraction}, seed = {seed}) left {len(train)} train and "
                        f"{len(test)} test rows from {groups_by}; use more rows or change split.test/split.seed")
    return Dataset(train=train, test=test, labels=reader.labels(), labelled=spec["label"] is not None)


def load_splits(folder: Path, spec: dict) -> Dataset:
    """Files per split as a source step fetched them (INDEX says which, in order)."""
    index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    reader = _Reader(spec)
    out: dict[str, list[Row]] = {"train": [], "test": []}
    for split in [s for s in out if s in index]:   # train first: its rows are the first checked
        files = index[split]
        shown = ", ".join(f["from"] for f in files)
        dropped = sum(reader.unmapped.values())
        for f in files:
            out[split] += [row for row, _ in reader.rows(folder / f["file"], f["from"])]
        if not out[split]:
            if sum(reader.unmapped.values()) > dropped:
                raise reader.no_class_error(shown)
            raise DataError(f"{shown}: the {split} split has no rows")
    return Dataset(train=out["train"], test=out["test"], labels=reader.labels(), labelled=spec["label"] is not None)


def load_dataset_folder(folder: Path, spec: dict) -> Dataset:
    """The dataset a source step fetched into `folder`: one file to split, or files per split."""
    from modelmake.core.digest import list_files

    folder = Path(folder)
    if (folder / INDEX).is_file():
        return load_splits(folder, spec)
    files = [folder / f for f in list_files(folder)]
    if len(files) != 1:
        raise DataError(f"{folder}: a dataset source must be one file, found {len(files)}")
    return load_dataset(files[0], spec)


def evaluation_rows(folder: Path, spec: dict, max_samples: int) -> tuple[list[Text], list[int] | None]:
    """The texts and labels (None without labels) an evaluation measures: the dataset's test
    split, or a seeded sample of `max_samples` of it (0: all)."""
    import random

    data = load_dataset_folder(folder, spec)
    rows = list(data.test)
    if max_samples and max_samples < len(rows):
        rows = random.Random(0).sample(rows, max_samples)
    return [t for t, _ in rows], ([y for _, y in rows] if data.labelled else None)

"""Labelled text datasets from CSV/JSONL files: label mapping and a deterministic group split.

The split hashes each group (e.g. movie name) with the seed, so no group is on both sides and
the assignment of a group never depends on which other rows exist.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import xxhash


class DataError(Exception):
    """A dataset file does not match its recipe declaration (missing column, no rows...)."""


@dataclass(frozen=True)
class Dataset:
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    labels: dict[int, str]          # id -> label name, as the model's id2label

    def texts(self, split: str) -> list[str]:
        return [t for t, _ in getattr(self, split)]

    def targets(self, split: str) -> list[int]:
        return [y for _, y in getattr(self, split)]


def _open_text(path: Path) -> io.TextIOBase:
    name = path.name.lower()
    if name.endswith(".bz2"):
        return io.TextIOWrapper(bz2.open(path, "rb"), encoding="utf-8", newline="")
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def read_rows(path: Path) -> list[dict[str, str]]:
    name = path.name.lower().removesuffix(".bz2").removesuffix(".gz")
    with _open_text(path) as f:
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in f if line.strip()]
        if name.endswith(".csv") or name.endswith(".tsv"):
            return list(csv.DictReader(f, delimiter="\t" if name.endswith(".tsv") else ","))
    raise DataError(f"{path.name}: unsupported file type (use .csv, .tsv or .jsonl, optionally .gz/.bz2)")


def _in_test(group: str, seed: int, fraction: float) -> bool:
    h = xxhash.xxh3_64_intdigest(f"{seed}\x00{group}".encode())
    return h / 2**64 < fraction


def load_dataset(path: Path, spec: dict) -> Dataset:
    """`spec` is a recipe's normalized `[data.NAME]` table (see modelmake.recipe)."""
    rows = read_rows(path)
    text_col, label = spec["text"], spec["label"]
    label_col, label_map = label["column"], label["map"]
    split = spec["split"]
    by, fraction, seed = split.get("by"), split["test"], split["seed"]
    if rows:
        for col in (text_col, label_col) + ((by,) if by else ()):
            if col not in rows[0]:
                raise DataError(f"{path.name}: no column '{col}' (columns: {', '.join(rows[0])})")
    train, test = [], []
    for i, row in enumerate(rows):
        raw = str(row[label_col])
        if raw not in label_map:
            continue  # rows whose label is not mapped are not part of the task (documented)
        group = str(row[by]) if by else str(i)
        (test if _in_test(group, seed, fraction) else train).append((str(row[text_col]), label_map[raw]))
    if not train or not test:
        raise DataError(f"{path.name}: split left {len(train)} train and {len(test)} test rows")
    labels = {v: k for k, v in sorted(label_map.items(), key=lambda kv: kv[1])}
    return Dataset(train=train, test=test, labels=labels)

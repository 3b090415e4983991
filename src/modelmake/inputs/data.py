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


def _q(value: object, limit: int = 40) -> str:
    """A value from the file, quoted for a one-line message (control characters escaped, cut)."""
    text = repr(str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def _columns(names) -> str:
    names = list(names)
    shown = ", ".join(_q(n) for n in names[:12])
    return shown + (f" and {len(names) - 12} more" if len(names) > 12 else "") if names else "none"


def _read_text(path: Path) -> str:
    """The file's text, decompressed; a BOM is dropped. Errors name the file and where."""
    name = path.name.lower()
    try:
        data = path.read_bytes()
        if name.endswith(".bz2"):
            data = bz2.decompress(data)
        elif name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as e:  # BadGzipFile is an OSError; a cut stream EOFError
        raise DataError(f"{path.name}: cannot read or decompress it ({e.__class__.__name__}: {e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{path.name}: not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}") from None


def read_table(path: Path) -> tuple[list[str] | None, list[tuple[int, dict]]]:
    """(columns, [(line number, row)]). Columns come from a CSV/TSV header; JSONL has none
    (each line is its own object, checked row by row)."""
    name = path.name.lower().removesuffix(".bz2").removesuffix(".gz")
    if not name.endswith((".csv", ".tsv", ".jsonl")):
        raise DataError(f"{path.name}: unsupported file type (use .csv, .tsv or .jsonl, optionally .gz/.bz2)")
    text = _read_text(path)
    rows: list[tuple[int, dict]] = []
    if name.endswith(".jsonl"):
        for n, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path.name}: line {n}: not JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path.name}: line {n}: expected a JSON object, got {type(obj).__name__}")
            rows.append((n, obj))
        return None, rows
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if name.endswith(".tsv") else ",")
    try:
        columns = list(reader.fieldnames or [])
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as e:
        raise DataError(f"{path.name}: line {reader.line_num}: {e}") from None
    return columns, rows


def _in_test(group: str, seed: int, fraction: float) -> bool:
    h = xxhash.xxh3_64_intdigest(f"{seed}\x00{group}".encode())
    return h / 2**64 < fraction


def load_dataset(path: Path, spec: dict) -> Dataset:
    """`spec` is a recipe's normalized `[data.NAME]` table (see modelmake.inputs.recipe).

    Every problem is a DataError whose message is one line naming the file and, where there is
    one, the line, the column and the recipe key involved."""
    columns, rows = read_table(path)
    text_col, label = spec["text"], spec["label"]
    label_col, label_map = label["column"], label["map"]
    split = spec["split"]
    by, fraction, seed = split.get("by"), split["test"], split["seed"]
    needed = {"text": text_col, "label.column": label_col, **({"split.by": by} if by else {})}
    if columns == []:
        raise DataError(f"{path.name}: empty file (no header row)")
    if columns is not None:
        for key, col in needed.items():
            if col not in columns:
                raise DataError(f"{path.name}: no column {_q(col)} (the recipe's {key}); "
                                f"the header has: {_columns(columns)}")
    if not rows:
        raise DataError(f"{path.name}: no data rows")
    train, test, unmapped, groups = [], [], {}, set()
    def missing(n: int, row: dict, key: str) -> None:
        if row.get(needed[key]) is None:   # a JSONL object without the key, a short CSV row
            what = "no key" if columns is None else "no value in column"
            raise DataError(f"{path.name}: line {n}: {what} {_q(needed[key])} (the recipe's {key})")

    for i, (n, row) in enumerate(rows):
        missing(n, row, "label.column")
        raw = str(row[label_col])
        if raw not in label_map:
            # rows whose label is not mapped are not part of the task (documented)
            unmapped[raw] = unmapped.get(raw, 0) + 1
            continue
        for key in needed:
            missing(n, row, key)
        group = str(row[by]) if by else str(i)   # without split.by every row is its own group
        groups.add(group)
        (test if _in_test(group, seed, fraction) else train).append((str(row[text_col]), label_map[raw]))
    if not train and not test:
        common = sorted(unmapped, key=lambda v: -unmapped[v])[:5]
        raise DataError(f"{path.name}: no row's {_q(label_col)} value is in label.map "
                        f"({', '.join(_q(k) for k in label_map)}); the file has: {', '.join(_q(v) for v in common)}"
                        + (f" and {len(unmapped) - 5} more" if len(unmapped) > 5 else ""))
    if not train or not test:
        groups_by = f"{len(groups)} group(s) by {_q(by)}" if by else f"{len(groups)} row(s)"
        raise DataError(f"{path.name}: the split (test = {fraction}, seed = {seed}) left {len(train)} train and "
                        f"{len(test)} test rows from {groups_by}; use more rows or change split.test/split.seed")
    labels = {v: k for k, v in sorted(label_map.items(), key=lambda kv: kv[1])}
    return Dataset(train=train, test=test, labels=labels)


def load_dataset_folder(folder: Path, spec: dict) -> Dataset:
    """load_dataset of the one file a source step fetched into `folder`."""
    from modelmake.core.digest import list_files

    files = [Path(folder) / f for f in list_files(Path(folder))]
    if len(files) != 1:
        raise DataError(f"{folder}: a dataset source must be one file, found {len(files)}")
    return load_dataset(files[0], spec)


def evaluation_rows(folder: Path, spec: dict, max_samples: int) -> tuple[list[str], list[int]]:
    """The texts and labels an evaluation measures: the dataset's test split, or a seeded sample
    of `max_samples` of it (0: all)."""
    import random

    rows = list(load_dataset_folder(folder, spec).test)
    if max_samples and max_samples < len(rows):
        rows = random.Random(0).sample(rows, max_samples)
    return [t for t, _ in rows], [y for _, y in rows]

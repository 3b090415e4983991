"""A first look at a local data file for a recipe writer: its columns, and the classes of its
label column (read with the standard library; the build reads the data itself)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "sentiment")


def rows(path: Path, limit: int | None = None) -> Iterator[dict]:
    """Rows of a .csv, .tsv or .jsonl file as dicts; nothing for another format."""
    with open(path, encoding="utf-8", newline="") as fh:
        if path.suffix in (".csv", ".tsv"):
            reader = csv.DictReader(fh, delimiter="\t" if path.suffix == ".tsv" else ",")
        elif path.suffix == ".jsonl":
            reader = (json.loads(line) for line in fh if line.strip())
        else:
            return
        for i, row in enumerate(reader):
            if limit is not None and i >= limit:
                return
            yield row


def columns(path: Path) -> list[str]:
    try:
        first = next(rows(path, 1), None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return []
    return list(first) if isinstance(first, dict) else []


def pick(names: list[str], preferred: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[p] for p in preferred if p in lower), None)


def label_map(files: list[Path], column: str, model_config: dict) -> dict[str, int] | None:
    """label value -> class id: the model's label2id where it names the file's values, 0..n-1
    when the values are those integers, else the values in sorted order. None when the files
    cannot be read here (another format) or hold no such column."""
    values: set[str] = set()
    try:
        for f in files:
            for row in rows(f):
                if isinstance(row, dict) and row.get(column) not in (None, ""):
                    values.add(str(row[column]))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not values:
        return None
    label2id = model_config.get("label2id") or {}
    if label2id and set(label2id) & values:
        return dict(sorted(((str(k), int(v)) for k, v in label2id.items()), key=lambda kv: kv[1]))
    if all(v.isdigit() for v in values):
        return {str(i): i for i in range(max(int(v) for v in values) + 1)}
    return {v: i for i, v in enumerate(sorted(values))}

"""A first look at a local data file for a recipe writer (`init`, `import-olive`): its columns,
and the classes of its label column. Files are read by the build's own reader
(inputs/datafiles.py), so every format a recipe takes is looked at the same way."""
from __future__ import annotations

from pathlib import Path

from modelmake.inputs.datafiles import DataError, read_rows

TEXT_COLUMNS = ("text", "sentence", "review", "content", "document", "comment")
LABEL_COLUMNS = ("label", "labels", "category", "class", "target", "sentiment")


def rows(path: Path) -> list[dict]:
    """The file's rows as dicts; none when it cannot be read (the build says why, if it is used)."""
    try:
        return [row for _, row in read_rows(path, str(path))[1] if isinstance(row, dict)]
    except DataError:
        return []


def columns(path: Path) -> list[str]:
    try:
        names, found = read_rows(path, str(path))
    except DataError:
        return []
    if names is not None:
        return names
    return list(found[0][1]) if found and isinstance(found[0][1], dict) else []


def pick(names: list[str], preferred: tuple[str, ...]) -> str | None:
    lower = {n.lower(): n for n in names}
    return next((lower[p] for p in preferred if p in lower), None)


def label_map(files: list[Path], column: str, model_config: dict) -> dict[str, int] | None:
    """label value -> class id: the model's label2id where it names the file's values, 0..n-1
    when the values are those integers, else the values in sorted order. None when the files
    cannot be read or hold no such column."""
    values = {str(row[column]) for f in files for row in rows(f) if row.get(column) not in (None, "")}
    if not values:
        return None
    label2id = model_config.get("label2id") or {}
    if label2id and set(label2id) & values:
        return dict(sorted(((str(k), int(v)) for k, v in label2id.items()), key=lambda kv: kv[1]))
    if all(v.isdigit() for v in values):
        return {str(i): i for i in range(max(int(v) for v in values) + 1)}
    return {v: i for i, v in enumerate(sorted(values))}

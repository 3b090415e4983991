"""Rows of one dataset file: CSV, TSV, JSON Lines, a JSON array, Parquet or Arrow, optionally
.gz/.bz2. Every problem is a DataError naming the file (as the user knows it) and, where there is
one, the line or row.

Text formats are read with the standard library (the fast path: measured faster than loading
through `datasets` for such files, docs/recipes.md); Parquet and Arrow with pyarrow, reading only
the columns the recipe names.
"""
from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
from pathlib import Path

TYPES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".arrow", ".feather")
Rows = list[tuple[str, dict]]   # (where in the file: "line 7" or "row 7", the row)


class DataError(Exception):
    """A dataset file does not match its recipe declaration (missing column, no rows...)."""


def kind_of(name: str) -> str | None:
    """The format of a file name (".csv"...), compression suffixes aside; None if unsupported."""
    base = name.lower().removesuffix(".bz2").removesuffix(".gz")
    return next((t for t in TYPES if base.endswith(t)), None)


def read_bytes(path: Path, shown: str) -> bytes:
    """The file's bytes, decompressed. Errors name the file."""
    name = path.name.lower()
    try:
        data = path.read_bytes()
        if name.endswith(".bz2"):
            data = bz2.decompress(data)
        elif name.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, ValueError) as e:  # BadGzipFile is an OSError; a cut stream EOFError
        raise DataError(f"{shown}: cannot read or decompress it ({e.__class__.__name__}: {e})") from None
    return data


def read_text(path: Path, shown: str) -> str:
    """The file's text, decompressed; a BOM is dropped."""
    data = read_bytes(path, shown)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{shown}: not UTF-8 text: byte 0x{data[e.start]:02x} at line {line}") from None


def read_rows(path: Path, shown: str, wanted: tuple[str, ...] = ()) -> tuple[list[str] | None, Rows]:
    """(columns, rows). Columns come from a CSV/TSV header or a Parquet/Arrow schema; JSON Lines
    and JSON arrays have none (each object is checked row by row). `wanted`: the columns the
    recipe reads, all that a columnar file is asked for."""
    kind = kind_of(path.name)
    if kind is None:
        raise DataError(f"{shown}: unsupported file type (use {', '.join(TYPES)}, optionally .gz/.bz2)")
    if kind in (".parquet", ".arrow", ".feather"):
        return _columnar(read_bytes(path, shown), kind, shown, wanted)
    text = read_text(path, shown)
    if kind == ".jsonl":
        return None, _json_lines(text, shown)
    if kind == ".json":
        return None, _json_array(text, shown)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if kind == ".tsv" else ",")
    rows: Rows = []
    try:
        columns = list(reader.fieldnames or [])
        for row in reader:
            rows.append((f"line {reader.line_num}", row))
    except csv.Error as e:
        raise DataError(f"{shown}: line {reader.line_num}: {e}") from None
    return columns, rows


def _json_lines(text: str, shown: str) -> Rows:
    rows: Rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{shown}: line {n}: not JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{shown}: line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((f"line {n}", obj))
    return rows


def _json_array(text: str, shown: str) -> Rows:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{shown}: line {e.lineno}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(doc, list):
        raise DataError(f"{shown}: expected a JSON array of objects, got {type(doc).__name__} "
                        "(one object per line is .jsonl)")
    for i, obj in enumerate(doc):
        if not isinstance(obj, dict):
            raise DataError(f"{shown}: row {i + 1}: expected a JSON object, got {type(obj).__name__}")
    return [(f"row {i + 1}", obj) for i, obj in enumerate(doc)]


def _columnar(data: bytes, kind: str, shown: str, wanted: tuple[str, ...]) -> tuple[list[str], Rows]:
    import pyarrow as pa

    buf = pa.BufferReader(data)
    if kind == ".parquet":
        import pyarrow.parquet as pq

        try:
            file = pq.ParquetFile(buf)
            columns = file.schema_arrow.names
            table = file.read(columns=[c for c in wanted if c in columns])
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{shown}: not a Parquet file ({_first(e)})") from None
    else:
        import pyarrow.ipc as ipc

        try:   # the IPC file format (.arrow, .feather v2), else the stream format `datasets` writes
            table = ipc.open_file(buf).read_all()
        except (pa.ArrowException, OSError):
            try:
                table = ipc.open_stream(pa.BufferReader(data)).read_all()
            except (pa.ArrowException, OSError) as e:
                raise DataError(f"{shown}: not an Arrow IPC file or stream ({_first(e)})") from None
        columns = table.column_names
        table = table.select([c for c in wanted if c in columns])
    # column by column, then zipped: several times faster than pyarrow's row-wise to_pylist
    names, values = table.column_names, table.to_pydict().values()
    return list(columns), [(f"row {i + 1}", dict(zip(names, row))) for i, row in enumerate(zip(*values))]


def _first(e: Exception) -> str:
    return (str(e).strip().splitlines() or [e.__class__.__name__])[0][:160]

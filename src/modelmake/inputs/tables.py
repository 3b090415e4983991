"""Reading TOML tables of a recipe: typed values, unknown keys refused, every problem a
RecipeError naming the file and the key path (so the CLI ends with one line)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from modelmake.core import values
from modelmake.passes.fields import Field

BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")


def close_matches(word: str, candidates: list[str], n: int = 1) -> list[str]:
    """difflib's close matches, for "did you mean" hints (difflib is loaded only when one is needed)."""
    import difflib

    return difflib.get_close_matches(word, candidates, n=n)


class RecipeError(Exception):
    """A recipe problem. str() is always one printable line: file, key path, message."""

    def __init__(self, file: Path | str, key: str, message: str):
        file, key, message = one_line(str(file)), one_line(key), one_line(message)
        super().__init__(f"{file}: {key}: {message}" if key else f"{file}: {message}")
        self.file, self.key, self.message = file, key, message


def one_line(text: str) -> str:
    """Escape what would break a one-line message (newlines, NUL, other control characters)."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        else:
            o = ord(c)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
    return "".join(out)


def key_segment(name: str) -> str:
    """A key as it is written in a key path: bare when TOML allows it, else quoted (and shortened)."""
    if BARE_KEY_RE.match(name):
        return name
    shown = name if len(name) <= 40 else name[:40] + "..."
    return '"' + shown.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Table:
    """A TOML table being read: tracks which keys were consumed to reject unknown ones."""

    def __init__(self, file: Path, path: str, value: Any):
        if not isinstance(value, dict):
            raise RecipeError(file, path or "(top level)", f"expected a table, got {values.type_name(value)}")
        self.file, self.path, self.value, self.seen = file, path, value, set()

    def key(self, name: str) -> str:
        seg = key_segment(name)
        return f"{self.path}.{seg}" if self.path else seg

    def has(self, name: str) -> bool:
        return name in self.value

    def get(self, name: str, kind: str, default: Any = None, *, required: bool = False,
            choices: tuple | None = None, min: float | None = None, max: float | None = None,
            min_items: int = 0) -> Any:
        self.seen.add(name)
        if name not in self.value:
            if required:
                raise RecipeError(self.file, self.key(name), "missing required key")
            return default
        return check_value(self.file, self.key(name), self.value[name], kind, choices, min, max, min_items)

    def field(self, f: Field) -> Any:
        """The value of a declared key (its default when absent)."""
        return self.get(f.name, f.kind, f.default, required=f.required, choices=f.choices, min=f.min,
                        max=f.max, min_items=f.min_items)

    def table(self, name: str, *, required: bool = False) -> "Table | None":
        self.seen.add(name)
        if name not in self.value:
            if required:
                raise RecipeError(self.file, self.key(name), "missing required table")
            return None
        return Table(self.file, self.key(name), self.value[name])

    def done(self, known: list[str] | None = None) -> None:
        unknown = sorted(set(self.value) - self.seen)
        if unknown:
            bad = unknown[0]
            hint = close_matches(bad, known or sorted(self.seen), n=1)
            tip = f" (did you mean '{hint[0]}'?)" if hint else f" (known: {', '.join(sorted(known or self.seen))})"
            raise RecipeError(self.file, self.key(bad), f"unknown key{tip}")


def check_value(file: Path, key: str, v: Any, kind: str, choices=None, min=None, max=None, min_items=0) -> Any:
    """`v` as the key holds it (see core/values.py), or a RecipeError naming the key (or its item)."""
    try:
        return values.check(v, kind, choices, min, max, min_items)
    except values.Problem as p:
        raise RecipeError(file, key + p.where, p.message) from None



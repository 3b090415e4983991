"""Writing a recipe for the user (`modelmake init`, `modelmake import-olive`): TOML text with
comments, validated by the recipe parser before anything is on disk, then put in place through a
temp name and a rename; an existing recipe is kept unless the user says --force."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmake.core.files import atomic_file
from modelmake.inputs import recipe
from modelmake.inputs.recipe import RecipeError

_BARE = re.compile(r"^[A-Za-z0-9_-]+\Z")


def toml_key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def toml_value(v: Any) -> str:
    """A value as TOML writes it; tables inline (the writer's tables are headers, see Doc)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if v != v else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)   # a JSON string is a TOML basic string (\uXXXX escapes included)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML form for {type(v).__name__}")


@dataclass
class Table:
    """One `[header]` (or `[[header]]`) with its keys; `notes` are end-of-line comments by key,
    `comment` the lines above the header."""

    header: str
    items: dict[str, Any]
    comment: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    array: bool = False


@dataclass
class Doc:
    head: list[str] = field(default_factory=list)      # comment lines at the top
    description: str = ""
    tables: list[Table] = field(default_factory=list)
    tail: list[str] = field(default_factory=list)      # comment lines at the end

    def render(self) -> str:
        out = [_comment(line) for line in self.head]
        if self.head:
            out.append("")
        out.append(f"description = {toml_value(self.description)}")
        for t in self.tables:
            out.append("")
            out += [_comment(line) for line in t.comment]
            out.append(f"[[{t.header}]]" if t.array else f"[{t.header}]")
            for k, v in t.items.items():
                note = t.notes.get(k)
                out.append(f"{toml_key(k)} = {toml_value(v)}" + (f"   # {note}" if note else ""))
        if self.tail:
            out.append("")
            out += [_comment(line) for line in self.tail]
        return "\n".join(out) + "\n"


def _comment(line: str) -> str:
    return "#" if not line else "# " + recipe.one_line(line)


def destination(output: str | None, name: str) -> tuple[Path, str]:
    """(the recipe file, its name): `-o` as given, else recipes/<name>.toml of this folder."""
    path = Path(output) if output else Path("recipes") / f"{name}.toml"
    if path.suffix != ".toml":
        raise RecipeError(str(path), "", "a recipe file ends in .toml (recipes/NAME.toml)")
    if not recipe.NAME_RE.match(path.stem):
        raise RecipeError(str(path), "", "recipe file names use a-z, 0-9, '-' and '_'")
    return path, path.stem


def write_recipe(path: Path, text: str, force: bool) -> recipe.Recipe:
    """Validate `text` as the recipe `path` (its project is the folder above recipes/), then write
    it atomically. Nothing is written when it does not validate or when `path` exists and not `force`."""
    shown = str(path)
    if path.exists() and not force:
        raise RecipeError(shown, "", "already exists; pass --force to overwrite it")
    root = Path(os.path.abspath(path)).parent.parent
    parsed = recipe.parse_recipe_text(text, path.stem, root, shown, path)
    atomic_file(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return parsed


def name_from(text: str) -> str:
    """A recipe or step name (a-z, 0-9, '-', '_') made from any label."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "x"

"""Values of recipe settings: the kinds a key can have, checking a value against its kind, bounds
and choices, and showing values in one-line messages and in docs.

The recipe parser (inputs/recipe.py) and the typed pass configs (passes/fields.py) check with the
same function, so a value the parser accepts is one a config takes, and their messages agree.
"""
from __future__ import annotations

import datetime as _dt
import reprlib
from typing import Any

INT64 = (-2**63, 2**63 - 1)   # TOML integers are 64-bit; tomllib accepts any size

# kind -> a value of it, as messages say it
WANT = {"bool": "a boolean", "int": "an integer", "float": "a number", "str": "a string",
        "dataset": "a dataset name (string)", "list[str]": "a list of strings", "list[int]": "a list of integers"}
ITEM_KIND = {"list[str]": "str", "list[int]": "int"}   # a list kind -> the kind of its items
PYTHON_TYPE = {"bool": bool, "int": int, "float": float, "str": str, "dataset": str}


class Problem(ValueError):
    """A value that does not fit its key. `where` is the part of the key path below the key
    ("[1]" for a list's second item); `message` says what was expected and what came."""

    def __init__(self, message: str, where: str = ""):
        super().__init__(f"{where}: {message}" if where else message)
        self.message, self.where = message, where


def check(v: Any, kind: str, choices: tuple | None = None, min: float | None = None,
          max: float | None = None, min_items: int = 0) -> Any:
    """`v` as a key of `kind` holds it (a float for "float", a new list for a list kind), or
    Problem. A list's choices and bounds apply to each of its items."""
    item_kind = ITEM_KIND.get(kind)
    if item_kind is None:
        return _scalar(v, kind, choices, min, max)
    if not isinstance(v, list):
        raise Problem(f"expected {WANT[kind]}, got {type_name(v)} {show(v)}")
    if len(v) < min_items:
        raise Problem(f"needs at least {'one item' if min_items == 1 else f'{min_items} items'}, got {show(v)}")
    # an item's message names its bounds with its type: "expected an integer >= 0, got '2'"
    bounds = " and".join(b for b in (f" >= {min}" if min is not None else "",
                                     f" <= {max}" if max is not None else "") if b)
    out = []
    for i, x in enumerate(v):
        try:
            out.append(_scalar(x, item_kind, choices, min, max, bounds))
        except Problem as p:
            raise Problem(p.message, f"[{i}]") from None
    return out


def _scalar(v: Any, kind: str, choices, min, max, bounds: str = "") -> Any:
    want = WANT[kind] + bounds
    ok = {
        "bool": isinstance(v, bool),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "float": isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": isinstance(v, str), "dataset": isinstance(v, str),
    }[kind]
    if not ok:
        raise Problem(f"expected {want}, got {type_name(v)} {show(v)}")
    if kind == "int" and not INT64[0] <= v <= INT64[1]:
        raise Problem(f"expected a 64-bit integer, got {show(v)}")
    if kind == "float":
        try:
            v = float(v)
        except OverflowError:  # an integer too large for a float
            raise Problem(f"expected a finite number, got {show(v)}") from None
        if v != v or v in (float("inf"), float("-inf")):
            raise Problem(f"expected a finite number, got {v}")
    if choices is not None and v not in choices:
        raise Problem(f"expected one of {', '.join(map(repr, choices))}, got {show(v)}")
    in_bounds = (min is None or v >= min, max is None or v <= max)
    if bounds and not all(in_bounds):   # a list item: its bounds are in `want`
        raise Problem(f"expected {want}, got {show(v)}")
    if not in_bounds[0]:
        raise Problem(f"must be >= {min}, got {show(v)}")
    if not in_bounds[1]:
        raise Problem(f"must be <= {max}, got {show(v)}")
    return v


def type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table", _dt.datetime: "a date-time", _dt.date: "a date",
            _dt.time: "a time"}.get(type(v), type(v).__name__)


_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlong = 60, 60, 40
_repr.maxlist = _repr.maxdict = _repr.maxtuple = 6
_repr.maxlevel = 3


def show(v: Any) -> str:
    """A short repr of a user value for messages (long strings, deep tables and huge ints cut)."""
    if isinstance(v, (_dt.date, _dt.time)):
        return v.isoformat()
    try:
        return _repr.repr(v)
    except (ValueError, RecursionError):  # e.g. an int beyond the str() digit limit
        return type_name(v)


def toml_value(v: Any) -> str:
    """A setting as the user writes it in a recipe (true, "sdpa", ["a", "b"]), for docs and for
    messages that tell what to write."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(map(toml_value, v)) + "]"
    return repr(v)

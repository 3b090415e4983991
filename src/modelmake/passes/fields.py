"""Config keys of a pass (Field) and the typed, frozen config a pass's run receives.

A pass declares its keys once as Fields. From them come: the recipe validation (inputs/recipe.py),
the normalized config dict that goes into store keys, the pass reference in docs/recipes.md, the
JSON Schema of recipes, and here the config class: one frozen dataclass per pass, an attribute per
key with its real type (bool, int, float, str, a Literal of the choices, tuple[...] for a list),
so a run reads `cfg.per_channel`.

A key whose `when` is unmet is absent from the normalized dict (so it is not in the key) and None
in the typed config. Lists are tuples in the config (it is frozen) and lists in the dict.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Mapping, Optional

from modelmake.core import values

KINDS = tuple(values.WANT)   # bool, int, float, str, dataset (a recipe dataset's name), list[str], list[int]
RESERVED = ("name", "type")  # keys every [[pass]] table has


@dataclass(frozen=True)
class Field:
    """One key of a pass config (or of a recipe table): `kind` is one of KINDS. `choices`, `min`
    and `max` of a list kind apply to each item; `min_items` is the fewest items a list takes."""

    name: str
    kind: str
    default: Any
    doc: str
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False
    # (other field, value): the key applies only when that field has that value. Setting it
    # otherwise is a recipe error, and it is left out of the normalized config (and so the key).
    when: tuple[str, Any] | None = None
    min_items: int = 0

    def applies(self, config: Mapping[str, Any]) -> bool:
        """Whether this key is used, given the other keys of a config (its `when` holds)."""
        return self.when is None or config.get(self.when[0]) == self.when[1]

    def check(self, v: Any) -> Any:
        """`v` as this key holds it, or values.Problem."""
        return values.check(v, self.kind, self.choices, self.min, self.max, self.min_items)

    @property
    def annotation(self) -> Any:
        """The Python type of this key in a typed config."""
        item = values.ITEM_KIND.get(self.kind, self.kind)
        t: Any = Literal[tuple(self.choices)] if self.choices else values.PYTHON_TYPE[item]
        if self.kind in values.ITEM_KIND:
            t = tuple[t, ...]
        if self.when is not None or (self.default is None and not self.required):
            t = Optional[t]
        return t


class PassConfig:
    """Base of the generated config classes (see config_class): frozen, with one attribute per field."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    PASS_TYPE: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, normalized: Mapping[str, Any]):
        """The typed config of a normalized config dict (Step.config: every applying key, no other)."""
        unknown = sorted(set(normalized) - {f.name for f in cls.FIELDS})
        if unknown:
            raise TypeError(f"{cls.PASS_TYPE}: unknown config key {unknown[0]!r}")
        attrs = {}
        for f in cls.FIELDS:
            if not f.applies(normalized):
                if f.name in normalized:
                    raise TypeError(f"{cls.PASS_TYPE}.{f.name}: only used when {f.when[0]} = {f.when[1]!r}")
                attrs[f.name] = None
                continue
            if f.name not in normalized:
                raise TypeError(f"{cls.PASS_TYPE}.{f.name}: missing (a normalized config holds every key that applies)")
            v = normalized[f.name]
            if v is not None or f.required or f.default is not None:  # None: an optional key left unset
                try:
                    v = f.check(v)
                except values.Problem as p:
                    raise TypeError(f"{cls.PASS_TYPE}.{f.name}{p.where}: {p.message}") from None
            attrs[f.name] = tuple(v) if isinstance(v, list) else v
        return cls(**attrs)

    @classmethod
    def make(cls, **settings: Any):
        """The config with these settings and every other key at its default, as a recipe
        would be normalized (for code and tests that run a pass without a recipe)."""
        unknown = sorted(set(settings) - {f.name for f in cls.FIELDS})
        if unknown:
            raise TypeError(f"{cls.PASS_TYPE}: unknown config key {unknown[0]!r}")
        missing = [f.name for f in cls.FIELDS if f.required and f.name not in settings]
        if missing:
            raise TypeError(f"{cls.PASS_TYPE}.{missing[0]}: required (it has no default)")
        full = {f.name: settings.get(f.name, f.default) for f in cls.FIELDS}
        return cls.from_dict({f.name: full[f.name] for f in cls.FIELDS
                              if f.applies(full) or f.name in settings})

    def to_dict(self) -> dict[str, Any]:
        """The normalized config dict (keys sorted, lists as lists, unmet `when` keys left out)."""
        attrs = {f.name: getattr(self, f.name) for f in self.FIELDS}
        return {f.name: list(attrs[f.name]) if isinstance(attrs[f.name], tuple) else attrs[f.name]
                for f in sorted(self.FIELDS, key=lambda f: f.name) if f.applies(attrs)}


def check_declaration(pass_type: str, fields: tuple[Field, ...]) -> None:
    """Refuses a declaration whose keys cannot be attributes of its config class or whose defaults
    break their own rules (ValueError naming the key). Cheap: the class itself is made on first use."""
    for i, f in enumerate(fields):
        where = f"pass type {pass_type!r}, field {f.name!r}"
        if not f.name.isidentifier() or f.name in RESERVED or f.name.startswith("_"):
            raise ValueError(f"{where}: a key must be a Python identifier other than {', '.join(RESERVED)}")
        if f.name in {g.name for g in fields[:i]}:
            raise ValueError(f"{where}: declared twice")
        if f.kind not in KINDS:
            raise ValueError(f"{where}: kind {f.kind!r} is not one of {', '.join(KINDS)}")
        if f.when is not None and f.when[0] not in {g.name for g in fields if g is not f}:
            raise ValueError(f"{where}: `when` names no other field of the pass")
        if f.when is not None and f.required:
            raise ValueError(f"{where}: a key that applies only `when` another has a value cannot be required")
        if not f.required:
            try:
                f.check(f.default) if f.default is not None else None
            except values.Problem as p:
                raise ValueError(f"{where}: default {f.default!r} breaks its own rule: {p}") from None


def config_class(pass_type: str, fields: tuple[Field, ...]) -> type[PassConfig]:
    """The frozen dataclass of a pass's config (a declaration check_declaration refuses fails here too)."""
    check_declaration(pass_type, fields)
    name = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", pass_type) if part) + "Config"
    cls = dataclasses.make_dataclass(name, [(f.name, f.annotation) for f in fields], bases=(PassConfig,),
                                     frozen=True, kw_only=True, slots=True, namespace={"__module__": __name__})
    cls.FIELDS, cls.PASS_TYPE = tuple(fields), pass_type
    return cls

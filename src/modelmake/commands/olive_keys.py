"""Reading an Olive config key by key, so that nothing in it is dropped without a word: every key
is either carried into the recipe, or reported (one warning line and a comment at the top of the
recipe) as not mapped or as unknown."""
from __future__ import annotations

import json
from typing import Any


class Unmapped:
    """What an import could not carry over, in the order met: `where: why` per item."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, why: str) -> None:
        self.items.append(f"{where}: {why}")


def shown(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


class Keys:
    """The keys of one Olive table being read: `take` consumes one, `finish` reports the rest.
    `no_effect` names keys modelmake has no setting for, with the value at which leaving them out
    changes nothing (Olive's default); another value is reported as not mapped, with its reason."""

    def __init__(self, table: Any, where: str, unmapped: Unmapped):
        self.rest = dict(table) if isinstance(table, dict) else {}
        self.where, self.unmapped = where, unmapped

    def take(self, name: str, default: Any = None) -> Any:
        v = self.rest.pop(name, None)
        return default if v is None else v

    def has(self, name: str) -> bool:
        return self.rest.get(name) is not None

    def report(self, name: str, why: str) -> None:
        self.unmapped.add(f"{self.where}.{name}", why)

    def finish(self, no_effect: dict[str, tuple[Any, str]] | None = None) -> None:
        no_effect = no_effect or {}
        for k, v in self.rest.items():
            if k in no_effect:
                default, why = no_effect[k]
                if v is None or v == default or (isinstance(default, tuple) and v in default):
                    continue
                self.report(k, f"{shown(v)} not mapped ({why})")
            else:
                self.report(k, f"unknown Olive key (value {shown(v)}), not mapped")
        self.rest = {}

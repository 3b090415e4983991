"""Extra pass types from the user's own modules ($MODELMAKE_PLUGINS="pkg.mod,other.mod").

A plugin module calls modelmake.passes.register(Pass(...)) when imported; its run function is
referenced as "module:function" and only imported when a step of that type executes.
"""
from __future__ import annotations

import importlib


class PluginError(Exception):
    pass


def load(modules: str) -> list[str]:
    loaded = []
    for name in (m.strip() for m in modules.split(",")):
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - reported as one line by the caller
            raise PluginError(f"cannot import plugin module {name!r}: {e.__class__.__name__}: {e}") from None
        loaded.append(name)
    return loaded

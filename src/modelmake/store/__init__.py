"""The content-addressed store: build key -> verified folder of files (see local.py).

`Store` is loaded on first use (PEP 562): loading the tasks of a no-op build needs only the remote's
configuration (store/remote.py), not the store's code.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelmake.store.local import Store

__all__ = ["Store"]


def __getattr__(name: str):
    if name == "Store":
        from modelmake.store.local import Store
        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

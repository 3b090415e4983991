"""The content-addressed store: build key -> verified folder of files (see local.py)."""
from modelmake.store.local import Store

__all__ = ["Store"]

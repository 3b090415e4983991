"""A Hugging Face dataset at a pinned commit, read with `datasets` and kept as Parquet per split.

The source step's folder then holds plain files (<split>/0000-<name>.parquet and the split index
the loader reads), so every key downstream is the digest of those files, never `datasets`' own
cache fingerprint; `datasets` keeps its cache in a temporary folder that is removed afterwards,
not in the user's home. Needs network at build time; offline it fails in one line, as a hub model does.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from modelmake.core.progress import say
from modelmake.inputs.sources import SourceError, write_index


def fetch_dataset(spec: dict, out: Path) -> None:
    from modelmake.inputs.data import INDEX

    hub, revision = spec["hub"], spec["revision"]
    try:
        import datasets
        import pyarrow.parquet as pq
    except ImportError as e:  # pragma: no cover - both are dependencies of modelmake
        raise SourceError(f"hub datasets need the datasets package ({e})") from None
    say(f"    downloading the dataset {hub}@{revision} (datasets)")
    index = {}
    with tempfile.TemporaryDirectory(prefix="mm-datasets-") as cache:
        for ours, theirs in spec["splits"].items():
            try:
                ds = datasets.load_dataset(hub, spec["config"], split=theirs, revision=revision, cache_dir=cache)
            except Exception as e:  # noqa: BLE001 - any hub failure becomes one clear line
                first = (str(e).strip().splitlines() or [e.__class__.__name__])[0]
                raise SourceError(f"cannot download the dataset {hub}@{revision} (split {theirs!r}) from the hub "
                                  f"(offline?): {first}") from None
            name = f"{ours}/0000-{_safe(theirs)}.parquet"
            (out / ours).mkdir(exist_ok=True)
            pq.write_table(ds.data.table, out / name)
            index[ours] = [{"file": name, "from": f"{hub}@{revision[:12]} split {theirs}"}]
    write_index(out / INDEX, index)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)

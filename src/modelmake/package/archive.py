"""What makes a package zip byte-for-byte reproducible from the same inputs: sorted entries (the
callers' job), fixed times and permissions, a fixed compression level, JSON with sorted keys. Its
digest can then serve as the build's identity."""
from __future__ import annotations

import json
import zipfile

DATE = (1980, 1, 1, 0, 0, 0)
LEVEL = 6


def dumps(obj) -> bytes:
    return (json.dumps(obj, sort_keys=True, separators=(",", ": "), indent=1, ensure_ascii=False)
            + "\n").encode("utf-8")


def entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=DATE)
    info.create_system = 3  # Unix, so the permission bits below are honoured on extraction
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info

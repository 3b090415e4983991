"""The entry that makes one result visible in a remote: its files by name, sha256, size and xxh3.

Written under `<base>/ac/<ac_key(store key)>` as a JSON-encoded ActionResult of Bazel's Remote
Execution API (`outputFiles[]`: path, digest {hash, sizeBytes}, and the local manifest's xxh3 as a
node property), so that a stock bazel-remote, which validates action-cache entries as
ActionResults, stores it, and nginx or an object store keep it as the bytes it is. The entry holds
everything the local manifest holds, so a result's manifest (and so its content digest) is known
from the entry alone, without downloading the files.

Nothing in an entry is trusted: `decode` rejects names that could leave the result's folder
(`..`, absolute paths, ...) and anything malformed, with a short reason.
"""
from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from modelmake.core import digest

# part of every action-cache key: another layout of entries gets other keys instead of misreading these
_NAMESPACE = b"modelmake-store-v1:"
_XXH3 = "modelmake.xxh3"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_XXH3_HEX = re.compile(r"[0-9a-f]{32}")
MAX_FILES = 100_000
MAX_SIZE = 1 << 44  # 16 TiB: a larger size in an entry is a lie, not a model


class EntryError(ValueError):
    """An entry that cannot be used; str() is the reason in a few words."""


@dataclass(frozen=True)
class FileRef:
    path: str      # relative POSIX path inside the result's folder
    sha256: str    # the blob's name in cas/
    size: int
    xxh3: str      # as in the local manifest


@dataclass(frozen=True)
class Entry:
    files: tuple[FileRef, ...]
    meta: dict | None = None  # how the result was built ({"build_seconds", "built_at"}), if known

    def manifest(self) -> dict[str, Any]:
        """The local store manifest of this result (byte-identical once written by manifest_bytes)."""
        return {"files": {f.path: {"size": f.size, "xxh3": f.xxh3} for f in self.files}}

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def ac_key(key: str) -> str:
    """The action-cache name of a store key: 64 lowercase hex, as bazel-remote requires."""
    return hashlib.sha256(_NAMESPACE + key.encode()).hexdigest()


def encode(entry: Entry) -> bytes:
    out: dict[str, Any] = {"outputFiles": [
        {"path": f.path, "digest": {"hash": f.sha256, "sizeBytes": str(f.size)},
         "nodeProperties": {"properties": [{"name": _XXH3, "value": f.xxh3}]}}
        for f in sorted(entry.files, key=lambda f: f.path)]}
    meta = entry.meta or {}
    end = _parse_time(meta.get("built_at"))
    seconds = meta.get("build_seconds")
    if end is not None and isinstance(seconds, (int, float)) and seconds >= 0:
        start = end - _dt.timedelta(seconds=seconds)
        out["executionMetadata"] = {"worker": "modelmake", "executionStartTimestamp": _rfc3339(start),
                                    "executionCompletedTimestamp": _rfc3339(end)}
    return json.dumps(out, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes) -> Entry:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        raise EntryError("entry is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputFiles", []), list):
        raise EntryError("entry is not an ActionResult")
    raw = doc.get("outputFiles", [])
    if len(raw) > MAX_FILES:
        raise EntryError(f"entry lists {len(raw)} files")
    files, seen = [], set()
    for item in raw:
        ref = _file_ref(item)
        if ref.path in seen:
            raise EntryError(f"entry lists {ref.path!r} twice")
        seen.add(ref.path)
        files.append(ref)
    for ref in files:  # a file cannot also be a folder of another: no real folder looks like that
        parts = ref.path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise EntryError(f"entry lists {'/'.join(parts[:i])!r} as a file and a folder")
    return Entry(tuple(sorted(files, key=lambda f: f.path)), _meta(doc.get("executionMetadata")))


def _file_ref(item: Any) -> FileRef:
    if not isinstance(item, dict) or not isinstance(item.get("digest"), dict):
        raise EntryError("entry has a malformed file")
    path = item.get("path")
    problem = unsafe_path(path)
    if problem:
        raise EntryError(f"unsafe file name {str(path)[:80]!r}: {problem}")
    sha = item["digest"].get("hash")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise EntryError(f"{path}: not a sha256 digest")
    size = item["digest"].get("sizeBytes", 0)  # protobuf JSON leaves a zero out, and writes int64 as a string
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
        raise EntryError(f"{path}: malformed size")
    props = (item.get("nodeProperties") or {}).get("properties") or []
    xxh3 = next((p.get("value") for p in props if isinstance(p, dict) and p.get("name") == _XXH3), None)
    if not isinstance(xxh3, str) or not _XXH3_HEX.fullmatch(xxh3):
        raise EntryError(f"{path}: no xxh3 digest")
    return FileRef(path, sha, size, xxh3)


def unsafe_path(path: Any) -> str | None:
    """Why `path` cannot name a file inside a result's folder, or None. Names that would escape
    the folder, hide from manifests (.mm-*) or replace the manifest are refused."""
    if not isinstance(path, str) or not path:
        return "not a name"
    if len(path) > 1024 or "\x00" in path or "\\" in path or not path.isprintable():
        return "unusable characters"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "not a plain relative path"
    if any(p.startswith(".mm-") for p in parts) or path == digest.MANIFEST:
        return "reserved name"
    return None


def note_key(name: str) -> str:
    """The action-cache name of a note (a small fact beside the results, e.g. which hosts measured
    some inputs): namespaced apart from every store key."""
    return ac_key("note:" + name)


def encode_note(data: dict) -> bytes:
    """A note as an ActionResult that lists no files and carries its JSON as stdout (bazel-remote
    keeps stdout inline), so any Bazel cache stores it."""
    raw = base64.b64encode(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).decode()
    return json.dumps({"stdoutRaw": raw}, sort_keys=True, separators=(",", ":")).encode()


def decode_note(data: bytes) -> dict | None:
    """The note's JSON object, or None when the bytes are not a note."""
    try:
        doc = json.loads(data)
        note = json.loads(base64.b64decode(doc["stdoutRaw"], validate=True)) if isinstance(doc, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return note if isinstance(note, dict) else None


def _meta(data: Any) -> dict | None:
    if not isinstance(data, dict):
        return None
    start = _parse_time(data.get("executionStartTimestamp"))
    end = _parse_time(data.get("executionCompletedTimestamp"))
    if start is None or end is None or end < start:
        return None
    return {"build_seconds": round((end - start).total_seconds(), 3),
            "built_at": end.isoformat(timespec="seconds")}


def _parse_time(value: Any) -> _dt.datetime | None:
    if not isinstance(value, str):
        return None
    value = re.sub(r"(\.\d{6})\d+", r"\1", value)  # protobuf JSON may write nanoseconds
    try:
        t = _dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=_dt.timezone.utc)


def _rfc3339(t: _dt.datetime) -> str:
    return t.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")



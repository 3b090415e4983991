"""xxh3 digests of bytes, files and folders, canonical JSON and installed library versions.

A folder's content is described by a manifest (relative path -> digest and size). The manifest
is written next to the files as manifest.json; its bytes are a digest of the whole folder, which
is what makes a folder usable as a single doit dependency with content semantics.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import xxhash

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def canonical(obj: Any) -> bytes:
    """JSON that is identical for equal values (sorted keys, fixed separators)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bytes_digest(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def key_of(obj: Any) -> str:
    return bytes_digest(canonical(obj))


def hasher() -> "xxhash.xxh3_128":
    """An incremental content digest (update(bytes), hexdigest()): equal to file_digest of the bytes fed."""
    return xxhash.xxh3_128()


def file_digest(path: Path | str) -> str:
    h = hasher()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def list_files(folder: Path) -> list[Path]:
    """Files below folder (relative, sorted), except the manifest itself and hidden temp files."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".mm-"))
        for f in files:
            rel = Path(root, f).relative_to(folder)
            if rel.as_posix() != MANIFEST and not f.startswith(".mm-"):
                out.append(rel)
    return sorted(out, key=lambda p: p.as_posix())


def folder_manifest(folder: Path) -> dict[str, Any]:
    files = {}
    for rel in list_files(folder):
        p = folder / rel
        files[rel.as_posix()] = {"size": p.stat().st_size, "xxh3": file_digest(p)}
    return {"files": files}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, indent=1).encode() + b"\n"


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_bytes())


def folder_content(folder: str | Path) -> str:
    """A folder's content digest: the digest of its manifest's bytes (the same for its store object)."""
    return bytes_digest((Path(folder) / MANIFEST).read_bytes())


def verify_folder(folder: Path, manifest: dict[str, Any] | None = None) -> str | None:
    """None if every file matches its manifest entry, else a short description of the first problem."""
    try:
        manifest = manifest if manifest is not None else read_manifest(folder)
        expected = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e.__class__.__name__})"
    actual = [p.as_posix() for p in list_files(folder)]
    if sorted(expected) != actual:
        extra = set(actual) - set(expected)
        missing = set(expected) - set(actual)
        return f"missing {sorted(missing)[0]}" if missing else f"unexpected file {sorted(extra)[0]}"
    for rel, info in expected.items():
        p = folder / rel
        if p.stat().st_size != info["size"]:
            return f"{rel}: size {p.stat().st_size} != {info['size']}"
        if file_digest(p) != info["xxh3"]:
            return f"{rel}: content digest mismatch"
    return None


@lru_cache(maxsize=None)
def library_version(dist: str) -> str:
    """Installed version of a distribution, read from its metadata (no import of the library).

    The Version line of the first `.dist-info` folder of that name on sys.path, as
    importlib.metadata finds it; anything else (eggs, zips, a folder without the line) goes to
    importlib.metadata itself. Its own lookup parses the whole METADATA file as an e-mail, which
    cost a no-op build ~2 ms per library."""
    info = _dist_infos().get(_normalized(dist))
    if info:
        try:
            with open(os.path.join(info, "METADATA"), encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Version:"):
                        return line[len("Version:"):].strip()
                    if not line.strip():  # the end of the headers
                        break
        except OSError:
            pass
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not-installed"


def _normalized(name: str) -> str:
    """PEP 503's name normalization, with `_` (how dist-info folders spell a `-`)."""
    return "_".join(filter(None, name.lower().replace("-", "_").replace(".", "_").split("_")))


@lru_cache(maxsize=1)
def _dist_infos() -> dict[str, str]:
    """normalized distribution name -> its first `<name>-<version>.dist-info` folder on sys.path,
    or "" when an `.egg-info` of that name comes first (importlib.metadata would read that one)."""
    found: dict[str, str] = {}
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:  # not a folder (a zip, or gone)
            continue
        for name in names:
            if name.endswith(".dist-info"):
                found.setdefault(_normalized(name.split("-", 1)[0]), os.path.join(entry or ".", name))
            elif name.endswith(".egg-info"):
                found.setdefault(_normalized(name[:-len(".egg-info")].split("-", 1)[0]), "")
    return found


def library_versions(dists: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {d: library_version(d) for d in sorted(dists)}


def sha256_file(path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (pins of fetched files, remote blobs, package manifests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()

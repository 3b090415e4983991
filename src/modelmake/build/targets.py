"""Build outputs under artifacts/: placed atomically, and checked before they are trusted.

Every target is copied from a verified store object into a temp name beside it and renamed into
place. A small sidecar (`.mm-stat*`, ignored by manifests) records each file's size, mtime and
digest at that moment, so a later run can tell cheaply (stat only) that a target is untouched, and
for certain (digest) that one was edited, truncated or bit-flipped on disk — then the task is
stale and its result is restored from the store instead of being handed on.

A step whose result only the remote holds is placed as a stub (builds without the bytes): its
folder holds the result's `manifest.json` (so downstream dependencies and keys are the same as for
the full folder) and a `.mm-remote.json` marker naming the key, the remote and the files' count
and size. The sidecar covers both, so a stub is intact when neither changed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from modelmake.core import digest
from modelmake.core.faults import kill_point
from modelmake.core.files import atomic_file, copy_writable, rmtree, sweep_leftovers, unique

FOLDER_SIDECAR = ".mm-stat.json"
REMOTE_MARKER = ".mm-remote.json"   # in a stub folder: where its files are
FAILED_MARKER = ".mm-failed.json"   # in the folder of a search trial's failed step: why
# a target without a sidecar (placed by hand, or before sidecars existed) is not trusted, but it
# is not "damaged" either: runner replaces it without a warning
NO_RECORD = "no record of what was placed there"


def _sidecar(path: Path) -> Path:
    return path / FOLDER_SIDECAR if path.is_dir() else path.parent / f".mm-stat-{path.name}.json"


def _files(path: Path) -> dict[str, Path]:
    if path.is_dir():
        rels = [p.as_posix() for p in digest.list_files(path)] + [digest.MANIFEST, REMOTE_MARKER, FAILED_MARKER]
        return {rel: path / rel for rel in rels if (path / rel).exists()}
    return {path.name: path}


def stub_of(path: Path) -> dict | None:
    """The marker of a stub folder ({"key", "remote", "files", "size"}), or None for anything else."""
    try:
        marker = json.loads((Path(path) / REMOTE_MARKER).read_bytes())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("key"), str) else None


def record(path: Path, known: dict[str, tuple[int, str]] | None = None) -> None:
    """Remember what `path` (a file or folder just materialized) looks like; `known`: relative
    path -> (size, digest) of files whose content is already known."""
    state = {}
    for rel, f in _files(path).items():
        st = f.stat()
        size, xxh3 = (known or {}).get(rel, (None, None))
        state[rel] = [st.st_size, st.st_mtime_ns, xxh3 if size == st.st_size else digest.file_digest(f)]
    atomic_file(_sidecar(path), lambda tmp: tmp.write_text(json.dumps(state, sort_keys=True)))


def problem(path: Path) -> str | None:
    """None if `path` is as materialized; else what is wrong, in a few words."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        state = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return NO_RECORD
    files = _files(path)
    if set(files) != set(state):
        extra, missing = set(files) - set(state), set(state) - set(files)
        return f"{sorted(missing)[0]} is missing" if missing else f"unexpected file {sorted(extra)[0]}"
    changed = False
    for rel, f in files.items():
        size, mtime_ns, xxh3 = state[rel]
        st = f.stat()
        if st.st_size != size:
            return f"{rel} changed size ({size} -> {st.st_size} bytes)"
        if st.st_mtime_ns != mtime_ns:
            if digest.file_digest(f) != xxh3:
                return f"{rel} was changed on disk (content digest mismatch)"
            changed = True
    if changed:  # touched but identical: refresh the stat cache so the digest is not redone
        record(path)
    return None


def holds(path: Path, manifest: bytes) -> bool:
    """`path` is an intact full folder (not a stub) whose manifest is `manifest`."""
    try:
        same = (Path(path) / digest.MANIFEST).read_bytes() == manifest
    except OSError:
        return False
    return same and stub_of(path) is None and problem(path) is None


def intact(paths: list[str]) -> bool:
    """doit `uptodate` check: every target is as it was placed."""
    return all(problem(Path(p)) is None for p in paths)


def place_folder(obj: Path, dest: Path) -> None:
    """Copy a store object to dest: a full copy next to dest, then swapped in by renames. The
    object was verified against its manifest just before, so the copy is recorded with the
    manifest's digests instead of hashing every byte again."""
    known = {rel: (info["size"], info["xxh3"]) for rel, info in digest.read_manifest(obj)["files"].items()}
    _swap_in(dest, lambda tmp: shutil.copytree(obj, tmp, copy_function=copy_writable), known)


def place_stub(dest: Path, manifest: bytes, marker: dict) -> None:
    """Put the stub of a result whose files stay in the remote at dest: its manifest and marker."""
    def fill(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / digest.MANIFEST).write_bytes(manifest)
        (tmp / REMOTE_MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
    _swap_in(dest, fill)


def _swap_in(dest: Path, fill, known: dict[str, tuple[int, str]] | None = None, recorded: bool = True) -> None:
    """Make a folder with `fill(temp path)` next to dest, then swap it in by renames."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_leftovers(dest)
    tmp = dest.parent / f".mm-{dest.name}.{unique()}"
    old = dest.parent / f".mm-old-{dest.name}.{unique()}"
    try:
        fill(tmp)
        if dest.exists():
            os.rename(dest, old)
        kill_point("place")
        os.rename(tmp, dest)
    finally:  # also on KeyboardInterrupt: no half-copied folder is left behind
        for leftover in (tmp, old):
            if leftover.exists():
                rmtree(leftover)
    if recorded:
        record(dest, known)


def place_failure(dest: Path, failure: dict) -> None:
    """A search trial's step that failed (or whose input did): its target says so instead of
    holding a result, so the steps after it skip and the search records the trial as failed.
    Nothing of a failure is kept: without a sidecar the target is never intact, and the step
    runs again in the next build."""
    body = digest.canonical({"failed": failure})
    if Path(dest).suffix:   # a file target (metrics.json)
        remove(dest)
        atomic_file(dest, lambda tmp: tmp.write_bytes(body))
        return

    def fill(tmp: Path) -> None:
        tmp.mkdir()
        (tmp / digest.MANIFEST).write_bytes(body)   # downstream tasks depend on the manifest
        (tmp / FAILED_MARKER).write_bytes(body)
    _swap_in(dest, fill, recorded=False)


def failure_of(path: Path) -> dict | None:
    """What failed, when `path` holds a trial step's failure (place_failure), else None."""
    path = Path(path)
    where = path / FAILED_MARKER if not path.suffix else path
    try:
        if where.stat().st_size > 1 << 16:   # a real metrics.json, not a failure
            return None
        data = json.loads(where.read_bytes())
    except (OSError, ValueError):
        return None
    failed = data.get("failed") if isinstance(data, dict) else None
    return failed if isinstance(failed, dict) and isinstance(failed.get("task"), str) else None


def place_file(src: Path, dest: Path) -> None:
    atomic_file(dest, lambda tmp: copy_writable(src, tmp))
    record(dest)


def remove(path: Path) -> None:
    side = _sidecar(path) if path.exists() else None
    if path.is_dir():
        rmtree(path)
    elif path.exists():
        path.unlink()
    if side is not None and side.exists() and side.parent.exists():
        side.unlink()

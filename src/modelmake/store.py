"""Content-addressed store: build key -> folder of files with a manifest.

Objects are built in a private temp folder, manifested, made read-only and renamed into place,
so an object either exists complete or not at all. A per-key lock makes concurrent processes
(doit -n 2, two checkouts sharing a store) wait for each other instead of building one key twice.
Every object is verified against its manifest before it is used; a damaged one is discarded.
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import stat
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from modelmake import digest
from modelmake.progress import say


class Store:
    def __init__(self, root: Path):
        self.root = Path(root)

    # -- layout
    def object_dir(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def _scratch(self, name: str) -> Path:
        d = self.root / "tmp" / f"{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    @contextmanager
    def lock(self, key: str, label: str) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                say(f"  {label}: waiting for another process that is building the same result")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- queries
    def lookup(self, key: str, label: str) -> Path | None:
        """The verified object for key, or None. A damaged object is discarded (and said so)."""
        obj = self.object_dir(key)
        if not obj.is_dir():
            return None
        problem = digest.verify_folder(obj)
        if problem is None:
            return obj
        say(f"  {label}: store object {key[:12]} is damaged ({problem}); discarding it and rebuilding")
        self.discard(key)
        return None

    def discard(self, key: str) -> None:
        obj = self.object_dir(key)
        trash = self.root / "tmp" / f"discard.{key}.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(obj, trash)
        except FileNotFoundError:
            return
        _rmtree(trash)

    # -- writes
    def publish(self, key: str, folder: Path) -> Path:
        """Move a fully built folder into the store under key (atomic rename)."""
        manifest = digest.folder_manifest(folder)
        _write_file(folder / digest.MANIFEST, digest.manifest_bytes(manifest))
        for rel in manifest["files"]:
            _fsync(folder / rel)
            os.chmod(folder / rel, 0o444)  # store objects are never edited in place
        obj = self.object_dir(key)
        obj.parent.mkdir(parents=True, exist_ok=True)
        os.rename(folder, obj)
        _fsync_dir(obj.parent)
        return obj

    def get_or_build(self, key: str, build: Callable[[Path], None], label: str) -> tuple[Path, bool]:
        """Return (object folder, built?) — restored from the store when it holds the key."""
        with self.lock(key, label):
            obj = self.lookup(key, label)
            if obj is not None:
                return obj, False
            scratch = self._scratch(key[:16])
            try:
                build(scratch)
                return self.publish(key, scratch), True
            finally:
                if scratch.exists():
                    _rmtree(scratch)


# ---------------------------------------------------------------- materializing into artifacts/
def materialize_folder(obj: Path, dest: Path) -> None:
    """Copy a store object to dest atomically: a full copy next to dest, then swapped in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".mm-{dest.name}.{uuid.uuid4().hex[:8]}"
    shutil.copytree(obj, tmp, copy_function=_copy_writable)
    old = None
    if dest.exists():
        old = dest.parent / f".mm-old-{dest.name}.{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        _rmtree(old)


def materialize_file(src: Path, dest: Path) -> None:
    _atomic_file(dest, lambda tmp: _copy_writable(src, tmp))


def write_file_atomic(dest: Path, data: bytes) -> None:
    _atomic_file(dest, lambda tmp: _write_file(tmp, data))


def _atomic_file(dest: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp name in dest's folder, then rename: dest is whole or untouched."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".mm-{dest.name}.{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_path(path: Path) -> None:
    if path.is_dir():
        _rmtree(path)
    elif path.exists():
        path.unlink()


def _copy_writable(src, dst) -> None:
    # copy2 keeps the object's mtime, so a restored file looks unchanged to the stat cache
    shutil.copy2(src, dst)
    os.chmod(dst, 0o644)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass  # some filesystems do not allow fsync on directories


def _rmtree(path: Path) -> None:
    def onerror(func, p, exc_info):
        os.chmod(p, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
        func(p)
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            try:
                os.chmod(os.path.join(root, d), 0o755)
            except OSError:
                pass
    shutil.rmtree(path, onerror=onerror)

"""Content-addressed store: build key -> folder of files with a manifest.

Objects are built in a private temp folder, manifested, made read-only and renamed into place,
so an object either exists complete or not at all. A per-key lock makes concurrent processes
(doit -n 2, two checkouts sharing a store) wait for each other instead of building one key twice.
Every object is verified against its manifest before it is used; a damaged one is discarded.

With a remote (remote.py), a local miss asks the remote: its result is downloaded into a temp
folder, verified, and published here like a built one; a result built here is uploaded after it
is published. Both happen under the key's lock, and neither ever fails a build.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from modelmake.core import digest
from modelmake.core.faults import kill_point
from modelmake.core.files import atomic_file, fsync, fsync_dir, rmtree, write_durably
from modelmake.core.progress import say
from modelmake.store import remote_transfer
from modelmake.store.remote import Remote, RemoteConfig, remote_for


class Store:
    def __init__(self, root: Path, remote: RemoteConfig | None = None):
        self.root = Path(root)
        self.used: list[str] = []  # keys this process asked for (recorded so gc knows what is live)
        self.remote: Remote | None = remote_for(remote) if remote is not None else None

    # -- layout
    def object_dir(self, key: str) -> Path:
        return self.root / "objects" / key[:2] / key

    def meta_file(self, key: str) -> Path:
        # beside the object, not in it: build facts must not change the object's content digest
        return self.root / "meta" / key[:2] / f"{key}.json"

    def meta(self, key: str) -> dict | None:
        """How the object was built ({"build_seconds", "built_at"}), or None when unknown."""
        try:
            data = json.loads(self.meta_file(key).read_bytes())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

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

    def has(self, key: str) -> bool:
        """The store holds an object for key (not verified: lookup verifies)."""
        return (self.object_dir(key) / digest.MANIFEST).is_file()

    def discard(self, key: str) -> None:
        obj = self.object_dir(key)
        trash = self.root / "tmp" / f"discard.{key}.{uuid.uuid4().hex[:8]}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(obj, trash)
        except FileNotFoundError:
            return
        rmtree(trash)

    # -- writes
    def publish(self, key: str, folder: Path, manifest: dict | None = None) -> Path:
        """Move a fully built folder into the store under key (atomic rename). `manifest`, when
        given, has been verified against the folder's files already (a download)."""
        manifest = manifest if manifest is not None else digest.folder_manifest(folder)
        write_durably(folder / digest.MANIFEST, digest.manifest_bytes(manifest))
        for rel in manifest["files"]:
            fsync(folder / rel)
            os.chmod(folder / rel, 0o444)  # store objects are never edited in place
        obj = self.object_dir(key)
        obj.parent.mkdir(parents=True, exist_ok=True)
        kill_point("publish")
        os.rename(folder, obj)
        fsync_dir(obj.parent)
        kill_point("published")
        return obj

    def get_or_build(self, key: str, build: Callable[[Path], None], label: str) -> tuple[Path, bool]:
        """Return (object folder, built?) — restored from the store (or its remote) when it holds the key."""
        self.used.append(key)
        with self.lock(key, label):
            obj = self.lookup(key, label)
            if obj is not None:
                return obj, False
            obj, damaged = self._download(key, label)
            if obj is not None:
                return obj, False
            scratch = self._scratch(key[:16])
            try:
                t0 = time.monotonic()
                build(scratch)
                seconds = time.monotonic() - t0
                obj = self.publish(key, scratch)
                self._write_meta(key, {"build_seconds": round(seconds, 3), "built_at": _now()})
            finally:
                if scratch.exists():
                    rmtree(scratch)
            if self.remote is not None:  # after publishing: a failed build never reaches the remote
                remote_transfer.upload(self.remote, key, obj, self.meta(key), label, force=damaged)
            return obj, True

    # -- the remote
    def restore(self, key: str, label: str) -> Path | None:
        """The verified object for key, from this store or else downloaded from the remote."""
        with self.lock(key, label):
            return self.lookup(key, label) or self._download(key, label)[0]

    def upload(self, key: str, label: str) -> bool | None:
        """Put this store's object for key on the remote: True once there, None when this store
        does not hold it, False when the remote cannot take it (said in one line)."""
        if self.remote is None:
            return False
        with self.lock(key, label):
            obj = self.lookup(key, label)
            if obj is None:
                return None
            return remote_transfer.upload(self.remote, key, obj, self.meta(key), label)

    def remote_manifest(self, key: str) -> dict | None:
        """The manifest of the remote's result for key, read from its entry (nothing downloaded)."""
        return remote_transfer.remote_manifest(self.remote, key) if self.remote is not None else None

    def _download(self, key: str, label: str) -> tuple[Path | None, bool]:
        """(object, damaged): the remote's result published here, or None (damaged: the remote's
        copy is unusable and should be replaced)."""
        if self.remote is None or not self.remote.usable:
            return None, False
        scratch = self._scratch(f"remote.{key[:16]}")
        try:
            entry, damaged = remote_transfer.download(self.remote, key, scratch, label)
            if entry is None:
                return None, damaged
            obj = self.publish(key, scratch, entry.manifest())
            if entry.meta:
                self._write_meta(key, entry.meta)
            return obj, False
        finally:
            if scratch.exists():
                rmtree(scratch)

    def _write_meta(self, key: str, meta: dict) -> None:
        try:
            atomic_file(self.meta_file(key), lambda tmp: tmp.write_bytes(digest.canonical(meta)))
        except OSError:
            pass  # build facts are informative; losing them must not fail a finished build

    # -- maintenance
    def keys(self) -> list[str]:
        objects = self.root / "objects"
        return sorted(p.name for p in objects.glob("??/*") if p.is_dir()) if objects.is_dir() else []

    def size_of(self, key: str) -> int:
        return sum(f.stat().st_size for f in self.object_dir(key).rglob("*") if f.is_file())

    def verify_all(self, discard: bool = False) -> dict[str, str]:
        """{key: problem} for every damaged object (discarded when asked)."""
        damaged = {}
        for key in self.keys():
            with self.lock(key, f"verify {key[:12]}"):
                problem = digest.verify_folder(self.object_dir(key))
                if problem is not None:
                    damaged[key] = problem
                    if discard:
                        self.discard(key)
        return damaged

    def gc(self, live: set[str], dry_run: bool = False, tmp_age_s: float = 3600) -> tuple[list[str], int]:
        """Remove objects whose key is not in `live`, and temp folders left by killed builds
        (older than tmp_age_s, so a build running now is not disturbed).

        Returns (removed keys, bytes freed); with dry_run nothing is removed.
        """
        dead = [k for k in self.keys() if k not in live]
        freed = 0
        for key in dead:
            freed += self.size_of(key)
            if not dry_run:
                with self.lock(key, f"gc {key[:12]}"):
                    self.discard(key)
                    self.meta_file(key).unlink(missing_ok=True)
        tmp = self.root / "tmp"
        now = time.time()
        for leftover in (tmp.iterdir() if tmp.is_dir() else []):
            if now - leftover.stat().st_mtime > tmp_age_s:
                freed += sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file())
                if not dry_run:
                    rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        return dead, freed


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

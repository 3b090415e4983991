"""Content-addressed store: build key -> folder of files with a manifest.

Objects are built in a private temp folder, manifested, made read-only and renamed into place,
so an object either exists complete or not at all. A per-key lock makes concurrent processes
(doit -n 2, two checkouts sharing a store) wait for each other instead of building one key twice.
Every object is verified against its manifest before it is used; a damaged one is discarded.

With a remote (remote.py), a local miss asks the remote: its result is downloaded into a temp
folder, verified, and published here like a built one; a result built here is uploaded after it
is published. Both happen under the key's lock, and neither ever fails a build.

Builds without the bytes: a caller that may not need a result's files (`lazy`) gets a `Stub`
instead when only the remote holds it: the remote's entry, kept under stubs/, which gives the
result's manifest (and so its content digest) without downloading a file. `materialize` fetches
the files when a step really reads them: all of them into objects/, or a few (a tokenizer's)
into partial/.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from modelmake.core import digest
from modelmake.core.faults import kill_point
from modelmake.core.files import atomic_file, fsync, fsync_dir, rmtree, unique, write_durably
from modelmake.core.progress import say
from modelmake.store import remote_transfer
from modelmake.store.remote import Remote, RemoteConfig, RemoteError, remote_for
from modelmake.store.remote_entry import Entry, EntryError, decode, encode


LOST_DAMAGED, LOST_UNREACHABLE = "damaged", "unreachable"


@dataclass(frozen=True)
class Stub:
    """A result the remote holds and this store knows by its entry only: its files stay there
    until a step reads them (Store.materialize)."""

    key: str
    entry: Entry

    def manifest(self) -> dict:
        return self.entry.manifest()

    @property
    def files(self) -> int:
        return len(self.entry.files)

    @property
    def size(self) -> int:
        return self.entry.size


@dataclass(frozen=True)
class Elsewhere:
    """What a build function returns when the result was computed elsewhere and only copied into
    the scratch folder: that build's facts (kept as the result's meta) and whether the remote holds it."""

    meta: dict
    on_remote: bool


class Unavailable(Exception):
    """The files of a result known only from the remote cannot be had now; str() says why, and
    `damaged` whether the remote's copy is unusable (rather than the remote unreachable)."""

    def __init__(self, reason: str, damaged: bool = False):
        super().__init__(reason)
        self.damaged = damaged


class Store:
    def __init__(self, root: Path, remote: RemoteConfig | None = None):
        self.root = Path(root)
        self.used: list[str] = []  # keys this process asked for (recorded so gc knows what is live)
        self.remote: Remote | None = remote_for(remote) if remote is not None else None
        self._entries: dict[str, dict | None] = {}  # remote manifests asked for by this process

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

    def stub_file(self, key: str) -> Path:
        return self.root / "stubs" / key[:2] / f"{key}.json"

    def lost_file(self, key: str) -> Path:
        # a stub whose files could not be fetched: builds do not make a stub of it again
        return self.root / "stubs" / key[:2] / f"{key}.lost"

    def partial_dir(self, key: str, names: tuple[str, ...]) -> Path:
        which = digest.key_of(sorted(names))[:12]
        return self.root / "partial" / key[:2] / f"{key}.{which}"

    def _scratch(self, name: str) -> Path:
        d = self.root / "tmp" / f"{name}.{os.getpid()}.{unique()}"
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

    def known(self, key: str) -> bool:
        """The store holds the result for key: its object, or a stub whose files are in the remote."""
        return self.has(key) or self.stub_file(key).is_file()

    def stub(self, key: str) -> Stub | None:
        try:
            return Stub(key, decode(self.stub_file(key).read_bytes()))
        except (OSError, EntryError):
            return None

    def manifest_bytes(self, key: str) -> bytes | None:
        """The manifest of the result for key as its folder holds it (whose digest is the folder's
        content digest): from its object, else from its stub; None when neither is here."""
        try:
            return (self.object_dir(key) / digest.MANIFEST).read_bytes()
        except OSError:
            pass
        stub = self.stub(key)
        return digest.manifest_bytes(stub.manifest()) if stub is not None else None

    def discard(self, key: str) -> None:
        obj = self.object_dir(key)
        trash = self.root / "tmp" / f"discard.{key}.{unique()}"
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
        return self.publish_to(self.object_dir(key), folder, manifest)

    @staticmethod
    def publish_to(dest: Path, folder: Path, manifest: dict | None = None) -> Path:
        manifest = manifest if manifest is not None else digest.folder_manifest(folder)
        write_durably(folder / digest.MANIFEST, digest.manifest_bytes(manifest))
        for rel in manifest["files"]:
            fsync(folder / rel)
            os.chmod(folder / rel, 0o444)  # store objects are never edited in place
        dest.parent.mkdir(parents=True, exist_ok=True)
        kill_point("publish")
        os.rename(folder, dest)
        fsync_dir(dest.parent)
        kill_point("published")
        return dest

    def get_or_build(self, key: str, build: Callable[[Path], None], label: str,
                     lazy: bool = False) -> tuple[Path | Stub, bool]:
        """Return (object folder, built?) — restored from the store (or its remote) when it holds
        the key. `lazy`: a result only the remote holds comes back as a Stub, its files left there."""
        self.used.append(key)
        with self.lock(key, label):
            obj = self.lookup(key, label)
            if obj is not None:
                return obj, False
            lost = self._lost(key)
            if lost == LOST_DAMAGED:  # found damaged by this build already: rebuilt and uploaded over
                found, damaged = None, True
            elif lazy and lost is None:
                found, damaged = self._locate(key, label)
            else:
                found, damaged = self._download(key, label)
            if found is not None:
                return found, False
            scratch = self._scratch(key[:16])
            try:
                t0 = time.monotonic()
                # a build computed elsewhere (a Dask worker) returns its own facts: where and how long it
                # took there, and that the remote holds it already
                made = build(scratch)
                seconds = time.monotonic() - t0
                obj = self.publish(key, scratch)
                elsewhere = made if isinstance(made, Elsewhere) else None
                self._write_meta(key, elsewhere.meta if elsewhere else
                                 {"build_seconds": round(seconds, 3), "built_at": _now()})
                self._settle(key)
            finally:
                if scratch.exists():
                    rmtree(scratch)
            # after publishing: a failed build never reaches the remote
            if self.remote is not None and not (elsewhere and elsewhere.on_remote and not damaged):
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
        """The manifest of the remote's result for key, read from its entry (nothing downloaded;
        asked once per process)."""
        if self.remote is None:
            return None
        if key not in self._entries:
            self._entries[key] = remote_transfer.remote_manifest(self.remote, key)
        return self._entries[key]

    def materialize(self, key: str, label: str, expect: bytes | None = None,
                    names: tuple[str, ...] | None = None) -> Path:
        """A local folder holding the files of the result for key: its object, downloaded from
        the remote when this store has only its stub (or nothing). `expect`: the manifest bytes
        the caller's keys were computed from (the remote must send that result, no other);
        `names`: only these files are needed (those of them the result has), kept in partial/
        unless the whole object is here. Raises Unavailable with the reason."""
        with self.lock(key, label):
            obj = self.lookup(key, label)
            if obj is not None:
                if expect is not None and (obj / digest.MANIFEST).read_bytes() != expect:
                    raise Unavailable(f"the store's result {key[:12]} is not the one this build used")
                return obj
            part = self.partial_dir(key, names) if names is not None else None
            if part is not None and part.is_dir():
                if digest.verify_folder(part) is None and _within(digest.read_manifest(part), expect):
                    return part
                rmtree(part)
            entry = self._entry_for(key, expect)
            scratch = self._scratch(f"remote.{key[:16]}")
            try:
                wanted = (lambda rel: rel in names) if names is not None else None
                got, damaged = remote_transfer.download(self.remote, key, scratch, label, entry, wanted)
                if got is None:
                    raise Unavailable(self._why_not(damaged), damaged)
                if part is not None:
                    return self.publish_to(part, scratch, digest.folder_manifest(scratch))
                obj = self.publish(key, scratch, entry.manifest())
                if entry.meta:
                    self._write_meta(key, entry.meta)
                self._settle(key)
                return obj
            finally:
                if scratch.exists():
                    rmtree(scratch)

    def forget_stub(self, key: str, damaged: bool) -> None:
        """Drop the stub of key, whose files could not be fetched: a build then downloads the
        result whole (the remote was unreachable) or rebuilds it and uploads it over the remote's
        copy (`damaged`) instead of making a stub of it again."""
        with self.lock(key, f"stub {key[:12]}"):
            self.stub_file(key).unlink(missing_ok=True)
            why = LOST_DAMAGED if damaged else LOST_UNREACHABLE
            atomic_file(self.lost_file(key), lambda tmp: tmp.write_text(why))

    def _lost(self, key: str) -> str | None:
        try:
            return self.lost_file(key).read_text().strip() or LOST_UNREACHABLE
        except OSError:
            return None

    def _settle(self, key: str) -> None:
        """The object for key is here now: its stub and lost marker say nothing any more."""
        self.stub_file(key).unlink(missing_ok=True)
        self.lost_file(key).unlink(missing_ok=True)

    def _entry_for(self, key: str, expect: bytes | None) -> Entry:
        """The entry that lists the files of the result for key: this store's stub, else the
        remote's entry. Raises Unavailable."""
        if self.remote is None:
            raise Unavailable("no remote is configured")
        if not self.remote.usable:
            raise Unavailable(self._why_not(False))
        stub = self.stub(key)
        if stub is not None:
            entry = stub.entry
        else:
            try:
                entry = remote_transfer.entry_of(self.remote, key)
            except RemoteError as e:
                self.remote.failed(e)
                raise Unavailable(self._why_not(False)) from None
            except EntryError as e:
                raise Unavailable(f"its entry there is damaged ({e})") from None
            if entry is None:
                raise Unavailable(f"the remote {self.remote.shown} does not hold it")
        if expect is not None and digest.manifest_bytes(entry.manifest()) != expect:
            raise Unavailable(f"the remote's result {key[:12]} is not the one this build used")
        return entry

    def note(self, name: str) -> dict | None:
        """The remote's note `name` (a fact beside the results, see remote_entry.note_key), or None."""
        return remote_transfer.get_note(self.remote, name) if self.remote is not None else None

    def write_note(self, name: str, note: dict) -> bool:
        return remote_transfer.put_note(self.remote, name, note) if self.remote is not None else False

    def _why_not(self, damaged: bool) -> str:
        remote = self.remote
        if remote is not None and remote.down:
            return f"remote {remote.shown}: {remote.down}"
        return "the remote's copy cannot be used" if damaged else "it could not be written here"

    def _locate(self, key: str, label: str) -> tuple[Stub | None, bool]:
        """(stub, damaged): the result for key as a stub (this store's, or the remote's entry once
        its blobs are all there), or None (damaged as for _download)."""
        if self.remote is None or not self.remote.usable:
            return None, False
        stub = self.stub(key)
        if stub is not None:
            return stub, False
        entry, damaged = remote_transfer.locate(self.remote, key, label)
        if entry is None:
            return None, damaged
        try:
            atomic_file(self.stub_file(key), lambda tmp: tmp.write_bytes(encode(entry)))
        except OSError as e:
            say(f"  {label}: could not note the remote's result here ({e.strerror or e}); building it")
            return None, False
        if entry.meta:
            self._write_meta(key, entry.meta)
        return Stub(key, entry), False

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
            self._settle(key)
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
        """Remove objects whose key is not in `live` (with their stubs and partial copies), and
        temp folders left by killed builds (older than tmp_age_s, so a build running now is not
        disturbed).

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
        for kind in ("stubs", "partial"):  # named <key>.json, <key>.lost / <key>.<files>
            for p in sorted((self.root / kind).glob("??/*")):
                key = p.name.split(".", 1)[0]
                if key in live:
                    continue
                freed += p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                if not dry_run:
                    with self.lock(key, f"gc {key[:12]}"):
                        rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
                        if not self.has(key):
                            self.meta_file(key).unlink(missing_ok=True)
        tmp = self.root / "tmp"
        now = time.time()
        for leftover in (tmp.iterdir() if tmp.is_dir() else []):
            if now - leftover.stat().st_mtime > tmp_age_s:
                freed += sum(f.stat().st_size for f in leftover.rglob("*") if f.is_file())
                if not dry_run:
                    rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        return dead, freed


def _within(part: dict, expect: bytes | None) -> bool:
    """Every file of the partial copy `part` (a manifest) is the one the manifest `expect` lists."""
    if expect is None:
        return True
    files = json.loads(expect).get("files", {})
    return all(files.get(rel) == info for rel, info in part["files"].items())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

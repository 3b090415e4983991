"""Moving one store result to and from a remote, verified, streamed, with progress.

Download: the entry first (remote_entry.decode refuses unsafe names), then every blob streamed
into a temp folder of the local store while its size, sha256 and xxh3 are checked against the
entry; only a result whose every file matches is handed to the store, which publishes it
atomically. A damaged or incomplete remote copy is said in one line and not used.
Upload: the blobs the remote does not hold yet, then the entry, so a reader never sees a result
whose files are not all there; a killed upload leaves at most blobs that nothing lists.

Nothing here raises for a remote that fails: it is said once (Remote.failed) and the caller goes
on as if the remote did not have the result.
"""
from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from modelmake.core import digest, progress
from modelmake.core.faults import kill_point
from modelmake.core.progress import say
from modelmake.store.remote import Backend, Remote, RemoteError
from modelmake.core.digest import sha256_file
from modelmake.store.remote_entry import (Entry, EntryError, FileRef, ac_key, decode, decode_note, encode, encode_note,
                                          note_key)

BLOCK = 1 << 20  # read size of a download: 1 MiB reads restored 41 MB over loopback 10 % faster than 64 KiB
BAR_MIN = 4 << 20  # smaller transfers get only their summary line


class Damaged(Exception):
    """The remote's copy of a result cannot be used; str() says why in a few words."""


def entry_of(remote: Remote, key: str) -> Entry | None:
    """The remote's entry for key, or None. Raises RemoteError, EntryError."""
    data = remote.retrying(lambda: remote.backend().get_entry(ac_key(key)))
    return None if data is None else decode(data)


def remote_manifest(remote: Remote, key: str) -> dict | None:
    """The manifest of the remote's result for key, from its entry alone (no file is downloaded);
    None when the remote does not hold a usable one."""
    if not remote.usable:
        return None
    try:
        entry = entry_of(remote, key)
    except RemoteError as e:
        remote.failed(e)
        return None
    except EntryError:
        return None
    return entry.manifest() if entry is not None else None


def holds(remote: Remote, key: str) -> bool | None:
    """Whether the remote lists a usable result for key; None when it cannot be asked."""
    if not remote.usable:
        return None
    try:
        return entry_of(remote, key) is not None
    except RemoteError as e:
        remote.failed(e)
        return None
    except EntryError:
        return False


def download(remote: Remote, key: str, into: Path, label: str, entry: Entry | None = None,
             only: Callable[[str], bool] | None = None) -> tuple[Entry | None, bool]:
    """Fetch the remote's result for key into the empty folder `into`, verified: the files `entry`
    lists (default: the remote's entry for key), or those of them `only` accepts.
    Returns (entry, damaged): the entry when every file arrived intact, else None, with damaged
    True when the remote's copy is unusable (said in one line; the caller rebuilds and uploads)."""
    def fetch() -> Entry | None:
        t0 = time.monotonic()
        found = entry if entry is not None else entry_of(remote, key)
        if found is None:
            return None
        wanted = [ref for ref in found.files if only is None or only(ref.path)]
        size = sum(ref.size for ref in wanted)
        with _meter(f"download {label}", size) as advance:
            for ref in wanted:
                dest = into / ref.path
                dest.parent.mkdir(parents=True, exist_ok=True)
                remote.retrying(lambda ref=ref, dest=dest: _fetch_file(remote.backend(), ref, dest, advance))
        some = "" if len(wanted) == len(found.files) else f" of {len(found.files)}"
        say(f"  {label}: downloaded from remote ({_files(len(wanted))}{some}, {_size(size)} "
            f"in {time.monotonic() - t0:.1f}s)")
        return found

    return _attempt(remote, key, label, fetch)


def locate(remote: Remote, key: str, label: str) -> tuple[Entry | None, bool]:
    """The remote's entry for key once every blob it lists is there at its size, without
    downloading anything: what a build that leaves the files in the remote keeps (a stub).
    Returns (entry, damaged) like download."""
    def find() -> Entry | None:
        found = entry_of(remote, key)
        if found is None:
            return None
        for ref in found.files:
            size = remote.retrying(lambda ref=ref: remote.backend().blob_size(ref.sha256))
            if size is None:
                raise Damaged(f"{ref.path}: blob {ref.sha256[:12]} is missing")
            if size != ref.size:
                raise Damaged(f"{ref.path}: {size} of {ref.size} bytes")
        say(f"  {label}: found in remote ({_files(len(found.files))}, {_size(found.size)}; "
            "left there until a step needs them)")
        return found

    return _attempt(remote, key, label, find)


def _attempt(remote: Remote, key: str, label: str, work: Callable[[], Entry | None]) -> tuple[Entry | None, bool]:
    """(work's entry, False), or (None, damaged) when the remote failed (said once, Remote.failed),
    its copy of key is unusable (said here: damaged) or writing here failed."""
    if not remote.usable:
        return None, False
    try:
        return work(), False
    except RemoteError as e:
        remote.failed(e)
        return None, False
    except (EntryError, Damaged) as e:
        say(f"  {label}: the remote's copy of {key[:12]} is damaged ({e}); not using it")
        return None, True
    except OSError as e:  # writing here failed (a full disk): the build says what it makes of that
        say(f"  {label}: could not restore the remote's copy of {key[:12]} ({e.strerror or e}); building it")
        return None, False


def get_note(remote: Remote, name: str) -> dict | None:
    """The remote's note `name` (remote_entry.note_key), or None (absent, unreadable, remote down)."""
    if not remote.usable:
        return None
    try:
        data = remote.retrying(lambda: remote.backend().get_entry(note_key(name)))
    except RemoteError as e:
        remote.failed(e)
        return None
    return None if data is None else decode_note(data)


def put_note(remote: Remote, name: str, note: dict) -> bool:
    """Write the note `name` (last writer wins: notes inform, results never depend on them)."""
    if not remote.writable:
        return False
    try:
        remote.retrying(lambda: remote.backend().put_entry(note_key(name), encode_note(note)))
    except RemoteError as e:
        remote.failed(e, writing=True)
        return False
    return True


def _fetch_file(backend: Backend, ref: FileRef, dest: Path, advance: Callable[[int], None]) -> None:
    with backend.open_blob(ref.sha256) as stream:
        if stream is None:
            raise Damaged(f"{ref.path}: blob {ref.sha256[:12]} is missing")
        sha, xxh3, n = hashlib.sha256(), digest.hasher(), 0
        # O_NOFOLLOW: the folder is fresh and its names checked; a link planted there is still not followed
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "wb") as out:
            while block := stream.read(min(BLOCK, ref.size - n + 1)):
                n += len(block)
                if n > ref.size:
                    raise Damaged(f"{ref.path}: longer than the {ref.size} bytes its entry says")
                sha.update(block)
                xxh3.update(block)
                out.write(block)
                advance(len(block))
    if n != ref.size:
        raise Damaged(f"{ref.path}: {n} of {ref.size} bytes")
    if sha.hexdigest() != ref.sha256:
        raise Damaged(f"{ref.path}: sha256 mismatch")
    if xxh3.hexdigest() != ref.xxh3:
        raise Damaged(f"{ref.path}: content digest differs from its entry")


def upload(remote: Remote, key: str, obj: Path, meta: dict | None, label: str, force: bool = False) -> bool:
    """Put the verified local object `obj` (store key `key`) on the remote: missing blobs (all of
    them with force, e.g. over a damaged copy), then the entry. True when the remote holds it."""
    if not remote.writable:
        return False
    manifest = digest.read_manifest(obj)
    refs = tuple(FileRef(rel, sha256_file(obj / rel), info["size"], info["xxh3"])
                 for rel, info in sorted(manifest["files"].items()))
    entry = Entry(refs, meta)
    if digest.manifest_bytes(entry.manifest()) != (obj / digest.MANIFEST).read_bytes():
        say(f"  {label}: not uploaded: its manifest is of another format than entries describe")
        return False
    t0 = time.monotonic()
    backend = remote.backend
    try:
        send = [r for r in refs if force or remote.retrying(lambda r=r: backend().blob_size(r.sha256)) != r.size]
        with _meter(f"upload {label}", sum(r.size for r in send)) as advance:
            for ref in send:
                remote.retrying(lambda ref=ref: backend().put_blob(ref.sha256, obj / ref.path, advance))
                kill_point("remote-blob")
        kill_point("remote-entry")
        remote.retrying(lambda: backend().put_entry(ac_key(key), encode(entry)))
    except RemoteError as e:
        remote.failed(e, writing=True)
        return False
    sent = sum(r.size for r in send)
    what = (f"{len(send)} of {_files(len(refs))}, {_size(sent)}" if send
            else f"{_files(len(refs))} there already")
    say(f"  {label}: uploaded to remote ({what} in {time.monotonic() - t0:.1f}s)")
    return True


class _Meter:
    """Feeds a progress bar in steps of about 1 MB, with the transfer rate."""

    def __init__(self, bar: progress.Bar):
        self.bar, self.pending, self.done, self.t0 = bar, 0, 0, time.monotonic()

    def __call__(self, n: int) -> None:
        self.pending += n
        if self.pending >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.done += self.pending
            rate = self.done / max(time.monotonic() - self.t0, 1e-6)
            self.bar.advance(self.pending, rate=f"{_size(rate)}/s")
            self.pending = 0


@contextmanager
def _meter(desc: str, total: int) -> Iterator[Callable[[int], None]]:
    if total < BAR_MIN:
        yield lambda n: None
        return
    with progress.bar(desc, total) as bar:
        meter = _Meter(bar)
        yield meter
        meter.flush()


def _files(n: int) -> str:
    return f"{n} file" if n == 1 else f"{n} files"


def _size(n: float) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"

"""Remotes on file systems and object stores through fsspec: file://, s3://, gs://, az://, ...

The same layout as the HTTP cache (`<base>/cas/<sha256>`, `<base>/ac/<64 hex>`). Credentials come
from each fsspec implementation's own chain (AWS profiles and environment, gcloud, Azure, ssh
config), never from modelmake. On an object store a written object appears whole or not at all,
so blobs and entries are written in place; elsewhere (file://, sftp, smb, hdfs) each is written to
`<base>/tmp/` and renamed into place. fsspec is imported only when such a remote is used.
"""
from __future__ import annotations

import datetime as _dt
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

from modelmake.core.faults import kill_point
from modelmake.core.files import unique
from modelmake.store.remote import Backend, Listed, RemoteConfig, RemoteError

OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss"}
BLOCK = 1 << 20


class FsspecBackend(Backend):
    def __init__(self, config: RemoteConfig):
        import fsspec

        self.shown = config.shown
        try:
            self.fs, self.base = fsspec.core.url_to_fs(config.url)
        except Exception as e:  # noqa: BLE001 - a missing extra, bad credentials file, ...
            raise _reason(e) from None
        self.base = self.base.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.rename = protocol not in OBJECT_STORES
        self.local = protocol in ("file", "local")
        self._checked = False

    def _path(self, kind: str, name: str) -> str:
        self._check()
        return f"{self.base}/{kind}/{name}"

    def _check(self) -> None:
        # a file:// remote whose folder is missing is an unmounted share, not an empty cache:
        # writing there would fill the local disk with what should go to the share
        if not self._checked:
            if self.local and not _call(self.fs.isdir, self.base):
                raise RemoteError("no such directory")
            self._checked = True

    # -- the protocol
    def get_entry(self, name: str) -> bytes | None:
        try:
            return _call(self.fs.cat_file, self._path("ac", name))
        except FileNotFoundError:
            return None

    def put_entry(self, name: str, data: bytes) -> None:
        def write(path: str) -> None:
            with self.fs.open(path, "wb") as f:
                f.write(data)
        self._write(self._path("ac", name), write)

    def blob_size(self, sha256: str) -> int | None:
        try:
            return _call(self.fs.size, self._path("cas", sha256))
        except FileNotFoundError:
            return None

    @contextmanager
    def open_blob(self, sha256: str) -> Iterator[BinaryIO | None]:
        try:
            f = _call(self.fs.open, self._path("cas", sha256), "rb", block_size=BLOCK)
        except FileNotFoundError:
            yield None
            return
        try:
            yield _Stream(f)
        finally:
            f.close()

    def put_blob(self, sha256: str, path: Path, advance: Callable[[int], None]) -> None:
        size = path.stat().st_size

        def write(dest: str) -> None:
            self.fs.put_file(str(path), dest)
            kill_point("remote-body")
        self._write(self._path("cas", sha256), write)
        advance(size)

    def listing(self, kind: str) -> list[Listed]:
        self._check()
        try:
            rows = _call(self.fs.ls, f"{self.base}/{kind}", detail=True)
        except FileNotFoundError:
            return []
        return [Listed(r["name"].rstrip("/").rsplit("/", 1)[-1], int(r.get("size") or 0), _mtime(r))
                for r in rows if r.get("type") == "file"]

    def delete(self, kind: str, name: str) -> None:
        try:
            _call(self.fs.rm_file, self._path(kind, name))
        except FileNotFoundError:
            pass

    # -- writing so that nothing partial is visible
    def _write(self, dest: str, write: Callable[[str], None]) -> None:
        if not self.rename:
            _call(self.fs.makedirs, dest.rsplit("/", 1)[0], exist_ok=True)
            _call(write, dest)
            return
        tmp = f"{self.base}/tmp/{dest.rsplit('/', 1)[1]}.{unique(12)}"
        for folder in (f"{self.base}/tmp", dest.rsplit("/", 1)[0]):
            _call(self.fs.makedirs, folder, exist_ok=True)
        try:
            _call(write, tmp)
            _call(self.fs.mv, tmp, dest)
        finally:
            try:
                if self.fs.exists(tmp):
                    self.fs.rm_file(tmp)
            except Exception:  # noqa: BLE001 - a leftover is removed by `modelmake remote clean`
                pass


class _Stream:
    def __init__(self, f):
        self.f = f

    def read(self, n: int) -> bytes:
        return _call(self.f.read, n)


def _call(fn, *args, **kwargs):
    """fn(...) with its failures as RemoteError (FileNotFoundError passes: it means "missing")."""
    try:
        return fn(*args, **kwargs)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _reason(e) from None


def _reason(e: Exception) -> RemoteError:
    if isinstance(e, RemoteError):
        return e
    if isinstance(e, PermissionError):
        return RemoteError("permission denied", refused=True)
    if isinstance(e, (TimeoutError, ConnectionError)):
        return RemoteError(e.__class__.__name__, transient=True)
    if isinstance(e, OSError) and e.strerror:
        return RemoteError(e.strerror, transient=False)
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return RemoteError(f"{e.__class__.__name__}: {first}" if first else e.__class__.__name__)


def _mtime(row: dict) -> float | None:
    for k in ("mtime", "LastModified", "updated", "last_modified", "created"):
        v = row.get(k)
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, _dt.datetime):
            return v.timestamp()
        if isinstance(v, str):
            try:
                return _dt.datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None

"""The shared remote store: its configuration, the protocol of its backends, and how this process
deals with a remote that is down.

A remote holds the same results as the local store, in the layout of Bazel's HTTP remote cache:
each file of a result is a blob under `<base>/cas/<sha256 of its bytes>`, and the entry under
`<base>/ac/<64 hex>` that lists a result's files (remote_entry.py) is written after its blobs, so
a result is visible only once complete. What a remote sends is verified before anything uses it
(remote_transfer.py). Backends: remote_http.py (http://, https://: bazel-remote, nginx with
WebDAV PUT, ...) and remote_fsspec.py (file://, s3://, gs://, ... through fsspec, imported only
when such a remote is configured).

A remote that is down, slow or refuses is never a build failure: the first failure is said in one
warning line and the remote is left alone for the rest of the process (`Remote.failed`).
"""
from __future__ import annotations

import importlib.util
import os
import time
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, NamedTuple, TypeVar
from urllib.parse import urlsplit

from modelmake.core.progress import say

DEFAULT_TIMEOUT = 10.0   # seconds without progress on one connection before a request fails
ATTEMPTS = 3             # tries of one request when the failure may pass (refused, 5xx, timeout)
BACKOFF = (0.5, 1.5)     # seconds between tries

HTTP_SCHEMES = ("http", "https")
# fsspec protocols that are writable storage, and the module each needs besides fsspec; others
# (zip, github, caches, ...) cannot hold a store
FSSPEC_SCHEMES = {
    "file": ("fsspec", "fsspec"), "s3": ("s3fs", "s3fs"), "s3a": ("s3fs", "s3fs"),
    "gs": ("gcsfs", "gcsfs"), "gcs": ("gcsfs", "gcsfs"), "az": ("adlfs", "adlfs"),
    "abfs": ("adlfs", "adlfs"), "abfss": ("adlfs", "adlfs"), "sftp": ("paramiko", "paramiko"),
    "ssh": ("paramiko", "paramiko"), "smb": ("smbprotocol", "smbprotocol"), "oss": ("ossfs", "ossfs"),
    "hdfs": ("pyarrow", "pyarrow"),
}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class RemoteConfigError(Exception):
    """A remote setting that cannot be used: `where` is the variable or file, `key` the setting."""

    def __init__(self, where: str, key: str, message: str):
        super().__init__(message)
        self.where, self.key, self.message = where, key, message


@dataclass(frozen=True, repr=False)
class RemoteConfig:
    """Where the remote is and what may be done with it. Plain data: it travels in step specs."""

    url: str                 # as configured; may hold user:password, so only `shown` is ever printed
    upload: bool = True      # write results built here (off: read the team cache, never write it)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def shown(self) -> str:
        return redact(self.url)

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    def __repr__(self) -> str:
        return f"RemoteConfig({self.shown!r}, upload={self.upload}, timeout={self.timeout:g})"


def redact(url: str) -> str:
    """The URL without user and password (what messages, logs and records may show)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def parse_url(url: str) -> str:
    """The remote URL, checked (raises ValueError with one line that shows no credentials)."""
    url = url.strip()
    if not url:
        raise ValueError("expected a URL such as http://host:port/path, s3://bucket/prefix or file:///path")
    shown = redact(url)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError as e:
        raise ValueError(f"malformed URL {shown!r}: {e}") from None
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ValueError(f"not a URL: {shown!r} (expected e.g. http://host:port/path or file:///abs/path)")
    if parts.query or parts.fragment:
        raise ValueError(f"malformed URL {shown!r}: a remote URL has no ?query or #fragment")
    if scheme in HTTP_SCHEMES:
        if not parts.hostname:
            raise ValueError(f"malformed URL {shown!r}: no host")
        return url
    if scheme not in FSSPEC_SCHEMES:
        known = ", ".join(f"{s}://" for s in (*HTTP_SCHEMES, *FSSPEC_SCHEMES))
        raise ValueError(f"unsupported scheme {scheme!r} in {shown!r} (supported: {known})")
    if scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"malformed URL {shown!r}: expected file:///absolute/path")
    elif not parts.netloc:
        raise ValueError(f"malformed URL {shown!r}: no bucket or host after {scheme}://")
    module, dist = FSSPEC_SCHEMES[scheme]
    for needed, name in (("fsspec", "fsspec"), (module, dist)):
        if importlib.util.find_spec(needed) is None:
            raise ValueError(f"{scheme}:// remotes need the {name} package (pip install {name})")
    return url


def configured(env: Mapping[str, str], section: Mapping) -> RemoteConfig | None:
    """The remote of a project: $MODELMAKE_REMOTE, else [tool.modelmake] remote; upload unless
    $MODELMAKE_REMOTE_UPLOAD=0 or remote_upload = false. Raises RemoteConfigError naming the setting."""
    url, upload = env.get("MODELMAKE_REMOTE"), env.get("MODELMAKE_REMOTE_UPLOAD")
    where, key = ("MODELMAKE_REMOTE", "") if url is not None else ("pyproject.toml", "tool.modelmake.remote")
    if url is None:
        url = section.get("remote")
        if url is not None and not isinstance(url, str):
            raise RemoteConfigError(where, key, f"expected a URL string, got {type(url).__name__}")
    if url is None or (where == "MODELMAKE_REMOTE" and not url.strip()):
        return None  # MODELMAKE_REMOTE= (empty) switches a configured remote off
    try:
        url = parse_url(url)
    except ValueError as e:
        raise RemoteConfigError(where, key, str(e)) from None
    if upload is not None:
        if upload.strip().lower() not in _TRUE + _FALSE:
            raise RemoteConfigError("MODELMAKE_REMOTE_UPLOAD", "", f"expected 0 or 1, got {upload!r}"[:200])
        allowed = upload.strip().lower() in _TRUE
    else:
        allowed = section.get("remote_upload", True)
        if not isinstance(allowed, bool):
            raise RemoteConfigError("pyproject.toml", "tool.modelmake.remote_upload",
                                    f"expected true or false, got {allowed!r}"[:200])
    timeout = env.get("MODELMAKE_REMOTE_TIMEOUT", "")
    try:
        seconds = float(timeout) if timeout.strip() else DEFAULT_TIMEOUT
        if not 0 < seconds < 3600:
            raise ValueError
    except ValueError:
        raise RemoteConfigError("MODELMAKE_REMOTE_TIMEOUT", "", f"expected seconds (0-3600), got {timeout!r}"[:200]) from None
    return RemoteConfig(url, allowed, seconds)


# ---------------------------------------------------------------- what every backend does
class RemoteError(Exception):
    """A request that failed. `transient`: worth another try; `refused`: 401/403 or permission."""

    def __init__(self, reason: str, transient: bool = False, refused: bool = False):
        super().__init__(reason)
        self.reason, self.transient, self.refused = reason, transient, refused


class Unsupported(RemoteError):
    """The remote cannot do this (e.g. list or delete: a plain Bazel cache evicts by itself)."""


class Listed(NamedTuple):
    name: str
    size: int
    mtime: float | None  # seconds since the epoch, None when the backend does not say


class Backend(ABC):
    """One remote's storage, by kind ("ac", "cas", "tmp") and name. Each method is one request;
    retrying is the caller's (Remote.retrying). Missing things are None, never an error."""

    @abstractmethod
    def get_entry(self, name: str) -> bytes | None: ...

    @abstractmethod
    def put_entry(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def blob_size(self, sha256: str) -> int | None: ...

    @abstractmethod
    def open_blob(self, sha256: str) -> AbstractContextManager[BinaryIO | None]:
        """A stream of the blob's bytes (read(n)), or None when the remote has no such blob."""

    @abstractmethod
    def put_blob(self, sha256: str, path: Path, advance: Callable[[int], None]) -> None:
        """Stream the file at path to the blob; it becomes visible only once whole."""

    def listing(self, kind: str) -> list[Listed]:
        raise Unsupported("this remote cannot list what it holds")

    def delete(self, kind: str, name: str) -> None:
        raise Unsupported("this remote cannot delete")


def open_backend(config: RemoteConfig) -> Backend:
    if config.scheme in HTTP_SCHEMES:
        from modelmake.store.remote_http import HttpBackend
        return HttpBackend(config)
    from modelmake.store.remote_fsspec import FsspecBackend
    return FsspecBackend(config)


T = TypeVar("T")


class Remote:
    """A configured remote as this process sees it: its backend, opened on first use, and whether
    it still answers. After the first failure it is left alone (one warning, one timeout at most,
    not one per step); a refused upload stops uploads but not reads (a read-only team cache)."""

    def __init__(self, config: RemoteConfig):
        self.config = config
        self._backend: Backend | None = None
        self.down: str | None = None          # why nothing more is asked of the remote
        self.uploads_off: str | None = None   # why nothing more is written to it
        self.warn = True                      # say failures as warnings (commands report them themselves)
        self.fallback = "building locally"    # what goes on without the remote, for that warning

    @property
    def shown(self) -> str:
        return self.config.shown

    @property
    def usable(self) -> bool:
        return self.down is None

    @property
    def writable(self) -> bool:
        return self.down is None and self.uploads_off is None and self.config.upload

    def backend(self) -> Backend:
        if self._backend is None:
            self._backend = open_backend(self.config)
        return self._backend

    def retrying(self, request: Callable[[], T]) -> T:
        for attempt in range(ATTEMPTS):
            try:
                return request()
            except RemoteError as e:
                if not e.transient or attempt == ATTEMPTS - 1:
                    raise
            time.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
        raise AssertionError("unreachable")

    def failed(self, e: RemoteError, writing: bool = False) -> None:
        """Say once why the remote is not used any more, and stop using it."""
        if writing and not e.transient:  # refused (401/403, 413, ...): reads may still be allowed
            if self.uploads_off is None:
                self.uploads_off = f"{e.reason} on upload"
                if self.warn:
                    say(f"warning: remote {self.shown}: {e.reason} on upload; results built here stay local")
            return
        if self.down is None:
            self.down = e.reason
            if self.warn:
                say(f"warning: remote {self.shown}: {e.reason}; {self.fallback}")


_open: dict[tuple[int, RemoteConfig], Remote] = {}  # registry: one Remote per process and config


def remote_for(config: RemoteConfig) -> Remote:
    """This process's Remote for config: every step of a build shares its state (a remote found
    down stays down for the build). Keyed by pid too: a doit -n worker must not reuse its
    parent's connections."""
    key = (os.getpid(), config)
    if key not in _open:
        _open[key] = Remote(config)
    return _open[key]

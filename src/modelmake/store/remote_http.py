"""HTTP(S) remotes in the layout of Bazel's HTTP remote cache: `PUT/GET/HEAD <base>/cas/<sha256>`
and `<base>/ac/<64 hex>`, as bazel-remote and nginx with WebDAV PUT serve them.

Standard library only (http.client): one keep-alive connection per process, a socket timeout on
every read and write (a silent server fails the request instead of hanging the build), bodies
streamed in blocks in both directions. Credentials, in this order: $MODELMAKE_REMOTE_AUTHORIZATION
(a whole Authorization header value, e.g. "Bearer <token>"), user:password in the URL, the host's
entry in $NETRC or ~/.netrc. They are sent as a header only, never shown.

Clean-up (`modelmake remote clean`) lists `<base>/ac/` and `<base>/cas/` as nginx's
`autoindex_format json` does and removes with DELETE (`dav_methods PUT DELETE`); a server that
does neither (bazel-remote evicts by itself) says so in one line.
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import json
import netrc
import os
import socket
import ssl
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator
from urllib.parse import unquote, urlsplit

from modelmake.core.faults import kill_point
from modelmake.core.progress import say
from modelmake.store.remote import Backend, Listed, RemoteConfig, RemoteError, Unsupported

BLOCK = 1 << 16
_ERROR_BODY = 1 << 16  # an error page longer than this is not read: the connection is dropped


class HttpBackend(Backend):
    def __init__(self, config: RemoteConfig):
        parts = urlsplit(config.url)
        self.shown, self.timeout = config.shown, config.timeout
        self.host, self.port, self.https = parts.hostname, parts.port, parts.scheme == "https"
        self.base = parts.path.rstrip("/")
        self.headers = {"User-Agent": "modelmake"}
        auth = _authorization(parts)
        if auth:
            self.headers["Authorization"] = auth
        self._conn: http.client.HTTPConnection | None = None

    # -- the protocol
    def get_entry(self, name: str) -> bytes | None:
        # bazel-remote keeps entries as protobuf and answers in JSON when asked
        resp = self._request("GET", f"ac/{name}", headers={"Accept": "application/json"})
        if resp is None:
            return None
        return self._read_all(resp)

    def put_entry(self, name: str, data: bytes) -> None:
        self._upload(f"ac/{name}", len(data), [data], "application/json")

    def blob_size(self, sha256: str) -> int | None:
        resp = self._request("HEAD", f"cas/{sha256}")
        if resp is None:
            return None
        self._read_all(resp)
        length = resp.getheader("Content-Length")
        return int(length) if length and length.isdigit() else None

    @contextmanager
    def open_blob(self, sha256: str) -> Iterator[BinaryIO | None]:
        resp = self._request("GET", f"cas/{sha256}")
        if resp is None:
            yield None
            return
        try:
            yield _Body(resp, self)
        finally:
            if not resp.isclosed():  # not read to the end (a damaged blob): do not reuse the connection
                self.close()

    def put_blob(self, sha256: str, path: Path, advance: Callable[[int], None]) -> None:
        def blocks() -> Iterator[bytes]:
            with open(path, "rb") as f:
                while block := f.read(BLOCK):
                    yield block
                    advance(len(block))
                    kill_point("remote-body")  # crash trials: killed with part of a body sent
        self._upload(f"cas/{sha256}", path.stat().st_size, blocks(), "application/octet-stream")

    def listing(self, kind: str) -> list[Listed]:
        resp = self._request("GET", f"{kind}/", headers={"Accept": "application/json"}, listing=True)
        if resp is None:
            return []
        try:
            rows = json.loads(self._read_all(resp, limit=1 << 30))
            return [Listed(unquote(r["name"]), int(r.get("size", 0)), _http_time(r.get("mtime")))
                    for r in rows if isinstance(r, dict) and r.get("type") == "file"]
        except (ValueError, TypeError, KeyError):
            raise Unsupported(f"{self.shown}/{kind}/ is not a JSON listing (nginx: autoindex on; "
                              "autoindex_format json;)") from None

    def delete(self, kind: str, name: str) -> None:
        resp = self._request("DELETE", f"{kind}/{name}", delete=True)
        if resp is not None:
            self._read_all(resp)

    # -- HTTP
    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.https:
                self._conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout,
                                                         context=ssl.create_default_context())
            else:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _url(self, rel: str) -> str:
        return f"{self.base}/{rel}"  # names are hex; the base path is used as configured

    def _request(self, method: str, rel: str, headers: dict | None = None, listing: bool = False,
                 delete: bool = False) -> http.client.HTTPResponse | None:
        """The response to a request without a body, or None for 404. Raises RemoteError."""
        for fresh in (self._conn is None, True):
            try:
                conn = self._connection()
                conn.request(method, self._url(rel), headers={**self.headers, **(headers or {})})
                resp = conn.getresponse()
                break
            except Exception as e:  # noqa: BLE001 - every way a request can fail becomes one reason
                self.close()
                # a kept-alive connection the server has closed meanwhile (a long step since the
                # last request): try a new one at once
                if fresh or not isinstance(e, (http.client.HTTPException, ConnectionError)):
                    raise _reason(e, self) from None
        if resp.status == 404:
            self._read_all(resp)
            return None
        if (listing or delete) and resp.status in (400, 403, 405, 501):
            self._read_all(resp)
            what = "list" if listing else "delete"
            raise Unsupported(f"the server does not {what} {self.shown}/{rel} (HTTP {resp.status})")
        if resp.status >= 300:
            raise self._status_error(resp)
        return resp

    def _upload(self, rel: str, length: int, body, content_type: str) -> None:
        try:
            conn = self._connection()
            conn.putrequest("PUT", self._url(rel), skip_accept_encoding=True)
            for k, v in {**self.headers, "Content-Length": str(length), "Content-Type": content_type}.items():
                conn.putheader(k, v)
            conn.endheaders()
            try:
                for block in body:
                    conn.send(block)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early (401, 413): its answer says why
            resp = conn.getresponse()
        except Exception as e:  # noqa: BLE001
            self.close()
            raise _reason(e, self) from None
        if resp.status >= 300:
            raise self._status_error(resp)
        self._read_all(resp)

    def _status_error(self, resp: http.client.HTTPResponse) -> RemoteError:
        self._read_all(resp, limit=_ERROR_BODY, strict=False)
        reason = f"HTTP {resp.status} {resp.reason}".strip()
        if resp.status in (401, 403):
            return RemoteError(reason, refused=True)
        return RemoteError(reason, transient=resp.status >= 500 or resp.status in (408, 429))

    def _read_all(self, resp: http.client.HTTPResponse, limit: int = 1 << 26, strict: bool = True) -> bytes:
        try:
            data = resp.read(limit + 1)
        except Exception as e:  # noqa: BLE001
            self.close()
            raise _reason(e, self) from None
        if len(data) > limit:
            self.close()
            if strict:
                raise RemoteError(f"answer larger than {limit} bytes")
        return data


class _Body:
    """A blob's response body as a stream; read errors become RemoteError (worth a retry)."""

    def __init__(self, resp: http.client.HTTPResponse, backend: HttpBackend):
        self.resp, self.backend = resp, backend

    def read(self, n: int) -> bytes:
        try:
            return self.resp.read(n)
        except Exception as e:  # noqa: BLE001
            self.backend.close()
            raise _reason(e, self.backend) from None


def _reason(e: Exception, backend: HttpBackend) -> RemoteError:
    """A failed request in a few words, and whether trying again may help."""
    if isinstance(e, RemoteError):
        return e
    if isinstance(e, ConnectionRefusedError):
        return RemoteError("connection refused", transient=True)
    if isinstance(e, (socket.timeout, TimeoutError)):
        return RemoteError(f"no answer within {backend.timeout:g}s", transient=True)
    if isinstance(e, socket.gaierror):
        return RemoteError(f"cannot resolve host {backend.host}")
    if isinstance(e, ssl.SSLError):
        return RemoteError(f"TLS error: {e.reason or e.__class__.__name__}")
    if isinstance(e, http.client.IncompleteRead):
        return RemoteError("connection closed mid-transfer", transient=True)
    if isinstance(e, (http.client.HTTPException, ConnectionError)):
        return RemoteError("connection closed by the server", transient=True)
    if isinstance(e, OSError):
        return RemoteError(e.strerror or e.__class__.__name__, transient=True)
    return RemoteError(e.__class__.__name__)


def _authorization(parts) -> str | None:
    header = os.environ.get("MODELMAKE_REMOTE_AUTHORIZATION", "").strip()
    if header:
        return header
    if parts.username is not None:
        return _basic(unquote(parts.username), unquote(parts.password or ""))
    file = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    if not os.path.isfile(file):
        return None
    try:
        found = netrc.netrc(file).authenticators(parts.hostname or "")
    except (netrc.NetrcParseError, OSError) as e:
        # the parser's message may quote the file's line: name the file and line only
        say(f"warning: {file}: unreadable (line {getattr(e, 'lineno', '?')}); no credentials for the remote")
        return None
    return _basic(found[0], found[2] or "") if found else None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _http_time(value) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None

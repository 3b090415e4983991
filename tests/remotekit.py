"""A real nginx for remote-store tests: Debian's package, started on 127.0.0.1 on a free port with
a config written here (WebDAV PUT/DELETE, JSON listings, a read-only, a denied and a password
location), run as the current user, stopped by the fixture. Plus helpers that read the server's
disk the way a user inspecting the cache would."""
from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, NamedTuple

from modelmake.store.remote_entry import EntryError, decode, decode_note

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
USER, PASSWORD = "builder", "s3cret-Passw0rd"

CONFIG = """\
daemon off;
worker_processes 1;
{user}
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 128; }}
http {{
  access_log {root}/access.log;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  client_max_body_size 0;
  server {{
    listen 127.0.0.1:{port};
    root {root}/www;
    location /cache/ {{
      dav_methods PUT DELETE;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      autoindex on;
      autoindex_format json;
    }}
    location /readonly/ {{
      limit_except GET HEAD {{ deny all; }}
    }}
    location /denied/ {{
      deny all;
    }}
    location /auth/ {{
      auth_basic "cache";
      auth_basic_user_file {root}/htpasswd;
      dav_methods PUT DELETE;
      create_full_put_path on;
    }}
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_version() -> str:
    out = subprocess.run([NGINX, "-v"], capture_output=True, text=True)
    return (out.stderr or out.stdout).strip().split("/")[-1]


class Request(NamedTuple):
    method: str
    path: str     # as requested, e.g. /cache/team/cas/<sha256>
    status: int
    sent: int     # body bytes the server sent


class Nginx:
    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.www = root / "www"
        self.proc: subprocess.Popen | None = None

    def log_mark(self) -> int:
        """Where the access log ends now: requests(since=mark) are those made after this."""
        log = self.root / "access.log"
        return log.stat().st_size if log.exists() else 0

    def requests(self, since: int = 0) -> list[Request]:
        """The requests the server logged (combined format), from byte offset `since`. nginx writes
        a request's line once it has answered it; a short wait covers the write."""
        time.sleep(0.2)
        with open(self.root / "access.log", "rb") as f:
            f.seek(since)
            text = f.read().decode()
        out = []
        for m in re.finditer(r'"(\w+) (\S+) HTTP/[\d.]+" (\d{3}) (\d+)', text):
            out.append(Request(m.group(1), m.group(2), int(m.group(3)), int(m.group(4))))
        return out

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.strip('/')}"

    def disk(self, path: str) -> Path:
        """Where the server keeps what is under /<path>."""
        return self.www / path.strip("/")

    def start(self) -> "Nginx":
        for d in ("www/cache", "www/readonly", "www/denied", "www/auth", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "htpasswd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        # as root nginx would hand the workers to `nobody`; keep them this user's, like the files
        user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
        conf = self.root / "nginx.conf"
        conf.write_text(CONFIG.format(root=self.root, port=self.port, user=user))
        self.proc = subprocess.Popen([NGINX, "-p", str(self.root), "-c", str(conf), "-e", str(self.root / "error.log")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("nginx did not start listening within 15 s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, remove the pid file
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def entries(folder: Path) -> dict[str, bytes]:
    """name -> bytes of every action-cache entry of a result under a remote's folder on disk."""
    return {name: data for name, data in _action_cache(folder).items() if decode_note(data) is None}


def notes(folder: Path) -> dict[str, dict]:
    """name -> content of every note (remote_entry.note_key) under a remote's folder on disk."""
    return {name: decode_note(data) for name, data in _action_cache(folder).items() if decode_note(data) is not None}


def _action_cache(folder: Path) -> dict[str, bytes]:
    ac = folder / "ac"
    return {p.name: p.read_bytes() for p in sorted(ac.iterdir())} if ac.is_dir() else {}


def check_remote(folder: Path) -> list[str]:
    """Problems of a remote's content on disk: every entry decodes and every blob it lists is
    there, whole, with the sha256 its name says."""
    problems = []
    for name, data in entries(folder).items():
        try:
            entry = decode(data)
        except EntryError as e:
            problems.append(f"ac/{name}: {e}")
            continue
        for f in entry.files:
            blob = folder / "cas" / f.sha256
            if not blob.is_file():
                problems.append(f"ac/{name}: {f.path}: no blob")
            elif hashlib.sha256(blob.read_bytes()).hexdigest() != f.sha256 or blob.stat().st_size != f.size:
                problems.append(f"ac/{name}: {f.path}: blob damaged")
    for blob in (folder / "cas").iterdir() if (folder / "cas").is_dir() else []:
        if hashlib.sha256(blob.read_bytes()).hexdigest() != blob.name:
            problems.append(f"cas/{blob.name}: content does not match its name")
    return problems


# ---------------------------------------------------------------- projects and runs
def clone(blank: Path, where: Path, name: str = "proj") -> Path:
    """A fresh clone: the project's files, no artifacts, an empty local store."""
    dest = where / name
    shutil.copytree(blank, dest, ignore=shutil.ignore_patterns("artifacts"))
    return dest


def warnings(run) -> list[str]:
    return [line for line in (run.out + run.err).splitlines() if line.startswith("warning:")]


def downloaded(run) -> list[str]:
    """Labels of the results (or inputs read by a step) this run downloaded from the remote."""
    return [line.strip().rsplit(": downloaded from remote", 1)[0]
            for line in run.out.splitlines() if ": downloaded from remote" in line]


def record_key(project: Path, task_file: str) -> str:
    return json.loads((project / "artifacts/tiny/records" / task_file).read_text())["key"]


def cli(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELMAKE_")}
    return subprocess.run([sys.executable, "-m", "modelmake.commands.cli", *args], cwd=project, capture_output=True,
                          text=True, env={**full, **(env or {})}, timeout=300)


# ---------------------------------------------------------------- fixtures (module-scoped in each test module)
def serve(tmp_path_factory) -> Iterator[Nginx]:
    """`nginx = pytest.fixture(scope="module", name="nginx")(serve)`: one server per test module."""
    server = Nginx(tmp_path_factory.mktemp("nginx")).start()
    try:
        yield server
    finally:
        server.stop()


def blank_project(tmp_path_factory) -> Path:
    """The tiny project, never built: what every clone of a test module starts from."""
    from buildkit import make_project

    return make_project(tmp_path_factory.mktemp("blank") / "proj")


def built_with(url: str, blank: Path, where: Path):
    """A clone of blank built with the remote at url (an empty one: every result is uploaded):
    (project, its run)."""
    from buildkit import doit

    project = clone(blank, where)
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    return project, run

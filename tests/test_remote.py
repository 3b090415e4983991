"""The shared remote store against a real nginx (WebDAV PUT) and a file:// remote: a result built
once is restored everywhere, verified; a remote that is down, refuses, sends damaged or hostile
objects or is written by two builders at once never fails a build nor hands on a wrong result.
(The CI case, builds without the bytes and the commands that read the remote: test_remote_bytes.py.)"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildkit import TESTS, doit, passes_built, snapshot
from remotekit import (PASSWORD, USER, Nginx, blank_project, built_with, check_remote, cli, clone, downloaded,
                       entries, record_key, serve, warnings)
from modelmake.store import Store
from modelmake.store.remote import RemoteConfig
from modelmake.store.remote_entry import EntryError, ac_key, decode

pytestmark = pytest.mark.skipif(not Path(shutil.which("nginx") or "/usr/sbin/nginx").exists(),
                                reason="needs Debian's nginx (apt-get install nginx)")

# a recipe that builds in seconds, for the tests about a remote that fails (everything builds locally)
LIGHT = '[model]\npath = "models/tiny"\n\n[[pass]]\nname = "export"\ntype = "onnx-export"\n'
RESULTS = 11  # store results of the tiny recipe: 2 sources, 4 passes, 3 measurements, eval, package


nginx = pytest.fixture(scope="module", name="nginx")(serve)
blank = pytest.fixture(scope="module", name="blank")(blank_project)


@pytest.fixture(scope="module")
def uploaded(nginx, blank, tmp_path_factory):
    """A project built with an empty remote: (project, its run, snapshot of its artifacts)."""
    project, run = built_with(nginx.url("cache/ref"), blank, tmp_path_factory.mktemp("a"))
    return project, run, snapshot(project)


def seeded(nginx: Nginx, name: str) -> tuple[str, Path]:
    """A remote of its own holding what the `uploaded` build put on the server: (URL, its folder on disk)."""
    shutil.copytree(nginx.disk("cache/ref"), nginx.disk(f"cache/{name}"))
    return nginx.url(f"cache/{name}"), nginx.disk(f"cache/{name}")


# ---------------------------------------------------------------- restore and upload
def test_file_remote_round_trip(blank, tmp_path):
    remote = tmp_path / "team-cache"
    remote.mkdir()
    env = {"MODELMAKE_REMOTE": f"file://{remote}"}
    a = clone(blank, tmp_path, "a")
    run = doit(a, "optimize:tiny", env=env)
    assert run.rc == 0, run
    assert len(entries(remote)) == RESULTS and check_remote(remote) == []
    assert not any((remote / "tmp").iterdir()), "temp files left behind"
    b = clone(blank, tmp_path, "b")
    run = doit(b, "optimize:tiny", env=env)
    assert run.rc == 0 and run.built == [], run
    assert snapshot(b) == snapshot(a)


def test_large_result_streams_with_progress_and_failures_never_reach_the_remote(nginx, tmp_path):
    """A result of several MB goes up and comes back in blocks with progress lines (bytes, rate),
    verified; a build that fails uploads nothing."""
    config = RemoteConfig(nginx.url("cache/large"))
    data = os.urandom(9 << 20)

    def failing(out: Path) -> None:
        (out / "half.bin").write_bytes(data[: len(data) // 2])
        raise RuntimeError("the step failed")

    with pytest.raises(RuntimeError):
        Store(tmp_path / "s0", remote=config).get_or_build("f" * 32, failing, "failing step")
    assert entries(nginx.disk("cache/large")) == {} and not nginx.disk("cache/large/cas").exists()

    up = subprocess.run([sys.executable, "-c", _STORE_SCRIPT, str(tmp_path / "s1"), config.url, "build"],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "upload big step:" in up.stdout and "/s" in up.stdout, up.stdout  # plain progress lines with a rate
    assert "big step: uploaded to remote (1 of 1 file, 9.4 MB" in up.stdout, up.stdout
    down = subprocess.run([sys.executable, "-c", _STORE_SCRIPT, str(tmp_path / "s2"), config.url, "restore"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert "download big step:" in down.stdout and "big step: downloaded from remote (1 file, 9.4 MB" in down.stdout
    assert (tmp_path / "s1/objects").is_dir() and (tmp_path / "s2/objects").is_dir()
    one, two = (next((tmp_path / s / "objects").glob("*/*/big.bin")) for s in ("s1", "s2"))
    assert one.read_bytes() == two.read_bytes()


# builds (or, with "restore", must not build) a 9 MB result through a store with a remote
_STORE_SCRIPT = """
import os, random, sys
from pathlib import Path
from modelmake.store import Store
from modelmake.store.remote import RemoteConfig
root, url, mode = sys.argv[1:]
def build(out):
    if mode == "restore":
        raise SystemExit("built instead of restored")
    (out / "big.bin").write_bytes(random.Random(0).randbytes(9 << 20))
obj, built = Store(Path(root), remote=RemoteConfig(url)).get_or_build("e" * 32, build, "big step")
assert built == (mode == "build")
"""


# ---------------------------------------------------------------- verify before use
def _damage(folder: Path, key: str, how: str) -> None:
    entry = folder / "ac" / ac_key(key)
    if how == "entry-garbage":
        entry.write_bytes(b'{"outputFiles": [{"path": "model.onnx", "digest": ')
        return
    blob = folder / "cas" / decode(entry.read_bytes()).files[0].sha256
    data = bytearray(blob.read_bytes())
    if how == "blob-bitflip":
        data[len(data) // 2] ^= 0x10
    else:
        data = data[: len(data) // 3]
    blob.write_bytes(bytes(data))


# A blob's size is checked when a build finds a result it leaves in the remote (a truncated blob,
# a garbled entry); its content when a step reads it: the final model (optimize:tiny publishes it)
@pytest.mark.parametrize("how,step,reader", [("blob-bitflip", "quantize", "optimize:tiny reads artifacts/tiny/steps/quantize"),
                                             ("blob-truncated", "fuse", "pass:tiny/fuse"),
                                             ("entry-garbage", "fuse", "pass:tiny/fuse")])
def test_damaged_remote_object_is_not_used_but_rebuilt_and_replaced(nginx, uploaded, blank, tmp_path, how, step, reader):
    a, _, reference = uploaded
    url, folder = seeded(nginx, f"damaged-{how}")
    key = record_key(a, f"pass-tiny-{step}.json")
    _damage(folder, key, how)
    b = clone(blank, tmp_path)
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    said = [line for line in run.out.splitlines() if "damaged" in line]
    assert len(said) == 1 and said[0].startswith(f"  {reader}: the remote's copy of {key[:12]} is damaged"), run
    assert run.built == [f"pass:tiny/{step}"], run  # rebuilt; identical bytes, so the rest still comes from the remote
    assert f"pass:tiny/{step}: uploaded to remote" in run.out
    assert check_remote(folder) == []  # the damaged copy was replaced
    assert snapshot(b) == reference
    assert Store(b / "artifacts/.store").verify_all() == {}


def test_entry_naming_files_outside_the_store_cannot_write_there(nginx, uploaded, blank, tmp_path):
    a, _, reference = uploaded
    url, folder = seeded(nginx, "hostile")
    payload = b"written by the remote\n"
    sha = hashlib.sha256(payload).hexdigest()
    (folder / "cas" / sha).write_bytes(payload)
    fuse = record_key(a, "pass-tiny-fuse.json")
    ref = {"digest": {"hash": sha, "sizeBytes": str(len(payload))},
           "nodeProperties": {"properties": [{"name": "modelmake.xxh3", "value": "0" * 32}]}}
    b = clone(blank, tmp_path)
    escape = tmp_path / "escaped.txt"
    climb = "../" * (len(b.parts) + 8) + str(escape).lstrip("/")  # from the store's temp folder up to /
    hostile = {"outputFiles": [{"path": "model.onnx", **ref}, {"path": climb, **ref}]}
    (folder / "ac" / ac_key(fuse)).write_text(json.dumps(hostile))
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    assert not escape.exists() and not list(tmp_path.rglob("escaped.txt"))
    said = [line for line in run.out.splitlines() if "damaged" in line]
    assert len(said) == 1 and "unsafe file name" in said[0], run
    assert run.built == ["pass:tiny/fuse"] and snapshot(b) == reference


@pytest.mark.parametrize("name,problem", [
    ("../x", "not a plain relative path"), ("a/../../x", "not a plain relative path"), ("/etc/passwd", "absolute"),
    ("a//b", "not a plain relative path"), ("./a", "not a plain relative path"), ("a\\..\\b", "unusable"),
    ("a\x00b", "unusable"), ("manifest.json", "reserved"), (".mm-stat.json", "reserved"), ("", "not a name"),
])
def test_entry_names_that_could_leave_the_folder_are_refused(name, problem):
    ref = {"path": name, "digest": {"hash": "a" * 64, "sizeBytes": "1"},
           "nodeProperties": {"properties": [{"name": "modelmake.xxh3", "value": "0" * 32}]}}
    with pytest.raises(EntryError, match=problem):
        decode(json.dumps({"outputFiles": [ref]}).encode())


# ---------------------------------------------------------------- a remote that fails
def _light_project(blank: Path, where: Path, name: str = "light") -> Path:
    project = clone(blank, where, name)
    (project / "recipes/tiny.toml").write_text(LIGHT)
    return project


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_remote_down_is_one_warning_and_a_local_build(blank, tmp_path):
    port = _refused_port()
    project = _light_project(blank, tmp_path)
    t0 = time.monotonic()
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": f"http://127.0.0.1:{port}/team"}, timeout=120)
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote http://127.0.0.1:{port}/team: connection refused; building locally"], run
    assert run.built == ["source:tiny model", "pass:tiny/export"], run
    assert time.monotonic() - t0 < 60


def test_silent_remote_times_out_without_hanging(blank, tmp_path):
    """A server that accepts connections and never answers: bounded by the timeout and retries."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)  # the kernel accepts; nobody ever reads or answers
    try:
        port = listener.getsockname()[1]
        project = _light_project(blank, tmp_path)
        t0 = time.monotonic()
        run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": f"http://127.0.0.1:{port}/team",
                                                  "MODELMAKE_REMOTE_TIMEOUT": "1"}, timeout=120)
        took = time.monotonic() - t0
    finally:
        listener.close()
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote http://127.0.0.1:{port}/team: no answer within 1s; building locally"], run
    assert run.built == ["source:tiny model", "pass:tiny/export"], run
    assert took < 60, took


def test_missing_file_remote_folder_is_one_warning(blank, tmp_path):
    project = _light_project(blank, tmp_path)
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": f"file://{tmp_path}/not-mounted"})
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote file://{tmp_path}/not-mounted: no such directory; building locally"]
    assert not (tmp_path / "not-mounted").exists()


def test_refusing_remote_is_one_line_and_credentials_are_never_shown(nginx, blank, tmp_path):
    project = _light_project(blank, tmp_path)
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("denied/team")})
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote {nginx.url('denied/team')}: HTTP 403 Forbidden; building locally"]

    fresh = _light_project(blank, tmp_path, "no-credentials")
    run = doit(fresh, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("auth/team")})
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote {nginx.url('auth/team')}: HTTP 401 Unauthorized; building locally"]

    # user:password in the URL: used, never shown
    with_url = _light_project(blank, tmp_path, "url-credentials")
    secret_url = nginx.url("auth/team").replace("http://", f"http://{USER}:{PASSWORD}@")
    run = doit(with_url, "optimize:tiny", env={"MODELMAKE_REMOTE": secret_url})
    assert run.rc == 0 and warnings(run) == [], run
    assert run.out.count(": uploaded to remote") == 2 and len(entries(nginx.disk("auth/team"))) == 2
    # the same server through ~/.netrc, in a fresh clone: everything comes back
    netrc = tmp_path / "netrc-file"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    with_netrc = _light_project(blank, tmp_path, "netrc")
    run2 = doit(with_netrc, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("auth/team"), "NETRC": str(netrc)})
    # the source stays in the remote (nothing reads it); the export is the final model, published
    assert run2.rc == 0 and run2.built == [] and downloaded(run2) == ["optimize:tiny reads artifacts/tiny/steps/export"], run2
    for r in (run, run2):
        assert PASSWORD not in r.out + r.err
    for p in with_url.rglob("*"):
        if p.is_file() and ".store" not in p.parts:
            assert PASSWORD.encode() not in p.read_bytes(), p


def test_read_only_remote_reads_and_says_once_that_it_does_not_take_uploads(nginx, uploaded, blank, tmp_path):
    shutil.copytree(nginx.disk("cache/ref"), nginx.disk("readonly/team"))
    project = clone(blank, tmp_path)
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("readonly/team")})
    assert run.rc == 0, run
    assert "pass:tiny/quantize reads artifacts/tiny/steps/fuse" in downloaded(run) and "pass:tiny/quantize" in run.built
    assert warnings(run) == [f"warning: remote {nginx.url('readonly/team')}: HTTP 403 Forbidden on upload; "
                             "results built here stay local"], run
    assert len(entries(nginx.disk("readonly/team"))) == RESULTS


@pytest.mark.parametrize("switch", ["env", "pyproject"])
def test_upload_off_reads_the_remote_but_never_writes_it(nginx, uploaded, blank, tmp_path, switch):
    url, folder = seeded(nginx, f"upload-off-{switch}")
    before = {p.relative_to(folder) for p in folder.rglob("*")}
    project = clone(blank, tmp_path)
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    env = {"MODELMAKE_REMOTE": url}
    if switch == "env":
        env["MODELMAKE_REMOTE_UPLOAD"] = "0"
    else:
        (project / "pyproject.toml").write_text("[tool.modelmake]\nremote_upload = false\n")
    run = doit(project, "optimize:tiny", env=env)
    assert run.rc == 0, run
    assert "pass:tiny/quantize reads artifacts/tiny/steps/fuse" in downloaded(run) and "pass:tiny/quantize" in run.built, run
    assert ": uploaded to remote" not in run.out and warnings(run) == []
    assert {p.relative_to(folder) for p in folder.rglob("*")} == before


# ---------------------------------------------------------------- concurrency and crashes
def _popen(project: Path, env: dict) -> subprocess.Popen:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELMAKE_")}
    full.update(PYTHONPATH=str(TESTS / "plugins"), **env)
    return subprocess.Popen([sys.executable, "-m", "doit", "optimize:tiny"], cwd=project, env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def test_two_builders_upload_the_same_results_at_once(nginx, uploaded, blank, tmp_path):
    _, _, reference = uploaded
    env = {"MODELMAKE_REMOTE": nginx.url("cache/concurrent")}
    one, two = clone(blank, tmp_path, "one"), clone(blank, tmp_path, "two")
    a, b = _popen(one, env), _popen(two, env)
    out_a, err_a = a.communicate(timeout=600)
    out_b, err_b = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (out_a + err_a, out_b + err_b)
    assert "damaged" not in out_a + out_b and "warning" not in out_a + out_b
    assert snapshot(one) == snapshot(two) == reference
    assert len(entries(nginx.disk("cache/concurrent"))) == RESULTS
    assert check_remote(nginx.disk("cache/concurrent")) == []


# remote-body: part of a blob's body sent; remote-blob: blobs of a result sent, not all;
# remote-entry: every blob sent, the entry not yet
@pytest.mark.parametrize("kill_at", ["remote-body#2", "remote-blob#3", "remote-entry#1"])
def test_killed_mid_upload_leaves_nothing_a_reader_takes_as_complete(nginx, uploaded, blank, tmp_path, kill_at):
    _, _, reference = uploaded
    name = f"killed-{kill_at.replace('#', '-')}"
    env = {"MODELMAKE_REMOTE": nginx.url(f"cache/{name}")}
    writer = clone(blank, tmp_path, "writer")
    proc = _popen(writer, {**env, "MODELMAKE_TEST_KILL_AT": kill_at})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out + err
    folder = nginx.disk(f"cache/{name}")
    assert entries(folder) == {}, "a result became visible before its upload finished"
    assert check_remote(folder) == []  # blobs there are whole: nginx renames a body into place
    reader = clone(blank, tmp_path, "reader")
    run = doit(reader, "optimize:tiny", env=env)
    assert run.rc == 0 and "damaged" not in run.out, run
    assert snapshot(reader) == reference
    run = doit(writer, "optimize:tiny", env=env)  # the killed build finishes
    assert run.rc == 0 and snapshot(writer) == reference, run
    assert check_remote(folder) == [] and len(entries(folder)) == RESULTS


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("env,pyproject,where", [
    ({"MODELMAKE_REMOTE": "ftp://cache.internal/x"}, None, "MODELMAKE_REMOTE: unsupported scheme 'ftp'"),
    ({"MODELMAKE_REMOTE": "cache.internal:8080/x"}, None, "MODELMAKE_REMOTE: not a URL"),
    ({"MODELMAKE_REMOTE": "http:///x"}, None, "MODELMAKE_REMOTE: malformed URL"),
    ({"MODELMAKE_REMOTE": f"http://{USER}:{PASSWORD}@cache:99999/x"}, None, "MODELMAKE_REMOTE: malformed URL 'http://cache:99999/x'"),
    ({"MODELMAKE_REMOTE": "file://relative/path"}, None, "MODELMAKE_REMOTE: malformed URL"),
    ({"MODELMAKE_REMOTE": "s3://"}, None, "MODELMAKE_REMOTE: malformed URL"),
    ({"MODELMAKE_REMOTE": "http://cache/x?token=1"}, None, "no ?query"),
    ({"MODELMAKE_REMOTE": "http://cache/x", "MODELMAKE_REMOTE_UPLOAD": "maybe"}, None, "MODELMAKE_REMOTE_UPLOAD: expected 0 or 1"),
    ({"MODELMAKE_REMOTE": "http://cache/x", "MODELMAKE_REMOTE_TIMEOUT": "-1"}, None, "MODELMAKE_REMOTE_TIMEOUT"),
    ({}, "remote = 3", "pyproject.toml: tool.modelmake.remote: expected a URL string"),
    ({}, 'remote = "gopher://x/y"', "pyproject.toml: tool.modelmake.remote: unsupported scheme 'gopher'"),
    ({}, 'remote = "http://cache/x"\nremote_upload = "no"', "pyproject.toml: tool.modelmake.remote_upload"),
])
def test_bad_remote_setting_is_one_line_and_exit_2_before_anything_runs(blank, tmp_path, env, pyproject, where):
    project = clone(blank, tmp_path)
    if pyproject:
        (project / "pyproject.toml").write_text(f"[tool.modelmake]\n{pyproject}\n")
    for args in (("list",), ("optimize:tiny",)):
        run = doit(project, *args, env=env)
        assert run.rc == 2, run
        lines = run.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], run
        assert PASSWORD not in run.err
        assert not (project / "artifacts/.store").exists()
    res = cli(project, "remote", "status", env=env)
    assert res.returncode == 2 and where in res.stderr and len(res.stderr.strip().splitlines()) == 1, res


def test_s3_remote_without_its_package_is_a_configuration_error(blank, tmp_path):
    import importlib.util
    if importlib.util.find_spec("s3fs") is not None:
        pytest.skip("s3fs is installed here")
    run = doit(clone(blank, tmp_path), "list", env={"MODELMAKE_REMOTE": "s3://bucket/prefix"})
    assert run.rc == 2 and "s3:// remotes need the s3fs package (pip install s3fs)" in run.err, run


# ---------------------------------------------------------------- commands
def _states(res: subprocess.CompletedProcess) -> dict[str, str]:
    assert res.returncode == 0, res.stdout + res.stderr
    return {t["task"]: t["state"] for t in json.loads(res.stdout[res.stdout.index("{"):])["tasks"]}


def test_status_push_pull_and_clean(nginx, blank, tmp_path):
    url, folder = nginx.url("cache/commands"), nginx.disk("cache/commands")
    env = {"MODELMAKE_REMOTE": url}
    a = clone(blank, tmp_path, "a")
    res = cli(a, "remote", "status", "--json", env=env)
    assert set(_states(res).values()) == {"missing", "unknown"}
    assert doit(a, "optimize:tiny", env={**env, "MODELMAKE_REMOTE_UPLOAD": "0"}).rc == 0
    assert set(_states(cli(a, "remote", "status", "--json", env=env)).values()) == {"local only"}
    res = cli(a, "remote", "status", "tiny", env=env)
    assert "local only    pass:tiny/finetune" in res.stdout and f"7 steps: 7 local only (remote {url})" in res.stdout, res.stdout

    res = cli(a, "push", env=env)
    assert res.returncode == 0 and f"pushed {RESULTS} results to {url}" in res.stdout, res.stdout + res.stderr
    assert check_remote(folder) == [] and len(entries(folder)) == RESULTS
    assert set(_states(cli(a, "remote", "status", "--json", env=env)).values()) == {"local+remote"}
    assert "pushed 0 results" in cli(a, "push", "tiny", env=env).stdout

    # a fresh clone sees every current result in the remote, pulls them, and then builds without it
    b = clone(blank, tmp_path, "b")
    states = _states(cli(b, "remote", "status", "--json", env=env))
    assert states["pass:tiny/quantize"] == "remote only" and states["package:tiny"] == "remote only", states
    res = cli(b, "pull", "tiny", env=env)
    assert res.returncode == 0 and "pulled" in res.stdout and "0 in neither store" in res.stdout, res.stdout
    run = doit(b, "optimize:tiny")  # no remote configured: everything comes from the local store
    assert run.rc == 0 and run.built == [] and len(run.restored) == 8, run

    # store gc never touches the remote
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    recipe = b / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    assert doit(b, "optimize:tiny", env={**env, "MODELMAKE_REMOTE_UPLOAD": "0"}).rc == 0
    res = cli(b, "store", "gc")
    assert res.returncode == 0 and "removed" in res.stdout
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before

    # remote clean: results no current recipe uses (per_channel = true: quantize, its evaluation
    # and two of its measurements, package), dry run first; everything written two hours ago
    hours_ago = time.time() - 7200
    for p in folder.rglob("*"):
        os.utime(p, (hours_ago, hours_ago))
    blobs = len(list((folder / "cas").iterdir()))
    res = cli(b, "remote", "clean", "--dry-run", "--older-than", "0", env=env)
    assert res.returncode == 0 and res.stdout.startswith("would remove 5 of 11 results"), res.stdout + res.stderr
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    res = cli(b, "remote", "clean", "--dry-run", env=env)  # default: nothing younger than 30 days
    assert res.stdout.startswith("would remove 0 of 11 results and 0 of"), res.stdout
    res = cli(b, "remote", "clean", "--older-than", "0", env=env)
    assert res.returncode == 0 and res.stdout.startswith("removed 5 of 11 results"), res.stdout
    assert len(entries(folder)) == RESULTS - 5 and check_remote(folder) == []
    assert len(list((folder / "cas").iterdir())) < blobs  # what only the removed results listed
    c = clone(blank, tmp_path, "c")  # the old recipe: what was kept is restored, what was removed rebuilt
    run = doit(c, "optimize:tiny", env={**env, "MODELMAKE_REMOTE_UPLOAD": "0"})
    assert run.rc == 0 and passes_built(run) == {"pass:tiny/quantize"}, run

    res = cli(b, "remote", "status", env={"MODELMAKE_REMOTE": nginx.url("denied/x")})
    assert res.returncode == 1 and res.stderr.strip() == f"error: remote {nginx.url('denied/x')}: HTTP 403 Forbidden"
    assert cli(b, "remote", "status").returncode == 2  # no remote configured

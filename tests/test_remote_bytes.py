"""Builds without the bytes, against a real nginx: a fresh clone (the CI case) computes nothing and
downloads only what it publishes (the evaluation's metrics.json, package.zip, the final model),
an edit downstream downloads exactly the inputs the rebuilt steps read, `modelmake pull` fills
the rest, and the commands that read the remote (status, why, compare --rev) find what CI built
without downloading more than entries and metrics.json. Bytes are counted in nginx's access log."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from buildkit import HOST_DEPENDENT, doit, make_project, passes_built, snapshot
from remotekit import (Nginx, blank_project, built_with, check_remote, cli, clone, downloaded, entries, notes,
                       record_key, serve, warnings)
from modelmake.core import digest
from modelmake.core.textenc import TOKENIZER_FILES
from modelmake.store import Store
from modelmake.store.remote_entry import ac_key, decode

pytestmark = pytest.mark.skipif(not Path(shutil.which("nginx") or "/usr/sbin/nginx").exists(),
                                reason="needs Debian's nginx (apt-get install nginx)")

RESULTS = 11  # store results of the tiny recipe: 2 sources, 4 passes, 3 measurements, eval, package
STEPS = ("source/model", "source/data/reviews", "finetune", "export", "fuse", "quantize")


nginx = pytest.fixture(scope="module", name="nginx")(serve)
blank = pytest.fixture(scope="module", name="blank")(blank_project)


@pytest.fixture(scope="module")
def built(nginx, blank, tmp_path_factory):
    """Project A, built with an empty remote (CI on the main branch): (project, its run)."""
    return built_with(nginx.url("cache/team"), blank, tmp_path_factory.mktemp("a"))


@pytest.fixture
def fresh(nginx, built, blank, tmp_path):
    """A fresh clone built from the remote: (project, its run, the remote's URL)."""
    url = nginx.url("cache/team")
    project = clone(blank, tmp_path)
    run = doit(project, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    return project, run, url


def files_of(remote: Path, key: str) -> dict[str, tuple[str, int]]:
    """path -> (sha256, size) of every file of the remote's result for key."""
    return {f.path: (f.sha256, f.size) for f in decode((remote / "ac" / ac_key(key)).read_bytes()).files}


def blobs_fetched(nginx: Nginx, since: int) -> dict[str, int]:
    """sha256 -> bytes sent, of every blob the server sent since the log mark."""
    got: dict[str, int] = {}
    for r in nginx.requests(since):
        if r.method == "GET" and "/cas/" in r.path and r.status == 200:
            name = r.path.rsplit("/", 1)[1]
            assert name not in got, f"blob {name} sent twice"
            got[name] = r.sent
    return got


def portable(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not any(h in k for h in HOST_DEPENDENT)}


def stub_marker(project: Path, step: str) -> dict | None:
    marker = project / "artifacts/tiny/steps" / step / ".mm-remote.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


# ---------------------------------------------------------------- the CI case
def test_fresh_clone_computes_nothing_and_downloads_only_what_it_publishes(nginx, built, blank, tmp_path):
    """Project A built with the remote; a fresh clone B with an empty store builds the same
    recipe executing zero passes and zero evaluations, downloads the evaluation's metrics.json,
    the package and the final model and nothing else, and its model.onnx, metrics.json
    (host-independent part) and package.zip are byte-identical to A's."""
    a, run_a = built
    remote = nginx.disk("cache/team")
    assert len(run_a.built) == RESULTS and run_a.out.count(": uploaded to remote") == RESULTS
    assert len(entries(remote)) == RESULTS and check_remote(remote) == []

    b = clone(blank, tmp_path)
    mark = nginx.log_mark()
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("cache/team")})
    assert run.rc == 0, run
    assert run.built == [] and passes_built(run) == set(), run  # zero passes, zero evaluations (nor measurements)
    assert ": uploaded to remote" not in run.out and warnings(run) == []

    wanted = {}
    for record in ("eval-tiny.json", "package-tiny.json", "pass-tiny-quantize.json"):
        wanted.update(dict(files_of(remote, record_key(a, record)).values()))
    assert blobs_fetched(nginx, mark) == wanted  # metrics.json, package.zip, model.onnx: each once, whole
    assert downloaded(run) == ["eval:tiny", "package:tiny", "optimize:tiny reads artifacts/tiny/steps/quantize"]

    art_a, art_b = a / "artifacts/tiny", b / "artifacts/tiny"
    for name in ("model.onnx", "package.zip"):
        assert (art_b / name).read_bytes() == (art_a / name).read_bytes(), name
    metrics_a, metrics_b = (json.loads((art / "metrics.json").read_text()) for art in (art_a, art_b))
    assert portable(metrics_b) == portable(metrics_a) and metrics_b == metrics_a  # restored, not re-measured
    assert snapshot(b) == snapshot(a)

    # every step folder is a stub: its manifest (A's, byte for byte) and where its files are
    for step in STEPS:
        marker = stub_marker(b, step)
        assert marker is not None and marker["remote"] == nginx.url("cache/team"), step
        assert sorted(p.name for p in (art_b / "steps" / step).iterdir()) == [".mm-remote.json", ".mm-stat.json",
                                                                              "manifest.json"], step
        assert (art_b / "steps" / step / "manifest.json").read_bytes() == \
            (art_a / "steps" / step / "manifest.json").read_bytes()
    assert not (art_b / "steps/finetune/model.safetensors").exists()
    assert Store(b / "artifacts/.store").verify_all() == {}

    # built again: nothing runs and the remote is not asked anything
    mark = nginx.log_mark()
    again = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": nginx.url("cache/team")})
    assert again.rc == 0 and again.executed == set(), again
    assert nginx.requests(mark) == []


def test_an_edit_downstream_downloads_exactly_the_inputs_it_reads(nginx, built, fresh):
    """per_channel = false in the fresh clone: quantize reads the fused model; the evaluation reads
    the tokenizer files of the fine-tuned checkpoint (not its weights), the data and the baseline
    (the export, re-timed with the new model); the baseline's accuracy comes from the remote."""
    a, _ = built
    b, _, url = fresh
    remote = nginx.disk("cache/team")
    recipe = b / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    mark = nginx.log_mark()
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    assert passes_built(run) == {"pass:tiny/quantize"}, run
    assert sorted(downloaded(run)) == sorted([
        "pass:tiny/quantize reads artifacts/tiny/steps/fuse",
        "eval:tiny reads artifacts/tiny/steps/finetune",            # its tokenizer files
        "eval:tiny reads artifacts/tiny/steps/source/data/reviews",
        "eval:tiny baseline quality",                                # the export's accuracy: measured by A
        "eval:tiny reads artifacts/tiny/steps/export"]), run         # timed again beside the new model

    finetune = files_of(remote, record_key(a, "pass-tiny-finetune.json"))
    tokenizer = {path: f for path, f in finetune.items() if path in TOKENIZER_FILES}
    assert tokenizer and len(tokenizer) < len(finetune)
    wanted = dict(tokenizer.values())
    for record in ("pass-tiny-fuse.json", "pass-tiny-export.json"):
        wanted.update(dict(files_of(remote, record_key(a, record)).values()))
    wanted.update(dict(files_of(remote, _data_key(a)).values()))
    baseline_quality = next(k for k in _eval_keys(a) if k.startswith(run.keys["eval:tiny baseline quality"]))
    wanted.update(dict(files_of(remote, baseline_quality).values()))
    assert blobs_fetched(nginx, mark) == wanted
    # what nothing read stays in the remote: the source model and the fine-tuned weights
    assert stub_marker(b, "source/model") is not None and stub_marker(b, "finetune") is not None
    assert stub_marker(b, "quantize") is None  # built here
    assert Store(b / "artifacts/.store").verify_all() == {}


def _data_key(project: Path) -> str:
    """The store key of the tiny recipe's dataset (the source step's item data.reviews)."""
    store = Store(project / "artifacts/.store")
    manifest = (project / "artifacts/tiny/steps/source/data/reviews/manifest.json").read_bytes()
    keys = json.loads((project / "artifacts/tiny/records/source-tiny.json").read_text())["keys"]
    return next(k for k in keys if store.manifest_bytes(k) == manifest)


def _eval_keys(project: Path) -> list[str]:
    return json.loads((project / "artifacts/tiny/records/eval-tiny.json").read_text())["keys"]


# ---------------------------------------------------------------- stubs in artifacts/
def test_status_names_stubs_pull_fills_them_and_gc_keeps_them(fresh, nginx):
    b, _, url = fresh
    env = {"MODELMAKE_REMOTE": url}
    res = cli(b, "status", "tiny", env=env)
    assert res.returncode == 0, res.stderr
    lines = {line.split()[3]: line for line in res.stdout.splitlines() if line.startswith("  up to date")}
    assert lines["pass:tiny/fuse"].endswith("(files in the remote)") and lines["source:tiny"].endswith("(files in the remote)")
    assert lines["pass:tiny/quantize"].endswith("(files in the store)")  # optimize:tiny fetched the final model
    assert not lines["eval:tiny"].endswith(")") and "8 tasks: 8 up to date" in res.stdout, res.stdout
    res = cli(b, "why", "pass:tiny/fuse", env=env)
    assert res.stdout.splitlines()[0] == "pass:tiny/fuse: up to date (files in the remote)", res.stdout
    assert f"its files (1 file, " in res.stdout and f"are in the remote {url}" in res.stdout

    # store gc keeps the stubs the current recipe uses: the files are not here, their entries are
    store = b / "artifacts/.store"
    stubs = sorted(p.name for p in (store / "stubs").rglob("*.json"))
    assert len(stubs) == 5  # 2 source items, finetune, export, fuse (quantize: its files were fetched)
    res = cli(b, "store", "gc")
    assert res.returncode == 0 and res.stdout.startswith("removed 0 of "), res.stdout
    assert sorted(p.name for p in (store / "stubs").rglob("*.json")) == stubs

    # a marker edited on disk: the step is not up to date, and a build puts the stub back from the
    # local store's entry, without asking the remote
    marker = b / "artifacts/tiny/steps/export/.mm-remote.json"
    marker.write_text(marker.read_text().replace('"files"', '"files" ', 1))
    res = cli(b, "why", "pass:tiny/export", env=env)
    assert "target artifacts/tiny/steps/export was damaged or edited on disk: .mm-remote.json changed size" in res.stdout
    mark = nginx.log_mark()
    run = doit(b, "optimize:tiny", env=env)
    assert run.rc == 0 and run.restored == ["pass:tiny/export"], run
    assert stub_marker(b, "export") is not None and nginx.requests(mark) == []

    res = cli(b, "pull", "tiny", env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "filled 6 step folders in artifacts/" in res.stdout, res.stdout
    for step in STEPS:
        folder = b / "artifacts/tiny/steps" / step
        assert stub_marker(b, step) is None and digest.verify_folder(folder) is None, step
    assert not list((store / "stubs").rglob("*.json"))
    res = cli(b, "status", "tiny", env=env)
    assert "(files in the" not in res.stdout and "8 tasks: 8 up to date" in res.stdout, res.stdout
    run = doit(b, "optimize:tiny")
    assert run.rc == 0 and run.executed == set(), run  # filled folders are what the build placed, not edits


def test_gc_removes_stubs_no_current_recipe_uses(fresh):
    b, _, url = fresh
    store = b / "artifacts/.store"
    fuse = record_key(b, "pass-tiny-fuse.json")
    assert (store / "stubs" / fuse[:2] / f"{fuse}.json").is_file()
    recipe = b / "recipes/tiny.toml"  # fusion and quantization dropped: the export is the final model
    text = recipe.read_text()
    recipe.write_text(text[:text.index('[[pass]]\nname = "fuse"')] + text[text.index("[evaluate]"):])
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": url, "MODELMAKE_REMOTE_UPLOAD": "0"})
    assert run.rc == 0, run
    res = cli(b, "store", "gc")
    assert res.returncode == 0, res.stderr
    assert not (store / "stubs" / fuse[:2] / f"{fuse}.json").exists()
    finetune = record_key(b, "pass-tiny-finetune.json")
    assert (store / "stubs" / finetune[:2] / f"{finetune}.json").is_file()  # still used


def test_remote_down_when_a_stub_is_read_builds_the_input_here(fresh, blank, tmp_path):
    """The remote answered when the stubs were placed and is gone when a step reads one: the step
    that makes the input runs again here (and what it reads in turn), one warning, no failure."""
    b, _, url = fresh
    recipe = b / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    down = f"http://127.0.0.1:{port}/team"
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": down})
    assert run.rc == 0, run
    assert warnings(run) == [f"warning: remote {down}: connection refused; building locally"], run
    # quantize reads the fused model: the chain under it is made again, as it was in A
    assert passes_built(run) == {"pass:tiny/finetune", "pass:tiny/export", "pass:tiny/fuse", "pass:tiny/quantize"}
    assert "pass:tiny/quantize: cannot fetch the files of artifacts/tiny/steps/fuse" in run.out
    for step in ("finetune", "export", "fuse"):
        assert stub_marker(b, step) is None and digest.verify_folder(b / "artifacts/tiny/steps" / step) is None
    run = doit(b, "optimize:tiny", env={"MODELMAKE_REMOTE": down})
    assert run.rc == 0 and run.executed == set(), run


# ---------------------------------------------------------------- commands that read the remote
def test_why_says_the_remote_holds_the_evaluation_measured_on_another_kind_of_host(fresh, nginx, monkeypatch, capsys):
    """A's build noted its host beside the evaluation; on another kind of host the evaluation's key
    differs (timings belong to their host), and `why` says what the remote holds and why it is not used."""
    from modelmake.build import compile as build_compile
    from modelmake.build.hosts import describe
    from modelmake.commands import status

    b, _, url = fresh
    here = build_compile.host_fingerprint()
    assert here in [h for n in notes(nginx.disk("cache/team")).values() for h in n["hosts"].values()]
    monkeypatch.chdir(b)
    monkeypatch.delenv("MODELMAKE_STORE", raising=False)
    monkeypatch.setenv("MODELMAKE_REMOTE", url)
    other = {**here, "cpu": "AMD EPYC 7B13", "cpu_flags": "0123456789abcdef"}
    monkeypatch.setattr(build_compile, "host_fingerprint", lambda: other)
    assert status.main("why", ["eval:tiny", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)["tasks"][0]
    assert verdict["state"] == "stale"
    assert f"host.cpu: {here['cpu']} -> AMD EPYC 7B13" in verdict["reasons"]
    assert any(r.startswith("not in the store nor the remote (key ") for r in verdict["reasons"]), verdict
    said = [r for r in verdict["reasons"] if r.startswith("the remote holds this evaluation")]
    assert said == [f"the remote holds this evaluation of the same inputs measured on another kind of host "
                    f"({describe(here)}); timings (latency, throughput, memory) are keyed by host, and this host "
                    f"is {describe(other)} (the host.* settings), so it is measured again here (accuracy and "
                    "other host-independent measurements are reused)"], verdict


def _git(project: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, text=True, env=env).stdout


def test_status_and_compare_rev_find_what_ci_built_in_the_remote(nginx, tmp_path):
    """CI built main with the remote; a pull-request checkout changes the recipe. `status` in a
    fresh clone of main and `compare --rev main` in the pull request read main's results from the
    remote: entries and the evaluation's metrics.json, nothing else."""
    url = nginx.url("cache/ci")
    repo = make_project(tmp_path / "repo")
    (repo / ".gitignore").write_text("artifacts/\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "per-channel int8")
    ci = tmp_path / "ci"
    _git(tmp_path, "clone", "-q", str(repo), str(ci))
    run = doit(ci, "optimize:tiny", env={"MODELMAKE_REMOTE": url})
    assert run.rc == 0, run
    main_metrics = json.loads((ci / "artifacts/tiny/metrics.json").read_text())
    eval_blob = dict(files_of(nginx.disk("cache/ci"), record_key(ci, "eval-tiny.json")).values())

    dev = tmp_path / "dev"  # a pull request: per-tensor scales, built against the team cache (read only)
    _git(tmp_path, "clone", "-q", str(repo), str(dev))
    recipe = dev / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    run = doit(dev, "optimize:tiny", env={"MODELMAKE_REMOTE": url, "MODELMAKE_REMOTE_UPLOAD": "0"})
    assert run.rc == 0 and passes_built(run) == {"pass:tiny/quantize"}, run
    mark = nginx.log_mark()
    res = cli(dev, "compare", "--rev", "main", "--format", "json", env={"MODELMAKE_REMOTE": url})
    assert res.returncode == 0, res.stdout + res.stderr
    diff = json.loads(res.stdout)["tiny"]["metrics"]
    mine = json.loads((dev / "artifacts/tiny/metrics.json").read_text())
    for k, v in diff.items():
        assert v["old"] == main_metrics[k] and v["new"] == mine[k], k
    assert blobs_fetched(nginx, mark) == eval_blob  # main's evaluation: its metrics.json, nothing else
    res = cli(dev, "compare", "--rev", "main", env={"MODELMAKE_REMOTE": "", "MODELMAKE_STORE": str(tmp_path / "empty")})
    assert res.returncode == 1 and res.stdout.startswith("tiny: not built at main"), res.stdout

    fresh = tmp_path / "fresh"  # a clone of main: every step's result is in the remote
    _git(tmp_path, "clone", "-q", str(repo), str(fresh))
    mark = nginx.log_mark()
    res = cli(fresh, "status", "--json", env={"MODELMAKE_REMOTE": url})
    assert res.returncode == 0, res.stderr
    tasks = {t["task"]: t for t in json.loads(res.stdout)["tasks"]}
    assert {t["state"] for n, t in tasks.items() if n != "optimize:tiny"} == {"restorable"}, tasks
    assert tasks["pass:tiny/finetune"]["reasons"][-1].startswith(f"the remote {url} holds its result")
    assert blobs_fetched(nginx, mark) == eval_blob  # the package's key needs the evaluation's metrics
    res = cli(fresh, "status", "--json", env={"MODELMAKE_STORE": str(tmp_path / "empty")})
    assert {t["state"] for t in json.loads(res.stdout)["tasks"]} == {"never built"}  # without the remote
    res = cli(dev, "compare", "--rev", "main", "--format", "markdown", env={"MODELMAKE_REMOTE": url})
    assert res.returncode == 0 and "| tiny | accuracy |" in res.stdout, res.stdout

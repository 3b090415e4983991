"""Pass steps computed on a real Dask cluster: `dask scheduler` and two `dask worker` processes on
127.0.0.1 (distributed's own CLI, started and stopped here), a file:// remote store between them
and the client. The artifacts are a local build's; a worker killed mid-step is replaced; a failing
step fails as it does here; a worker of other versions is not used; a scheduler that is down is one
line (or, with the fallback, a local build)."""
from __future__ import annotations

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildkit import TESTS, doit, make_project, recipe_text, sigint_as_on_a_terminal, snapshot
from remotekit import free_port

DASK = Path(sys.executable).parent / "dask"
pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(not DASK.exists(), reason='needs dask.distributed (pip install -e ".[dask]")')]


class Cluster:
    """A scheduler and workers, each a process of its own; stop() ends every one of them."""

    def __init__(self, root: Path, workers: int = 2, worker_env: list[dict] | None = None,
                 worker_args: list[list[str]] | None = None):
        self.root, self.port = root, free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.n, self.worker_env = workers, worker_env or [{}] * workers
        self.worker_args = worker_args or [[]] * workers
        self.spawned = 0

    def _spawn(self, args: list[str], name: str, env: dict) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "w")
        full = {**os.environ, "PYTHONPATH": str(TESTS / "plugins"), **env}
        full.pop("MODELMAKE_STORE", None)
        p = subprocess.Popen([str(DASK), *args], stdout=log, stderr=subprocess.STDOUT, env=full,
                             cwd=self.root, start_new_session=True)
        self.procs.append(p)
        return p

    def start(self) -> "Cluster":
        self.root.mkdir(parents=True, exist_ok=True)
        self._spawn(["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"], "scheduler", {})
        for i in range(self.n):
            self.workers.append(self.spawn_worker(i))
        self.wait_for(self.n)
        return self

    def spawn_worker(self, i: int) -> subprocess.Popen:
        """Worker i (named w<i>), with a store of its own; again after it died: a new process, same name."""
        self.spawned += 1
        env = {"MODELMAKE_WORKER_STORE": str(self.root / f"worker{i}-store"), **self.worker_env[i]}
        return self._spawn(["worker", self.address, "--host", "127.0.0.1", "--nworkers", "1", "--nthreads", "1",
                            "--no-dashboard", "--no-nanny", "--name", f"w{i}",
                            "--local-directory", str(self.root / f"w{i}.{self.spawned}"), *self.worker_args[i]],
                           f"worker{i}.{self.spawned}", env)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        from distributed import Client

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with Client(self.address, timeout=5) as c:
                    if len(c.scheduler_info()["workers"]) >= n:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"the Dask cluster did not come up with {n} workers; logs in {self.root}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # w1 stands for a GPU box, w0 for the deployment host: placement sends the steps that ask for
    # a GPU to w1, and evaluations, with placement `eval`, to w0
    c = Cluster(tmp_path_factory.mktemp("cluster"),
                worker_args=[["--resources", "bench=1"], ["--resources", "GPU=1"]]).start()
    yield c
    c.stop()


def cluster_env(cluster_or_address, remote: Path, **more) -> dict:
    address = cluster_or_address if isinstance(cluster_or_address, str) else cluster_or_address.address
    return {"MODELMAKE_EXECUTOR": address, "MODELMAKE_REMOTE": f"file://{remote}", **more}


def computed_on_cluster(run) -> list[str]:
    return [line.split(": computed on ")[0].strip() for line in run.out.splitlines() if ": computed on tcp://" in line]


def test_a_recipe_built_on_the_cluster_is_a_local_build(cluster, tmp_path):
    local = make_project(tmp_path / "local")
    assert doit(local, "optimize:tiny").rc == 0
    project = make_project(tmp_path / "remote")
    (tmp_path / "remote-store").mkdir()
    run = doit(project, "optimize:tiny", env=cluster_env(cluster, tmp_path / "remote-store"))
    assert run.rc == 0, run
    assert sorted(computed_on_cluster(run)) == ["pass:tiny/export", "pass:tiny/finetune", "pass:tiny/fuse",
                                                "pass:tiny/quantize"], run.out
    assert snapshot(project) == snapshot(local)
    record = json.loads((project / "artifacts/tiny/records/pass-tiny-finetune.json").read_text())
    assert record["worker"].startswith("tcp://127.0.0.1:") and record["built"] is True
    # the build time kept with the result is the worker's, not the client's round trip
    from modelmake.store import Store
    meta = Store(project / "artifacts/.store").meta(record["key"])
    assert meta["worker"] == record["worker"] and meta["build_seconds"] < record["seconds"], (meta, record)
    # a result the remote holds is restored, not computed again
    again = make_project(tmp_path / "again")
    run = doit(again, "optimize:tiny", env=cluster_env(cluster, tmp_path / "remote-store"))
    assert run.rc == 0 and not computed_on_cluster(run), run.out


def test_shared_prefixes_are_computed_once_across_workers(cluster, tmp_path):
    project = make_project(tmp_path / "p", {"tiny": recipe_text(), "tiny2": recipe_text()})
    (tmp_path / "remote").mkdir()
    run = doit(project, "-n", "2", "optimize", env=cluster_env(cluster, tmp_path / "remote"))
    assert run.rc == 0, run
    done = computed_on_cluster(run)
    assert sum(t.endswith("/finetune") for t in done) == 1, done
    assert len(done) == 4, done


def test_a_failing_step_fails_as_it_does_here(cluster, tmp_path):
    # a step runs in a scratch folder of the worker: the marker is named by its absolute path
    marker = tmp_path / "FAIL"
    text = recipe_text(f'\n[[pass]]\nname = "check"\ntype = "test-fail-if-marker"\nmarker = "{marker}"\n')
    project = make_project(tmp_path / "p", {"tiny": text})
    marker.write_text("")
    (tmp_path / "remote").mkdir()
    env = cluster_env(cluster, tmp_path / "remote", MODELMAKE_PLUGINS="failing_pass")
    run = doit(project, "optimize:tiny", env=env)
    assert run.rc != 0
    line = next(x for x in run.out.splitlines() if x.startswith("error: pass:tiny/check failed"))
    assert f"RuntimeError: marker file {marker} exists" in line, line
    assert not (project / "artifacts/tiny/steps/check").exists()
    # the worker's failure left nothing in the remote: a fixed input builds it
    marker.unlink()
    fixed = doit(project, "optimize:tiny", env=env)
    assert fixed.rc == 0 and "pass:tiny/check" in computed_on_cluster(fixed), fixed


def start_slow_build(cluster, tmp_path, wait_s: float) -> tuple[Path, subprocess.Popen]:
    """A build whose last pass, on the cluster, waits (the first time) once it wrote its process
    id into the marker file; returns when it does."""
    marker = tmp_path / "started"
    text = recipe_text(f'\n[[pass]]\nname = "slow"\ntype = "test-slow-once"\nmarker = "{marker}"\nwait_s = {wait_s}\n')
    project = make_project(tmp_path / "p", {"tiny": text})
    (tmp_path / "remote").mkdir()
    env = {**os.environ, "PYTHONPATH": str(TESTS / "plugins"),
           **cluster_env(cluster, tmp_path / "remote", MODELMAKE_PLUGINS="slow_pass")}
    build = subprocess.Popen([sys.executable, "-m", "doit", "optimize:tiny"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             preexec_fn=sigint_as_on_a_terminal)
    deadline = time.monotonic() + 300
    while not marker.exists() and time.monotonic() < deadline and build.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), build.communicate()[0]
    return marker, build


def test_a_worker_killed_mid_step_is_replaced(cluster, tmp_path):
    marker, build = start_slow_build(cluster, tmp_path, wait_s=60.0)
    victim = int(marker.read_text())
    os.kill(victim, signal.SIGKILL)
    out, _ = build.communicate(timeout=300)
    assert build.returncode == 0, out
    assert "pass:tiny/slow" in [x.split(": computed on ")[0].strip() for x in out.splitlines() if ": computed on" in x]
    # the killed worker is gone; start it again so later tests have both
    i = next(i for i, w in enumerate(cluster.workers) if w.pid == victim)
    cluster.workers[i] = cluster.spawn_worker(i)
    cluster.wait_for(2)


def test_a_scheduler_that_is_down_is_one_line_or_a_local_build(tmp_path):
    project = make_project(tmp_path / "p")
    (tmp_path / "remote").mkdir()
    down = f"tcp://127.0.0.1:{free_port()}"
    run = doit(project, "optimize:tiny", env=cluster_env(down, tmp_path / "remote", MODELMAKE_EXECUTOR_TIMEOUT="2"))
    assert run.rc != 0
    line = next(x for x in run.out.splitlines() if x.startswith("error: pass:tiny/finetune failed"))
    assert f"Dask scheduler {down} is unreachable" in line, line
    assert not (project / "artifacts/tiny/steps/finetune").exists()
    run = doit(project, "optimize:tiny", env=cluster_env(down, tmp_path / "remote", MODELMAKE_EXECUTOR_FALLBACK="local",
                                                         MODELMAKE_EXECUTOR_TIMEOUT="2"))
    assert run.rc == 0, run
    assert f"warning: pass:tiny/finetune: Dask scheduler {down} is unreachable" in run.out


def test_an_executor_needs_a_remote_store(tmp_path):
    project = make_project(tmp_path / "p")
    run = doit(project, "list", env={"MODELMAKE_EXECUTOR": "tcp://127.0.0.1:1"})
    assert run.rc == 2
    assert run.err.strip().splitlines()[-1].startswith("error: MODELMAKE_EXECUTOR: Dask workers read"), run.err


def test_a_worker_of_other_versions_is_not_used(tmp_path):
    # the second worker sees an onnx 0.0.1 first on its path (a dist-info folder, as pip writes one)
    fake = tmp_path / "fake-site"
    info = fake / "onnx-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnx\nVersion: 0.0.1\n")
    c = Cluster(tmp_path / "cluster", workers=2,
                worker_env=[{}, {"PYTHONPATH": os.pathsep.join([str(fake), str(TESTS / "plugins")])}]).start()
    try:
        project = make_project(tmp_path / "p")
        (tmp_path / "remote").mkdir()
        run = doit(project, "optimize:tiny", env=cluster_env(c, tmp_path / "remote"))
        assert run.rc == 0, run
        good = c.workers[0]
        from distributed import Client
        with Client(c.address, timeout=10) as client:
            names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
        records = [json.loads(f.read_text()) for f in (project / "artifacts/tiny/records").glob("pass-*.json")]
        # every step keyed by onnx ran on the worker whose onnx is the client's
        onnx_steps = [r for r in records if r.get("built") and "onnx" in r["settings"]["libraries"]]
        assert len(onnx_steps) == 3 and {names[r["worker"]] for r in onnx_steps} == {"w0"}, records
        assert good.poll() is None
        # only the mismatched worker left: one line naming the library and both versions
        good.terminate()
        good.wait(timeout=20)
        other = make_project(tmp_path / "q", {"tiny": recipe_text().replace("per_channel = true", "per_channel = false")})
        run = doit(other, "optimize:tiny", env=cluster_env(c, tmp_path / "remote"))
        assert run.rc != 0, run
        line = next((x for x in run.out.splitlines() if x.startswith("error: pass:tiny/quantize failed")), run.out)
        assert "no worker can compute it" in line and "has onnx 0.0.1, the client" in line, line
    finally:
        c.stop()


def test_ctrl_c_cancels_the_step_on_the_cluster(cluster, tmp_path):
    marker, build = start_slow_build(cluster, tmp_path, wait_s=20.0)
    build.send_signal(signal.SIGINT)
    out, _ = build.communicate(timeout=60)
    assert build.returncode == 130, out
    from distributed import Client

    def slow_tasks(dask_scheduler=None) -> list[str]:
        return [k for k in dask_scheduler.tasks if "slow" in str(k)]

    with Client(cluster.address, timeout=10) as client:
        deadline = time.monotonic() + 30
        while client.run_on_scheduler(slow_tasks) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert client.run_on_scheduler(slow_tasks) == []
    assert not (tmp_path / "p/artifacts/tiny/steps/slow").exists()


def test_placement_sends_a_pass_type_to_the_workers_with_its_resources(cluster, tmp_path):
    # a fine-tuning no worker's store holds yet, so that it is computed (and prints progress)
    project = make_project(tmp_path / "p", {"tiny": recipe_text().replace("learning_rate = 1e-3", "learning_rate = 2e-3")})
    (project / "pyproject.toml").write_text("[tool.modelmake.placement]\nfinetune = { resources = { GPU = 1 } }\n")
    (tmp_path / "remote").mkdir()
    run = doit(project, "optimize:tiny", env=cluster_env(cluster, tmp_path / "remote"))
    assert run.rc == 0, run
    assert "pass:tiny/finetune: computing on the Dask cluster" in run.out and "(resources {'GPU': 1.0})" in run.out
    from distributed import Client
    with Client(cluster.address, timeout=10) as client:
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    record = json.loads((project / "artifacts/tiny/records/pass-tiny-finetune.json").read_text())
    assert names[record["worker"]] == "w1"
    # "running on" while it runs; "ran on" when it was done before the client's first poll saw it
    assert re.search(rf"pass:tiny/finetune: (running|ran) on {re.escape(record['worker'])}\n", run.out), run.out
    # the worker's progress lines reach the client
    assert any(line.startswith("    [tcp://127.0.0.1:") and "fine-tune" in line for line in run.out.splitlines()), run.out


def test_placement_names_a_known_pass_type(tmp_path):
    project = make_project(tmp_path / "p")
    (project / "pyproject.toml").write_text("[tool.modelmake.placement]\nfinetuen = { resources = { GPU = 1 } }\n")
    run = doit(project, "list", env=cluster_env("tcp://127.0.0.1:1", tmp_path))
    assert run.rc == 2
    assert run.err.strip().splitlines()[-1].startswith(
        "error: pyproject.toml: tool.modelmake.placement.finetuen: unknown pass type"), run.err


def test_evaluations_run_on_the_workers_placement_names(cluster, tmp_path):
    project = make_project(tmp_path / "p", {"tiny": recipe_text().replace("learning_rate = 1e-3", "learning_rate = 3e-3")})
    (project / "pyproject.toml").write_text("[tool.modelmake.placement]\neval = { resources = { bench = 1 } }\n")
    (tmp_path / "remote").mkdir()
    env = cluster_env(cluster, tmp_path / "remote")
    run = doit(project, "optimize:tiny", env=env)
    assert run.rc == 0, run
    assert "eval:tiny" in computed_on_cluster(run), run.out
    from distributed import Client
    with Client(cluster.address, timeout=10) as client:
        names = {a: w["name"] for a, w in client.scheduler_info()["workers"].items()}
    record = json.loads((project / "artifacts/tiny/records/eval-tiny.json").read_text())
    assert names[record["worker"]] == "w0"
    metrics = json.loads((project / "artifacts/tiny/metrics.json").read_text())
    assert metrics["latency_ms.p50"] > 0 and "accuracy" in metrics
    # the evaluation workers' host is remembered: status computes the keys the build used
    assert (project / "artifacts/.cluster-hosts.json").is_file()
    status = subprocess.run([sys.executable, "-m", "modelmake.commands.cli", "status"], cwd=project,
                            capture_output=True, text=True, env={**os.environ, **env})
    assert status.returncode == 0 and "8 up to date" in status.stdout, status.stdout + status.stderr
    again = doit(project, "optimize:tiny", env=env)
    assert again.rc == 0 and not again.executed, again

"""Guarantees that make a build tool trustworthy, each attacked on purpose (docs/reliability.md).

Kill trials: the default run has the targeted kills; `-m faults` selects the random ones, a CI
step of its own (set MODELMAKE_KILL_TRIALS to change the size of its long share). With MODELMAKE_FIGURES=<file>,
each test appends its counts there (quoted in docs/reliability.md).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from buildkit import TESTS, doit, make_project, sigint_as_on_a_terminal, snapshot, started_line, wipe_outputs
from modelmake.core import digest
from modelmake.store import Store


def figure(name: str, value) -> None:
    path = os.environ.get("MODELMAKE_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(f"{name}={value}\n")


def popen(project: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    full_env = {**os.environ, "PYTHONPATH": str(TESTS / "plugins"), **(env or {})}
    full_env.pop("MODELMAKE_STORE", None) if not (env and "MODELMAKE_STORE" in env) else None
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=sigint_as_on_a_terminal)


@pytest.fixture(scope="module")
def blank(tmp_path_factory):
    """A project that was never built, to copy per trial."""
    return make_project(tmp_path_factory.mktemp("blank") / "proj")


@pytest.fixture(scope="module")
def reference(blank, tmp_path_factory):
    project = tmp_path_factory.mktemp("ref") / "proj"
    shutil.copytree(blank, project)
    t0 = time.monotonic()
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    return snapshot(project), time.monotonic() - t0, project


def fresh(blank: Path, tmp_path: Path, name: str = "proj") -> Path:
    dest = tmp_path / name
    shutil.copytree(blank, dest)
    return dest


def _kill_trial(blank, tmp_path, reference, *, delay=None, kill_at=None):
    ref, _, _ = reference
    project = fresh(blank, tmp_path, f"trial-{delay}-{kill_at}".replace("#", "_"))
    proc = popen(project, "optimize:tiny", env={"MODELMAKE_TEST_KILL_AT": kill_at} if kill_at else None)
    if delay is not None:
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=600)
    killed = proc.returncode != 0
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert "Traceback" not in run.out + run.err
    assert snapshot(project) == ref
    assert Store(project / "artifacts/.store").verify_all() == {}
    return killed


# publish: object built, manifest written, not yet renamed into the store; published: renamed,
# not yet placed; place: old target moved aside, new one not yet renamed in; dbsave: inside
# doit's DB transaction at the end of the run
KILL_POINTS = ["publish#1", "publish#3", "published#4", "place#2", "place#5", "publish#7", "dbsave#1"]


@pytest.mark.parametrize("kill_at", KILL_POINTS)
def test_killed_at_store_publish_and_placement(blank, tmp_path, reference, kill_at):
    """SIGKILL exactly while a result is published to the store or placed into artifacts/."""
    assert _kill_trial(blank, tmp_path, reference, kill_at=kill_at), "the kill point was not reached"
    figure("kill_trials_targeted", 1)


def _random_trials(n: int, seed: int):
    rng = random.Random(seed)
    return [round(rng.uniform(0.2, 1.0), 3) for _ in range(n)]


# random moments are the long group's (-m faults, a CI step of its own); the default run keeps the
# targeted kill points above, which reach every publish and placement state on purpose
@pytest.mark.faults
@pytest.mark.parametrize("fraction", _random_trials(6, seed=1))
def test_killed_at_random_moment(blank, tmp_path, reference, fraction):
    """SIGKILL the whole process group at a random moment of a cold build."""
    _, cold_seconds, _ = reference
    killed = _kill_trial(blank, tmp_path, reference, delay=fraction * cold_seconds)
    figure("kill_trials_random", 1)
    figure("kill_trials_random_killed", int(killed))


@pytest.mark.faults
@pytest.mark.parametrize("fraction", _random_trials(int(os.environ.get("MODELMAKE_KILL_TRIALS", "30")), seed=2))
def test_killed_at_random_moment_long(blank, tmp_path, reference, fraction):
    _, cold_seconds, _ = reference
    killed = _kill_trial(blank, tmp_path, reference, delay=fraction * cold_seconds)
    figure("kill_trials_random", 1)
    figure("kill_trials_random_killed", int(killed))


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 300) -> str:
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"never saw {marker!r}:\n{''.join(seen)}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_cleanly(blank, tmp_path, reference, sig):
    project = fresh(blank, tmp_path)
    proc = popen(project, "optimize:tiny")
    _wait_for(proc, started_line("pass:tiny/export"))  # finetune has finished and been recorded
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, (proc.returncode, out, err)
    assert "interrupted" in err and "Traceback" not in err + out, err
    # no half-written output of the interrupted step, no temp folders in artifacts/
    steps = project / "artifacts/tiny/steps"
    for d in steps.rglob("*"):
        assert not d.name.startswith(".mm-") or d.name == ".mm-stat.json", d
    for manifest in steps.rglob(digest.MANIFEST):
        assert digest.verify_folder(manifest.parent) is None, manifest.parent
    # finished steps are recorded in doit's DB: the next run does not even restore them
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert "pass:tiny/finetune" not in run.executed and "source:tiny" not in run.executed, run
    assert snapshot(project) == reference[0]


def test_two_builds_in_one_checkout_wait_for_each_other(blank, tmp_path, reference):
    project = fresh(blank, tmp_path)
    a = popen(project, "optimize:tiny")
    time.sleep(1.0)
    b = popen(project, "optimize:tiny")
    out_a, err_a = a.communicate(timeout=600)
    out_b, err_b = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    assert "another build is running in this project" in err_b
    assert "built in" not in out_b  # b found everything done by a
    assert snapshot(project) == reference[0]


def test_two_builds_of_recipes_sharing_a_prefix_at_once(tmp_path, reference):
    from buildkit import recipe_text
    project = make_project(tmp_path / "proj", {"tiny": recipe_text(), "tiny-fp32": recipe_text("")})
    a = popen(project, "optimize:tiny")
    time.sleep(1.0)
    b = popen(project, "optimize:tiny-fp32")
    out_a, err_a = a.communicate(timeout=600)
    out_b, err_b = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    assert "another build is running in this project" in err_b
    assert "pass:tiny-fp32/finetune: restored from store" in out_b, out_b  # the prefix ran once
    assert snapshot(project) == reference[0]
    assert Store(project / "artifacts/.store").verify_all() == {}


def test_two_checkouts_share_one_store_concurrently(blank, tmp_path, reference):
    shared = tmp_path / "shared-store"
    one, two = fresh(blank, tmp_path, "one"), fresh(blank, tmp_path, "two")
    env = {"MODELMAKE_STORE": str(shared)}
    a, b = popen(one, "optimize:tiny", env=env), popen(two, "optimize:tiny", env=env)
    out_a, err_a = a.communicate(timeout=600)
    out_b, err_b = b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, (err_a, err_b)
    finetunes = (out_a + out_b).count("pass:tiny/finetune: built")
    assert finetunes == 1, out_a + out_b
    assert Store(shared).verify_all() == {}
    assert snapshot(one) == snapshot(two) == reference[0]


@pytest.fixture
def built(reference, tmp_path):
    project = tmp_path / "built"
    shutil.copytree(reference[2], project)
    return project


@pytest.mark.parametrize("target,damage", [
    ("steps/export/model.onnx", "bitflip"),
    ("steps/finetune/model.safetensors", "truncate"),
    ("package.zip", "truncate"),
    ("metrics.json", "edit"),
    ("model.onnx", "bitflip"),
])
def test_damaged_target_is_detected_and_restored(built, reference, target, damage):
    path = built / "artifacts/tiny" / target
    data = bytearray(path.read_bytes())
    if damage == "bitflip":
        data[len(data) // 3] ^= 0x01
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = data.replace(b'"accuracy"', b'"accuracy_"', 1)
    path.write_bytes(bytes(data))
    run = doit(built, "optimize:tiny")
    assert run.rc == 0, run
    assert "was damaged" in run.out, run
    assert run.built == [] or all(not b.startswith("pass:") for b in run.built), run
    assert snapshot(built) == reference[0]
    figure("damaged_targets_restored", 1)


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")


@needs_mount
def test_full_disk_fails_cleanly_and_recovers(blank, tmp_path, reference):
    project = fresh(blank, tmp_path)
    art = project / "artifacts"
    if not _mount_tmpfs(art, "600k"):
        pytest.skip("mount not permitted here")
    try:
        run = doit(project, "optimize:tiny")
        assert run.rc != 0, run
        assert "No space left on device" in run.out + run.err, run
        assert "Traceback" not in run.out + run.err
        assert Store(art / ".store").verify_all() == {}
        assert not list((art / ".store").glob("tmp/*")), "a failed build left temp folders"
        subprocess.run(["mount", "-o", "remount,size=64m", str(art)], check=True)
        run = doit(project, "optimize:tiny")
        assert run.rc == 0, run
        assert snapshot(project) == reference[0]
    finally:
        subprocess.run(["umount", "-l", str(art)])


@needs_mount
def test_read_only_artifacts_is_one_clear_error(blank, tmp_path):
    project = fresh(blank, tmp_path)
    art = project / "artifacts"
    if not _mount_tmpfs(art, "64m"):
        pytest.skip("mount not permitted here")
    try:
        subprocess.run(["mount", "-o", "remount,ro", str(art)], check=True)
        run = doit(project, "optimize:tiny")
        assert run.rc == 2, run
        lines = run.err.strip().splitlines()
        assert len(lines) == 1 and "artifacts" in lines[0] and "Read-only file system" in lines[0], run
        assert not any(art.iterdir())
    finally:
        subprocess.run(["umount", "-l", str(art)])


def test_store_verify_and_gc(built):
    cli = [sys.executable, "-m", "modelmake.commands.cli"]
    def store(*args):
        return subprocess.run([*cli, "store", *args], cwd=built, capture_output=True, text=True)

    res = store("verify")
    assert res.returncode == 0 and " 0 damaged" in res.stdout, res.stdout + res.stderr
    res = store("gc", "--dry-run")
    assert res.returncode == 0 and "would remove 0 of" in res.stdout, res.stdout + res.stderr

    recipe = built / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    assert doit(built, "optimize:tiny").rc == 0
    res = store("gc", "--dry-run")
    assert "would remove 0 of" not in res.stdout, res.stdout
    count = len(Store(built / "artifacts/.store").keys())
    res = store("gc")
    assert res.returncode == 0 and "removed" in res.stdout, res.stdout + res.stderr
    assert len(Store(built / "artifacts/.store").keys()) < count
    run = doit(built, "optimize:tiny")  # nothing current was collected
    assert run.rc == 0 and run.executed == set(), run
    wipe_outputs(built, keep_store=True)
    run = doit(built, "optimize:tiny")
    assert run.rc == 0 and run.built == [], run

    victim = next((built / "artifacts/.store/objects").glob("*/*/model.onnx"))
    victim.chmod(0o644)
    victim.write_bytes(victim.read_bytes()[:-10])
    res = store("verify")
    assert res.returncode == 1 and "damaged" in res.stdout and " 1 damaged" in res.stdout, res.stdout
    res = store("verify", "--discard")
    assert res.returncode == 0 and "(discarded)" in res.stdout
    assert store("verify").returncode == 0

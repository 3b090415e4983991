"""The project lock: commands that write wait for a running build; commands that only read do not.
Which command an argument list runs is decided as doit decides it (loader options first)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from buildkit import make_project
from modelmake.build.lock import acquire_project_lock, doit_command


@pytest.mark.parametrize("argv,command", [
    ([], "run"),
    (["optimize:tiny"], "run"),
    (["-n", "2", "optimize"], "run"),
    (["list"], "list"),
    (["list", "--all"], "list"),
    (["-f", "dodo.py", "list"], "list"),       # a loader option before the command
    (["--file=dodo.py", "info", "eval:tiny"], "info"),
    (["-d", ".", "-k", "dumpdb"], "dumpdb"),
    (["seed=1", "list"], "list"),               # a doit variable, not a task
    (["clean", "pass:tiny/fuse"], "clean"),
    (["strace", "pass:tiny/fuse"], "strace"),  # runs the task's actions: it writes
    (["-f", "dodo.py", "-n", "2", "list"], "run"),  # -n is run's option: doit runs task "list"
])
def test_the_command_is_found_as_doit_finds_it(argv, command):
    assert doit_command(argv) == command


def _doit(project, *args) -> subprocess.Popen:
    env = {**os.environ, "TERM": "dumb"}
    env.pop("MODELMAKE_STORE", None)
    return subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_reading_commands_do_not_wait_for_a_build_and_writing_ones_do(tmp_path):
    project = make_project(tmp_path / "proj")
    held = acquire_project_lock(project / "artifacts")  # as a running build holds it
    try:
        for args in (["-f", "dodo.py", "list"], ["list", "--all"], ["info", "pass:tiny/fuse"]):
            proc = _doit(project, *args)
            out, err = proc.communicate(timeout=120)
            # `info` exits 1 for a task that is not up to date; it must answer, not wait
            assert proc.returncode in (0, 1) and "Traceback" not in err, (args, out, err)
            assert "another build is running" not in err, (args, err)
        writer = _doit(project, "-f", "dodo.py", "forget", "pass:tiny/fuse")
        time.sleep(5)  # it loads the recipes, then blocks on the lock
        assert writer.poll() is None, writer.communicate()  # still waiting for the lock
    finally:
        held.close()
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, (out, err)
    assert "another build is running in this project" in err, err

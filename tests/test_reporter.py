"""What a build prints: [done/total] per step, time per step, a summary; live on a terminal,
plain lines in logs; doit's own reporters still there for scripts."""
from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import subprocess
import sys
import time

import pytest

from buildkit import QUANTIZE, TESTS, TINY_RECIPE, build_project, copy_project, doit

# the tiny recipe without fine-tuning: every other kind of step, in a few seconds
RECIPE = TINY_RECIPE.format(extra_passes=QUANTIZE).replace(
    '[[pass]]\nname = "finetune"\ntype = "finetune"\ndata = "reviews"\nepochs = 2\nbatch_size = 8\n'
    'max_length = 16\nlearning_rate = 1e-3\n\n', "")
STEPS = ["source:tiny", "pass:tiny/export", "pass:tiny/fuse", "pass:tiny/quantize", "eval:tiny",
         "package:tiny", "optimize:tiny"]
FAILING = RECIPE + '\n[[pass]]\nname = "boom"\ntype = "test-fail-if-marker"\n'
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n: ESC, \r, ...
SUMMARY = re.compile(r"^(\d+) tasks: (\d+) run.*, (\d+) up to date, (\d+) failed(, (\d+) not run)? in \d+(\.\d)?s$", re.M)


def finished(out: str) -> dict[str, str]:
    """{task: what the reporter said when it finished} from `[k/N] task ... <what>` lines."""
    return {m.group(1): m.group(2) for m in re.finditer(r"^\[\d+/\d+\] (\S+) \.\.\. (.+)$", out, re.M)}


@pytest.fixture(scope="module")
def cold(tmp_path_factory):
    assert "finetune" not in RECIPE
    return build_project(tmp_path_factory.mktemp("reporter") / "proj", {"tiny": RECIPE}, target="optimize:tiny")


@pytest.fixture
def project(cold, tmp_path):
    return copy_project(cold[0], tmp_path)


def test_log_output_counts_times_and_sums_up(cold):
    _, run = cold
    assert not CONTROL.search(run.out), repr(CONTROL.search(run.out))
    # each step starts as "[k/N] task ..." and ends as "[k/N] task ... built in 1.2s", k = 1..N in order
    starts = re.findall(r"^\[(\d+)/(\d+)\] (\S+) \.\.\.$", run.out, re.M)
    assert [t for _, _, t in starts] == STEPS, run
    assert [int(k) for k, _, _ in starts] == list(range(1, len(STEPS) + 1))
    assert {int(n) for _, n, _ in starts} == {len(STEPS)}
    ends = finished(run.out)
    assert set(ends) == set(STEPS), run
    for task in STEPS[:-1]:
        assert re.fullmatch(r"built in \d+\.\ds", ends[task]), (task, ends[task])
    assert re.fullmatch(r"done in \d+\.\ds", ends["optimize:tiny"])  # copies a step's model
    # the inner bars of evaluation leave plain progress lines
    assert re.search(r"^    (evaluate|latency): \d+/\d+ \(\d+s\)", run.out, re.M), run
    summary = SUMMARY.findall(run.out)
    assert len(summary) == 1 and run.out.rstrip().splitlines()[-1].startswith(f"{len(STEPS)} tasks: "), run
    total, ran, uptodate, failed = map(int, summary[0][:4])
    assert (total, ran, uptodate, failed) == (len(STEPS), len(STEPS), 0, 0)
    assert f"({len(STEPS) - 1} built, 1 other)" in run.out


def test_noop_run_says_everything_is_up_to_date(project):
    run = doit(project, "optimize:tiny")
    assert run.rc == 0, run
    assert not CONTROL.search(run.out)
    assert finished(run.out) == {t: "up to date" for t in STEPS}, run
    assert run.executed == set()
    total, ran, uptodate, failed = map(int, SUMMARY.findall(run.out)[0][:4])
    assert (total, ran, uptodate, failed) == (len(STEPS), 0, len(STEPS), 0), run


def test_restored_steps_are_told_apart_from_built_ones(project):
    shutil.rmtree(project / "artifacts/tiny")
    (project / "artifacts/.doit.db").unlink()
    run = doit(project, "pass:tiny/fuse")
    assert run.rc == 0, run
    ends = finished(run.out)
    assert set(ends) == {"source:tiny", "pass:tiny/export", "pass:tiny/fuse"}, run
    assert all(re.fullmatch(r"restored in \d+\.\ds", v) for v in ends.values()), ends
    assert re.search(r"^3 tasks: 3 run \(3 restored\), 0 up to date, 0 failed in ", run.out, re.M), run


def test_json_and_console_reporters_still_work(project):
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    proc = subprocess.run([sys.executable, "-m", "doit", "--reporter", "json", "optimize:tiny"], cwd=project,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = {t["name"]: t["result"] for t in json.loads(proc.stdout)["tasks"]}
    assert result["pass:tiny/quantize"] == "success" and result["pass:tiny/export"] == "up-to-date", result
    run = doit(project, "--reporter", "console", "optimize:tiny")
    assert run.rc == 0, run
    assert "-- pass:tiny/quantize" in run.out and not SUMMARY.search(run.out), run


def test_failing_step_is_one_error_line_and_a_failed_summary(project):
    (project / "recipes/tiny.toml").write_text(FAILING)
    (project / "FAIL").write_text("x")
    run = doit(project, "optimize:tiny", env={"MODELMAKE_PLUGINS": "failing_pass"})
    assert run.rc != 0, run
    out = run.out + run.err
    errors = [ln for ln in out.splitlines() if "error" in ln.lower() or "fail" in ln.lower()]
    assert errors[0].startswith("error: pass:tiny/boom failed: RuntimeError: marker file FAIL exists"), run
    assert re.fullmatch(r"\[\d+/\d+\] pass:tiny/boom \.\.\. failed after \d+\.\ds", errors[1]), errors
    assert len([ln for ln in errors if ln.startswith("error: ")]) == 1, errors
    assert "Traceback" not in out and "TaskFailed" not in out, run
    total, ran, uptodate, failed = map(int, SUMMARY.findall(run.out)[0][:4])
    assert failed == 1 and ran == 0 and uptodate == 4, run
    assert re.search(r", 1 failed, 3 not run in ", run.out), run  # eval, package, optimize


def test_unexpected_error_keeps_its_detail():
    """A failure modelmake's actions did not report themselves (a bug, a doit error) is shown in full."""
    from doit.exceptions import TaskError
    from doit.task import Task

    from modelmake.build.console import BuildReporter

    out = io.StringIO()
    rep = BuildReporter(out, {})
    task = Task("pass:x/y", [(json.dumps, [1])])
    rep.initialize({task.name: task}, [task.name])
    rep.execute_task(task)
    try:
        raise ZeroDivisionError("the detail")
    except ZeroDivisionError as e:
        rep.add_failure(task, TaskError("PythonAction Error", e))
    rep.complete_run()
    text = out.getvalue()
    assert "ZeroDivisionError: the detail" in text and "Traceback" in text, text
    assert re.search(r"^1 task: 0 run, 0 up to date, 1 failed in ", text, re.M), text


def pty_run(project, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Run doit with a terminal as stdout and stderr; return (exit status, everything it drew)."""
    master, slave = os.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "100", "LINES": "30",
           "PYTHONPATH": os.pathsep.join([str(TESTS / "plugins"), os.environ.get("PYTHONPATH", "")])}
    env.pop("MODELMAKE_STORE", None)
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "doit", *args], cwd=project, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([master], [], [], 1)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=60), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("jobs", [[], ["-n", "2"]], ids=["live", "parallel"])
def test_terminal_run_draws_progress_and_names_the_steps(project, jobs):
    recipe = project / "recipes/tiny.toml"
    recipe.write_text(recipe.read_text().replace("per_channel = true", "per_channel = false"))
    rc, screen = pty_run(project, *jobs, "optimize:tiny")
    assert rc == 0, screen
    assert "Traceback" not in screen, screen
    for task in STEPS:
        assert task in screen, (task, screen)
    assert "\x1b[" in screen  # styled for a terminal
    # quantize, eval and package are built anew, optimize copies the model
    assert re.search(r"7 tasks: 4 run \(3 built, 1 other\), 3 up to date, 0 failed in ", screen), screen
    if not jobs:
        # a live display hides the cursor while it draws, and gives it back at the end
        assert "\x1b[?25l" in screen and screen.rindex("\x1b[?25h") > screen.rindex("\x1b[?25l"), screen
        # evaluation's inner bars were drawn inside it, each leaving its last state as a line
        assert re.search(r"    latency: \d+/\d+ \(\d+s\)", screen), screen
    else:
        # worker processes cannot draw on the parent's display: plain lines, no cursor tricks
        assert "\x1b[?25l" not in screen and "\x1b[1A" not in screen, screen
        assert re.search(r"^    latency: \d+/\d+ \(\d+s\)\r?$", screen, re.M), screen

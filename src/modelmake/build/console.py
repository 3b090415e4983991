"""The doit reporter of modelmake builds: where the build is, what each step did, how long it took.

    [3/9] pass:tiny/fuse ...
      pass:tiny/fuse: built in 2.1s (key 3f2a9c0d1b7e)         <- the step's own lines
    [3/9] pass:tiny/fuse ... built in 2.1s
    9 tasks: 5 run (1 built, 4 restored), 4 up to date, 0 failed in 3.2s

On a terminal the "..." lines become a live display below the printed lines: a spinner and the
elapsed time of each running step, the inner bars of long loops (modelmake.core.progress), and the
build's done/total. Elsewhere (CI logs, `-o file`, TERM=dumb), and with parallel workers (`-n`,
whose output the live display could not keep in order), it prints plain lines only. doit's own
reporters stay available for scripts: `--reporter json`, `--reporter console`.
"""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator

from doit.exceptions import TaskFailed, UnmetDependency

from modelmake.core import progress

STYLES = {"built": "green", "restored": "cyan", "done": "", "up to date": "dim", "failed": "bold red",
          "not run": "yellow", "ignored": "yellow", "trial failed": "yellow"}


def counted(task) -> bool:
    """Steps are tasks with actions; groups (optimize, pass, ...) only collect other tasks."""
    return bool(task.actions) and not task.name.startswith("_")


def selected_build(tasks: dict, selected: list[str]) -> list[str]:
    """The steps a run of `selected` may execute: those tasks and everything they depend on
    (doit has already added the implicit task_dep of each file_dep made by another task)."""
    seen: set[str] = set()
    todo = list(selected)
    while todo:
        name = todo.pop()
        if name in seen or name not in tasks:
            continue
        seen.add(name)
        todo.extend(tasks[name].task_dep)
    return sorted(n for n in seen if counted(tasks[n]))


def seconds_text(s: float) -> str:
    return f"{s:.1f}s" if s < 60 else f"{int(s // 60)}m{int(s % 60):02d}s"


def _has_workers() -> bool:
    mp = sys.modules.get("multiprocessing")
    return bool(mp and mp.active_children())


class BuildReporter:
    desc = "modelmake: [done/total], time per step and a summary; live progress on a terminal"

    def __init__(self, outstream, options):
        self.outstream = outstream
        self.failure_verbosity = options.get("failure_verbosity", 0)
        self.t0 = time.monotonic()
        self.total = 0
        self.order: dict[str, int] = {}      # step -> its number in this build
        self.started: dict[str, float] = {}
        self.counts = dict.fromkeys(("built", "restored", "done", "up to date", "failed", "not run",
                                     "ignored", "trial failed"), 0)
        self.runtime_errors: list[str] = []
        self.console = None                  # a rich Console when writing to a terminal
        self.live = None                     # the live display, once a step runs
        self._live_tried = False
        if progress.interactive(outstream):
            from rich.console import Console

            self.console = Console(file=outstream, highlight=False, soft_wrap=True)
        else:
            try:  # a CI log shows each line as soon as it is written
                outstream.reconfigure(line_buffering=True)
            except (AttributeError, ValueError, OSError):
                pass

    # ------------------------------------------------------------ output
    def _line(self, text: str, style: str = "") -> None:
        if self.console is not None:
            from rich.text import Text

            self.console.print(Text(text, style=style))  # with a live display: above it
        else:
            self.outstream.write(text + "\n")
            self.outstream.flush()

    def _number(self, task) -> str:
        n = self.order.setdefault(task.name, len(self.order) + 1)
        self.total = max(self.total, n)
        return f"[{n}/{self.total}]"

    def _finish(self, task, outcome: str, detail: str = "") -> None:
        self.counts[outcome] += 1
        if self.live is not None:
            row = self._rows.pop(task.name, None)
            if row is not None:
                self._steps.remove_task(row)
            self._update_overall()
        self._line(f"{self._number(task)} {task.name} ... {outcome}{detail}", STYLES[outcome])

    def _elapsed(self, task) -> float:
        return time.monotonic() - self.started.get(task.name, time.monotonic())

    # ------------------------------------------------------------ live display (terminal only)
    def _start_live(self) -> None:
        """Start the live display before the first step runs, unless doit runs steps in worker
        processes: their output goes straight to the terminal, past any live display."""
        self._live_tried = True
        if self.console is None or _has_workers():
            return
        from rich.console import Group
        from rich.live import Live
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self._rows: dict[str, int] = {}
        self._steps = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                               console=self.console)
        self._bars = Progress(*progress.bar_columns(), console=self.console)
        self._overall = Progress(TextColumn("  build"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=self.console)
        self._overall_row = self._overall.add_task("build", total=self.total, info="")
        self._update_overall()
        # stdout/stderr of steps are printed above the display; a stderr that is not this
        # terminal (2>file) is left alone
        self.live = Live(Group(self._steps, self._bars, self._overall), console=self.console,
                         refresh_per_second=8, transient=True, redirect_stdout=True,
                         redirect_stderr=progress.interactive(sys.stderr))
        self.live.start()
        progress.set_host(self._nested_bar)

    def _update_overall(self) -> None:
        c = self.counts
        done = sum(c.values())
        info = f"{c['up to date']} up to date" + (f", {c['failed']} failed" if c["failed"] else "")
        self._overall.update(self._overall_row, total=self.total, completed=done, info=info)

    @contextmanager
    def _nested_bar(self, desc: str, total: int) -> Iterator[progress.Bar]:
        row = self._bars.add_task(desc, total=total, info="")
        t0 = time.monotonic()
        try:
            yield progress.RichBar(self._bars, row)
        finally:
            task = next(t for t in self._bars.tasks if t.id == row)
            info = task.fields.get("info", "")
            self._bars.remove_task(row)
            # the bar disappears; its last state stays in the scrollback, as in a CI log
            self._line(progress.summary(desc, int(task.completed), total, time.monotonic() - t0,
                                        f" {info}" if info else ""), "dim")

    def _stop_live(self) -> None:
        if self.live is not None:
            progress.set_host(None)
            live, self.live = self.live, None
            live.stop()

    # ------------------------------------------------------------ doit's reporter API
    def initialize(self, tasks, selected_tasks):
        self.total = len(selected_build(tasks, selected_tasks))

    def get_status(self, task):
        pass

    def execute_task(self, task):
        if not counted(task):
            return
        if not self._live_tried:
            self._start_live()
        self.started[task.name] = time.monotonic()
        number = self._number(task)
        if self.live is not None:
            self._rows[task.name] = self._steps.add_task(f"{number} {task.name}")
            self._update_overall()
        else:
            self._line(f"{number} {task.name} ...")

    def add_success(self, task):
        if not counted(task):
            return
        outcome = (task.values or {}).get("outcome", "done")  # set by modelmake.build.runner
        self._finish(task, outcome if outcome in ("built", "restored", "trial failed") else "done",
                     f" in {seconds_text(self._elapsed(task))}")

    def add_failure(self, task, fail):
        if isinstance(fail, UnmetDependency):
            if counted(task):
                self._finish(task, "not run", f" (it needs {fail.message}, which did not succeed)")
            return
        if counted(task):
            self._finish(task, "failed", f" after {seconds_text(self._elapsed(task))}")
            if task.executed and task.verbosity < 2:  # `-v 0|1` held the step's lines back: show them now
                held = "".join(a.out or "" for a in task.actions)
                held += "".join(a.err or "" for a in task.actions) if task.verbosity < 1 else ""
                if held.strip():
                    self._line(held.rstrip())
        # modelmake's actions print their own one-line `error: <task> failed: ...` and keep the
        # traceback in a log file; anything else (a bug, a doit error) is shown in full
        told = isinstance(fail, TaskFailed) and fail.message.startswith(f"{task.name} failed: ")
        if fail.report and (not told or self.failure_verbosity):
            self._line(f"{fail.get_name()} - taskid:{task.name}\n{fail.get_msg().rstrip()}", STYLES["failed"])

    def skip_uptodate(self, task):
        if counted(task):
            self._finish(task, "up to date")

    def skip_ignore(self, task):
        if counted(task):
            self._finish(task, "ignored")

    def cleanup_error(self, exception):
        sys.stderr.write(exception.get_msg())

    def runtime_error(self, msg):
        self.runtime_errors.append(msg)

    def teardown_task(self, task):
        pass

    def complete_run(self):
        try:
            self._stop_live()
        finally:
            self._close()

    def _close(self) -> None:
        for msg in self.runtime_errors:
            self._line(f"error: {msg.strip()}", STYLES["failed"])
        self._line(self.summary(), STYLES["failed"] if self.counts["failed"] or self.runtime_errors else "bold")

    def summary(self) -> str:
        c = self.counts
        ran = c["built"] + c["restored"] + c["done"] + c["trial failed"]
        # "other": steps that use no store result, like optimize:<recipe> copying the final model
        how = ", ".join(f"{n} {k}" for k, n in (("built", c["built"]), ("restored", c["restored"]),
                                                ("other", c["done"]), ("of failed trials", c["trial failed"])) if n)
        parts = [f"{ran} run" + (f" ({how})" if how else ""), f"{c['up to date']} up to date",
                 f"{c['failed']} failed"]
        not_run = self.total - ran - c["up to date"] - c["failed"] - c["ignored"]
        if not_run:
            parts.append(f"{not_run} not run")
        if c["ignored"]:
            parts.append(f"{c['ignored']} ignored")
        tasks = "task" if self.total == 1 else "tasks"
        return f"{self.total} {tasks}: {', '.join(parts)} in {seconds_text(time.monotonic() - self.t0)}"


def _unhook_streams_in_child() -> None:
    """A process forked while the live display runs (a step using multiprocessing) inherits
    sys.stdout/stderr that redraw the parent's display; give it the plain streams back."""
    proxy = getattr(sys.modules.get("rich.file_proxy"), "FileProxy", None)
    if proxy is None:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, proxy):
            setattr(sys, name, stream.rich_proxied_file)
        elif isinstance(getattr(stream, "writers", None), list):  # doit's capturing Writer
            stream.writers = [w.rich_proxied_file if isinstance(w, proxy) else w for w in stream.writers]
            if isinstance(getattr(stream, "orig_stream", None), proxy):
                stream.orig_stream = stream.orig_stream.rich_proxied_file


os.register_at_fork(after_in_child=_unhook_streams_in_child)

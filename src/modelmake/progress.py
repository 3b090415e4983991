"""Progress for long loops: a rich bar on a terminal, plain periodic lines in logs (CI)."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Iterator


def say(line: str) -> None:
    """One whole line in one write, so parallel workers (doit -n) never interleave mid-line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class _Plain:
    """Prints `desc: done/total` at most every ~10 % so CI logs stay short and readable."""

    def __init__(self, desc: str, total: int):
        self.desc, self.total, self.done = desc, max(total, 1), 0
        self._next, self._t0 = 0.0, time.monotonic()

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n
        frac = self.done / self.total
        if frac >= self._next or self.done >= self.total:
            extra = "".join(f" {k}={v}" for k, v in info.items())
            elapsed = time.monotonic() - self._t0
            say(f"    {self.desc}: {self.done}/{self.total} ({elapsed:.0f}s){extra}")
            self._next = frac + 0.1


class _Rich:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1, **info: object) -> None:
        extra = " ".join(f"{k}={v}" for k, v in info.items())
        self._progress.update(self._task, advance=n, info=extra)


@contextmanager
def bar(desc: str, total: int) -> Iterator[_Plain | _Rich]:
    """`with bar("fine-tune", steps) as b: ... b.advance(loss=0.3)`"""
    stream = sys.stderr
    if not stream.isatty():
        yield _Plain(desc, total)
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    columns = (TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
    with Progress(*columns, transient=False) as progress:
        yield _Rich(progress, progress.add_task(desc, total=total, info=""))

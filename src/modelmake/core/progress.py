"""Progress for long loops: a rich bar on a terminal, plain periodic lines in logs (CI).

When the build reporter (modelmake.build.console) shows a live display, it registers itself here and
bars nest into that display instead of starting a second one that would fight it for the screen.
"""
from __future__ import annotations

import io
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator, Protocol

_thread = threading.local()   # .sink: where this thread's lines also go (a Dask worker's step)


def say(line: str) -> None:
    """One whole line in one write, so parallel workers (doit -n) never interleave mid-line."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    sink = getattr(_thread, "sink", None)
    if sink is not None:
        sink(line)


@contextmanager
def forwarded(sink: Callable[[str], None]) -> Iterator[None]:
    """Every line said in this thread meanwhile also goes to `sink` (a worker's step sends its
    progress lines to the client this way)."""
    before = getattr(_thread, "sink", None)
    _thread.sink = sink
    try:
        yield
    finally:
        _thread.sink = before


def interactive(stream) -> bool:
    """A terminal that can redraw in place (TERM=dumb cannot; NO_COLOR only drops colours)."""
    try:
        return stream.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):  # a closed or fake stream
        return False


class Bar(Protocol):
    def advance(self, n: int = 1, **info: object) -> None: ...


# The live display of this process, if any: (pid, factory). The pid matters because a forked
# worker (doit -n) inherits this module's state but must not draw on its parent's display.
_host: tuple[int, Callable[[str, int], ContextManager[Bar]]] | None = None


def set_host(factory: Callable[[str, int], ContextManager[Bar]] | None) -> None:
    """Register (or, with None, remove) the live display that bars should nest into."""
    global _host
    _host = (os.getpid(), factory) if factory else None


def _live_host() -> Callable[[str, int], ContextManager[Bar]] | None:
    return _host[1] if _host and _host[0] == os.getpid() else None


def _in_worker() -> bool:
    """True in a multiprocessing child, e.g. a doit -n worker: many of them share one terminal."""
    mp = sys.modules.get("multiprocessing")
    return mp is not None and mp.parent_process() is not None


def summary(desc: str, done: int, total: int, seconds: float, info: str = "") -> str:
    return f"    {desc}: {done}/{total} ({seconds:.0f}s){info}"


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
            say(summary(self.desc, self.done, self.total, time.monotonic() - self._t0, extra))
            self._next = frac + 0.1


class RichBar:
    def __init__(self, progress, task_id):
        self._progress, self._task = progress, task_id

    def advance(self, n: int = 1, **info: object) -> None:
        extra = " ".join(f"{k}={v}" for k, v in info.items())
        self._progress.update(self._task, advance=n, info=extra)


def bar_columns() -> tuple:
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return (TextColumn("    {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"))


@contextmanager
def bar(desc: str, total: int) -> Iterator[Bar]:
    """`with bar("fine-tune", steps) as b: ... b.advance(loss=0.3)`"""
    host = _live_host()
    if host is not None:
        with host(desc, total) as b:
            yield b
        return
    stream = sys.stderr
    if _in_worker() or not interactive(stream):
        yield _Plain(desc, total)
        return
    from rich.console import Console
    from rich.progress import Progress

    # drawn on stderr, so a piped stdout never receives control characters; stdout lines are
    # moved above the bar only when they would land on the same terminal
    with Progress(*bar_columns(), console=Console(file=stream), transient=False,
                  redirect_stdout=interactive(sys.stdout)) as progress:
        yield RichBar(progress, progress.add_task(desc, total=total, info=""))


@contextmanager
def library_output_held() -> Iterator[io.StringIO]:
    """What libraries print (tqdm bars per tensor, per-layer chatter of a converter or builder)
    held in a buffer instead of flooding the build's output; the step shows its tail when the
    library fails. tqdm picks sys.stderr when a bar is created, so swapping the streams is enough
    (its TQDM_DISABLE variable is read once, at import)."""
    import contextlib

    held = io.StringIO()
    with contextlib.redirect_stdout(held), contextlib.redirect_stderr(held):
        yield held


def library_failure(e: BaseException, held: io.StringIO, lines: int = 3) -> str:
    """A library's exception as one line: its message's first line and the last lines it printed
    into `held` (bars' carriage returns split)."""
    text = str(e).strip()
    first = text.splitlines()[0][:300] if text else e.__class__.__name__
    said = [ln.strip() for ln in held.getvalue().replace("\r", "\n").splitlines() if ln.strip()][-lines:]
    return first + (f" (last output: {' | '.join(said)})" if said else "")

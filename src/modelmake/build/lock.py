"""A build session in one project folder: one writer at a time, and clean interrupts.

- A second `doit` that would write in the same project waits for the first, with a message,
  instead of racing it on targets and on doit's DB (which doit writes once, at the end of a run).
- SIGTERM is turned into the same interrupt as Ctrl-C. doit then writes its DB for the tasks that
  finished (its runner closes the DB in a `finally`), the running step's temp files are removed by
  their own `finally` blocks, and the process ends with one line and status 128+signal instead of
  a traceback.
"""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import sys
from pathlib import Path
from typing import IO

# doit commands that only read; everything else (run, clean, forget, ignore, reset-dep...) writes
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion", "strace"}
DOIT_COMMANDS = READ_ONLY_COMMANDS | {"run", "clean", "forget", "ignore", "reset-dep", "auto"}


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def doit_command(argv: list[str]) -> str:
    """The doit command an argument list runs ("run" when it names tasks or nothing)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in DOIT_COMMANDS else "run"
    return "run"


def is_cli(argv0: str) -> bool:
    """True when this process is the doit/modelmake command itself (not a test importing dodo)."""
    name = Path(argv0).name
    return name in ("doit", "modelmake") or argv0.endswith(os.path.join("doit", "__main__.py"))


def acquire_project_lock(artifacts: Path) -> IO:
    """Hold artifacts/.lock for the life of this process; wait (and say so) if another holds it."""
    artifacts.mkdir(parents=True, exist_ok=True)
    fh = open(artifacts / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        fh.seek(0)
        holder = fh.read().strip() or "?"
        print(f"modelmake: another build is running in this project (pid {holder}); waiting for it to finish",
              file=sys.stderr, flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh


def _raise_interrupt(signum, frame):
    raise Interrupted(signum)


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"modelmake: interrupted ({signal.Signals(signum).name}); finished steps are recorded, "
              "the interrupted step left nothing behind; run again to continue", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)
    _previous(exc_type, exc, tb)


def install_interrupt_handling() -> None:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.excepthook = _excepthook

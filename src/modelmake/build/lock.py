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

# doit commands that only read; everything else (run, clean, forget, ignore, reset-dep, strace,
# auto...) writes: strace runs a task's actions
READ_ONLY_COMMANDS = {"list", "info", "help", "dumpdb", "tabcompletion"}
DOIT_COMMANDS = READ_ONLY_COMMANDS | {"run", "clean", "forget", "ignore", "reset-dep", "auto", "strace"}


class Interrupted(KeyboardInterrupt):
    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def doit_command(argv: list[str]) -> str:
    """The doit command an argument list runs, decided the way doit's DoitMain.run decides it:
    task-loader options (-f FILE, -d DIR, -k) may come first, `name=value` arguments are
    variables, and the next argument is the command when it names one, else the command is run."""
    from doit.cmd_base import DodoTaskLoader
    from doit.cmdparse import CmdOption, CmdParse, CmdParseError

    try:
        _, rest = CmdParse([CmdOption(o) for o in DodoTaskLoader.cmd_options]).parse_only(list(argv))
    except CmdParseError:  # as in doit: options of the run command, so this is a run
        rest = list(argv)
    args = [a for a in rest if a.startswith("-") or "=" not in a]
    return args[0] if args and args[0] in DOIT_COMMANDS else "run"


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

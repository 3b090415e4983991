"""A step computed on a Dask cluster: connect, submit, wait, and say what went wrong in one line.

Only the client side lives here (`dask.distributed` is imported inside these functions, only when
an executor is configured). What is submitted is a plain function and the step's typed spec, not
a closure: the worker imports modelmake itself. A worker that refuses a step (its modelmake or a
keyed library differs from the client's) is left out and the step is submitted to the others; a
worker that dies while computing is replaced by Dask (the scheduler reschedules the task, up to
its `allowed-failures`); Ctrl-C cancels the future on the cluster.
"""
from __future__ import annotations

import os
import uuid
from typing import Any, Callable

CONNECT_TIMEOUT_S = 10   # $MODELMAKE_EXECUTOR_TIMEOUT overrides it
_clients: dict[str, Any] = {}
_unreachable: dict[str, str] = {}   # address -> why: asked once per process, not once per step


class SchedulerUnreachable(Exception):
    plain = True


class WorkerMismatch(Exception):
    """Raised on a worker whose versions differ from the client's: the step is not run there."""

    plain = True

    def __init__(self, worker: str, message: str):
        super().__init__(message)
        self.worker, self.message = worker, message

    def __reduce__(self):   # so that it crosses the wire with its worker
        return (WorkerMismatch, (self.worker, self.message))


class ClusterFailed(Exception):
    plain = True


def client(address: str):
    """A connected client of the scheduler at address (one per process)."""
    from distributed import Client

    c = _clients.get(address)
    if c is not None and c.status == "running":
        return c
    if address in _unreachable:
        raise SchedulerUnreachable(_unreachable[address])
    try:
        c = Client(address, timeout=_timeout(), set_as_default=False)
    except (OSError, TimeoutError) as e:
        _unreachable[address] = f"Dask scheduler {address} is unreachable ({_reason(e)})"
        raise SchedulerUnreachable(_unreachable[address]) from None
    _clients[address] = c
    return c


def _timeout() -> float:
    try:
        return max(0.5, float(os.environ.get("MODELMAKE_EXECUTOR_TIMEOUT", CONNECT_TIMEOUT_S)))
    except ValueError:
        return CONNECT_TIMEOUT_S


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
    return text[:160]


_following: set[tuple[str, str]] = set()


def follow(address: str, topic: str, handler: Callable[[Any], None]) -> None:
    """Call handler((time, message)) for every event workers log under topic (once per process)."""
    if (address, topic) not in _following:
        client(address).subscribe_topic(topic, handler)
        _following.add((address, topic))


POLL_S = 0.5


def _wait(c, future, label: str) -> Any:
    """The future's result; says once on which worker it runs (the live view shows that line
    above the task's row), or, for a step done before the first poll, on which it ran."""
    from modelmake.core.progress import say

    shown = False
    while True:
        try:
            result = future.result(timeout=POLL_S)
        except TimeoutError:   # an OSError: caught before the caller's handler of a lost scheduler
            if not shown:
                where = next((w for w, keys in c.processing().items() if future.key in keys), None)
                if where is not None:
                    say(f"  {label}: running on {where}")
                    shown = True
            continue
        if not shown:   # done before a poll saw it running: the worker holding the result computed it
            where = (c.who_has([future]).get(future.key) or [None])[0]
            if where is not None:
                say(f"  {label}: ran on {where}")
        return result


def run(address: str, fn: Callable, *args: Any, resources: dict[str, float] | None, label: str) -> Any:
    """fn(*args) computed on a worker of the cluster; its exception is raised here as it was there."""
    from distributed.scheduler import KilledWorker

    c = client(address)
    refused: dict[str, str] = {}
    while True:
        workers = None
        if refused:
            workers = [w for w in c.scheduler_info()["workers"] if w not in refused]
            if not workers:
                raise ClusterFailed(f"no worker can compute it: {'; '.join(refused.values())}")
        future = c.submit(fn, *args, key=f"{label.replace('/', '-')}-{uuid.uuid4().hex[:8]}", pure=False, resources=resources,
                          workers=workers, allow_other_workers=False)
        try:
            return _wait(c, future, label)
        except WorkerMismatch as e:
            refused[e.worker] = e.message
        except KilledWorker as e:
            raise ClusterFailed(f"the workers computing it died too often ({_reason(e)})") from None
        except (KeyboardInterrupt, SystemExit):
            future.cancel()
            raise
        except OSError as e:   # the scheduler went away while we waited
            if c.status != "running":
                raise SchedulerUnreachable(f"lost the Dask scheduler {address} ({_reason(e)})") from None
            raise

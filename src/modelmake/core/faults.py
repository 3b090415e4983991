"""Test seam for crash-safety trials (docs/reliability.md): named points where a test can have
this process killed with SIGKILL, to prove that no kill leaves a half-written result behind."""
from __future__ import annotations

import os
import signal
import sys

_kill_hits: dict[str, int] = {}  # test seam state: how often each kill point was reached


def kill_point(name: str) -> None:
    """Test seam for crash-safety trials: SIGKILL this process when it reaches a named point
    listed in $MODELMAKE_TEST_KILL_AT, e.g. "publish" (first time) or "publish#3" (third time).
    Costs one environment lookup otherwise."""
    points = os.environ.get("MODELMAKE_TEST_KILL_AT")
    if not points:
        return
    _kill_hits[name] = _kill_hits.get(name, 0) + 1
    for point in points.split(","):
        want, _, nth = point.partition("#")
        if want == name and _kill_hits[name] == int(nth or 1):
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

"""Peak memory of one ONNX Runtime session, measured in a process of its own (Linux).

evaluate.measure_memory runs `python -m modelmake.metrics.memprobe` with a JSON request on stdin and reads
one JSON line from stdout: {"memory_mb": peak RSS increase}. A fresh process is the only place
where the number means one thing: in the build process, other sessions, arenas and freed
allocations would be counted or hidden.

Method: import everything and tokenize the batch first, then take the resident set size (VmRSS)
as the reference, reset the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs), create
the session and run the batch; the peak (VmHWM) minus the reference is the session's cost:
weights, graph optimization copies, the arena and thread stacks as far as they were touched.
"""
from __future__ import annotations

import gc
import json
import sys


def _status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError as e:
        raise RuntimeError(f"cannot reset the peak RSS counter (/proc/self/clear_refs: {e.strerror}); "
                           "the memory metric needs Linux 4.0 or later") from None


def main() -> int:
    request = json.loads(sys.stdin.read())
    import onnxruntime  # noqa: F401 - loaded before the reference point, like everything below

    from modelmake.runtime import batches, sessions, timing

    from modelmake.core.textenc import as_pairs

    rows = as_pairs(request["rows"])   # pairs of texts travel as JSON lists
    encoded = batches.fixed(request["tokenizer"], rows, len(rows), request["sequence"])
    gc.collect()
    before_kb = _status_kb("VmRSS")
    _reset_peak()
    session = sessions.session(request["model"], request["threads"], request["settings"])
    timing.warm(session, sessions.feeds(session, encoded), request["runs"])
    peak_kb = _status_kb("VmHWM")
    print(json.dumps({"memory_mb": max(peak_kb - before_kb, 0) * 1024 / 1e6}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - the parent shows our last stderr line
        print(f"{e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(1)

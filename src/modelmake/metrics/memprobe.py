"""Peak memory of one ONNX Runtime session or one onnxruntime-genai model, measured in a process
of its own (Linux).

evaluate.measure_memory and textgen.measure_generation_memory run `python -m
modelmake.metrics.memprobe` with a JSON request on stdin (`probe` below) and read one JSON line
from stdout: {"memory_mb": peak RSS increase}. A fresh process is the only place where the
number means one thing: in the build process, other sessions, arenas and freed allocations would
be counted or hidden.

Method: import everything and tokenize first, then take the resident set size (VmRSS) as the
reference, reset the kernel's peak-RSS counter (writing 5 to /proc/self/clear_refs), do the work
and read the peak (VmHWM); the peak minus the reference is the work's cost. A request's "kind"
says what the work is:
- "session" (the default): create the session and run the batch `runs` times: weights, graph
  optimization copies, the arena and thread stacks as far as they were touched;
- "generation": load a decoder folder with onnxruntime-genai and generate `new_tokens` tokens
  after the prompt once: the same, plus the key/value cache, which onnxruntime-genai allocates
  for the whole length (prompt + new tokens) up front.
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


def probe(request: dict, what: str) -> dict:
    """Run the probe on `request` in a fresh interpreter and return its answer; `what` names the
    model in the error when it fails."""
    import subprocess

    # -P: the project folder (the working directory) stays off sys.path, so a module of the
    # user's named like a library cannot stand in for it
    proc = subprocess.run([sys.executable, "-P", "-m", "modelmake.metrics.memprobe"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise RuntimeError(f"memory probe of {what} failed: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _peak_mb(before_kb: int) -> float:
    return max(_status_kb("VmHWM") - before_kb, 0) * 1024 / 1e6


def _generation(request: dict) -> dict:
    import numpy  # noqa: F401 - loaded before the reference point, like everything below
    import onnxruntime_genai  # noqa: F401

    from modelmake.runtime import decoder

    prompt = [int(i) for i in request["prompt"]]
    gc.collect()
    before_kb = _status_kb("VmRSS")
    _reset_peak()
    model = decoder.load(request["folder"], request["threads"])
    decoder.timed_run(model, prompt, request["new_tokens"])
    return {"memory_mb": _peak_mb(before_kb)}


def main() -> int:
    request = json.loads(sys.stdin.read())
    kind = request.get("kind", "session")
    if kind == "generation":
        print(json.dumps(_generation(request)))
        return 0
    if kind != "session":
        raise ValueError(f"unknown request kind {kind!r} (session, generation)")
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
    print(json.dumps({"memory_mb": _peak_mb(before_kb)}))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - the parent shows our last stderr line
        print(f"{e.__class__.__name__}: {e}", file=sys.stderr)
        sys.exit(1)

"""Which kinds of host measured an evaluation's inputs: a note in the remote beside the results.

An evaluation's key holds this host's fingerprint (its latency, throughput and memory belong to
the host that measured them), so a result measured on another kind of host cannot be found by its
key. A build that computes an evaluation with a writable remote also notes its host under a name
made of everything else in the key; `modelmake why` reads the note to say that the remote holds
the same inputs measured elsewhere, and on which host. Notes only inform: no result depends on
them, and when two builders write one at once the last one wins.
"""
from __future__ import annotations

from modelmake.build.steps import EvalStep
from modelmake.core import digest
from modelmake.store import Store

MAX_HOSTS = 16  # a note names the latest kinds of host; older ones fall off


def note_name(step: EvalStep, inputs: dict[str, str]) -> str:
    """The note of the evaluation `step` on inputs (role -> content digest), for every host."""
    settings = {k: v for k, v in step.settings().items() if k != "host"}
    return "eval-hosts/" + digest.key_of({"kind": "eval", **settings, **inputs})


def host_id(host: dict) -> str:
    return digest.key_of(host)[:16]


def describe(host: dict) -> str:
    """A host fingerprint in one phrase: `Intel(R) Xeon(R) Processor, 2 cores, x86_64, CPU flags
    7d927dc1759f8fc8, onnxruntime 1.32.0`."""
    parts = [str(host.get("cpu", "unknown CPU"))]
    if host.get("cores"):
        parts.append(f"{host['cores']} cores")
    parts += [str(host[k]) for k in ("machine",) if host.get(k)]
    if host.get("cpu_flags"):
        parts.append(f"CPU flags {host['cpu_flags']}")
    if host.get("onnxruntime"):
        parts.append(f"onnxruntime {host['onnxruntime']}")
    return ", ".join(parts)


def note_host(store: Store, step: EvalStep, inputs: dict[str, str]) -> None:
    """Add this step's host to the remote's note of its inputs (nothing when it cannot be written)."""
    if store.remote is None or not store.remote.writable:
        return
    name = note_name(step, inputs)
    hosts = _hosts(store.note(name))
    hosts.pop(host_id(step.host), None)
    hosts[host_id(step.host)] = step.host  # the latest last
    kept = dict(list(hosts.items())[-MAX_HOSTS:])
    store.write_note(name, {"hosts": kept})


def other_hosts(store: Store, step: EvalStep, inputs: dict[str, str]) -> list[dict]:
    """The kinds of host other than this step's that the remote's note names for these inputs."""
    if store.remote is None:
        return []
    mine = host_id(step.host)
    return [h for i, h in _hosts(store.note(note_name(step, inputs))).items() if i != mine]


def _hosts(note: dict | None) -> dict[str, dict]:
    hosts = (note or {}).get("hosts")
    return {i: h for i, h in hosts.items() if isinstance(h, dict)} if isinstance(hosts, dict) else {}

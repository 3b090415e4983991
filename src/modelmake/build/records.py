"""Per-task build records: what each task last produced, from what, and how long it took.

A record is written (atomically) every time a task's action succeeds, to
artifacts/<recipe>/records/<task>.json. It holds the store key of the task's result and every
key the task used (what `modelmake store gc` keeps), the settings and input digests that made
the key (what `modelmake why` compares against), and build times and host (what reports show).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

from modelmake.build import targets
from modelmake.build.steps import Step
from modelmake.core.files import atomic_file

FOLDER = "records"


def path_of(step: Step) -> Path:
    """Where `step` records its last successful run."""
    return Path(step.base) / FOLDER / (file_stem(step.task) + ".json")


def file_stem(task: str) -> str:
    return task.replace(":", "-").replace("/", "-")


def write(step: Step, record: dict) -> None:
    record = {**record, "task": step.task,
              "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    atomic_file(path_of(step), lambda tmp: tmp.write_bytes(
        json.dumps(record, indent=1, sort_keys=True).encode() + b"\n"))


def placed(step: Step, out: str, key: str, root: Path = Path(".")) -> bool:
    """The target `out` is as placed (build/targets.py), and the step's last record says it came from key."""
    record = read(step, root)
    if not record or (record.get("key") != key and key not in (record.get("keys") or [])):
        return False
    path = Path(root) / out
    return path.exists() and targets.problem(path) is None


def read(step: Step, root: Path = Path(".")) -> dict | None:
    """The step's last record, or None when it never ran here (or the record is unreadable)."""
    try:
        data = json.loads((Path(root) / path_of(step)).read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None

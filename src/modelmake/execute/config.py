"""Where steps that must be computed run: here (default) or on a Dask cluster.

$MODELMAKE_EXECUTOR (or [tool.modelmake] executor) names a Dask scheduler, `tcp://host:8786`;
`executor_fallback = "local"` (or $MODELMAKE_EXECUTOR_FALLBACK=local) builds here, with a warning,
when the scheduler cannot be reached. `[tool.modelmake.placement]` maps a pass type to the Dask
worker resources its steps need, e.g. `finetune = { resources = { GPU = 1 } }`.
Plain data, no Dask import: loading tasks reads it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

FALLBACKS = ("fail", "local")
ADDRESS_RE = re.compile(r"^(tcp|tls|inproc|ws|wss)://[^\s/]+\Z")


class ExecutorConfigError(Exception):
    def __init__(self, where: str, key: str, message: str):
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.where, self.key, self.message = where, key, message


@dataclass(frozen=True)
class ExecutorConfig:
    address: str                               # the Dask scheduler
    fallback: str = "fail"                     # "local": build here when the scheduler is down
    placement: dict[str, dict[str, float]] = field(default_factory=dict)   # pass type -> worker resources

    def resources(self, pass_type: str) -> dict[str, float] | None:
        return self.placement.get(pass_type) or None


def configured(env: Mapping[str, str], section: Mapping[str, Any]) -> ExecutorConfig | None:
    """The executor of a project, or None (build here). Raises ExecutorConfigError naming the setting."""
    address = env.get("MODELMAKE_EXECUTOR")
    where, key = ("MODELMAKE_EXECUTOR", "") if address is not None else ("pyproject.toml", "tool.modelmake.executor")
    if address is None:
        address = section.get("executor")
    if address is None or (where == "MODELMAKE_EXECUTOR" and not address.strip()):
        return None
    if not isinstance(address, str) or not ADDRESS_RE.match(address.strip()):
        raise ExecutorConfigError(where, key, f"expected a Dask scheduler address such as tcp://host:8786, got {address!r}"[:200])
    fallback = env.get("MODELMAKE_EXECUTOR_FALLBACK")
    fwhere, fkey = ("MODELMAKE_EXECUTOR_FALLBACK", "") if fallback is not None else \
        ("pyproject.toml", "tool.modelmake.executor_fallback")
    if fallback is None:
        fallback = section.get("executor_fallback", "fail")
    if fallback not in FALLBACKS:
        raise ExecutorConfigError(fwhere, fkey, f"expected 'fail' or 'local', got {fallback!r}"[:200])
    return ExecutorConfig(address.strip(), fallback, _placement(section.get("placement", {})))


def _placement(raw: Any) -> dict[str, dict[str, float]]:
    key = "tool.modelmake.placement"
    if not isinstance(raw, dict):
        raise ExecutorConfigError("pyproject.toml", key, "expected a table of pass types")
    out = {}
    for pass_type, spec in raw.items():
        where = f"{key}.{pass_type}"
        if not isinstance(spec, dict) or set(spec) != {"resources"} or not isinstance(spec["resources"], dict):
            raise ExecutorConfigError("pyproject.toml", where, "expected { resources = { NAME = amount, ... } }")
        resources = {}
        for name, amount in spec["resources"].items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount <= 0:
                raise ExecutorConfigError("pyproject.toml", f"{where}.resources.{name}",
                                          f"expected a positive number, got {amount!r}"[:200])
            resources[name] = float(amount)
        out[pass_type] = resources
    return out

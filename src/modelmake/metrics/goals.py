"""Goals on metrics: a threshold, or a limit on the change against the baseline.

recipe.py validates `[[evaluate.goal]]` tables with KINDS; runner checks measured metrics with
`check` and puts the verdict into metrics.json under "goals". Pure functions of plain data.

"Drop" and "improvement" follow the metric's direction: for accuracy (higher is better) a drop is
a lower value, for latency (lower is better) a higher one. A speed-up is baseline / model for a
time and model / baseline for a rate, so it is above 1 when the model is faster.
"""
from __future__ import annotations

from modelmake.metrics.catalogue import FAMILIES, TIMED

# goal key -> (compares with the baseline?, what its number measures, smallest allowed target)
KINDS: dict[str, tuple[bool, str, float | None]] = {
    "at_least": (False, "value", None),
    "at_most": (False, "value", None),
    "max_drop": (True, "drop", 0.0),
    "max_drop_percent": (True, "drop", 0.0),
    "min_improvement": (True, "improvement", 0.0),
    "min_improvement_percent": (True, "improvement", 0.0),
    "min_speedup": (True, "speed-up", 0.0),
}
ON_FAILURE = ("fail", "warn")
_EPS = 1e-9  # relative slack so that 0.81 - 0.80 counts as a drop of 0.01, not 0.010000000000000009


class GoalsFailed(Exception):
    """Goals were not met: the message is the verdict, printed as it is (no class name, no traceback)."""

    plain = True


def builtin_direction(metric: str) -> bool | None:
    """True when higher is better, False when lower is, None for a metric modelmake does not make."""
    for produced in FAMILIES.values():
        if metric in produced:
            return produced[metric]
    return None


def family_of(metric: str) -> str | None:
    """The `[evaluate] metrics` entry that measures a built-in metric."""
    return next((f for f, produced in FAMILIES.items() if metric in produced), None)


def direction(metric: str, custom: list[dict]) -> bool | None:
    """Direction of a built-in metric, or of a custom one (`name` or `name.key` of a dict result)."""
    found = builtin_direction(metric)
    if found is not None:
        return found
    for c in custom:
        if metric == c["name"] or metric.startswith(c["name"] + "."):
            return c["higher_is_better"]
    return None


def speedup_allowed(metric: str) -> bool:
    return metric in TIMED


def check(goals: list[dict], metrics: dict, custom: list[dict]) -> dict:
    """{"passed": every goal met, "results": one entry per goal}. Raises GoalsFailed when a goal's
    metric is missing from `metrics` (a custom metric's dict did not have that key)."""
    results = []
    for g in goals:
        metric, kind, target = g["metric"], g["goal"], g["target"]
        relative = KINDS[kind][0]
        value = metrics.get(metric)
        base = metrics.get(f"baseline.{metric}") if relative else None
        if not isinstance(value, (int, float)) or relative and not isinstance(base, (int, float)):
            have = sorted(k for k in metrics if not k.startswith(("baseline.", "delta.")) and k != "goals")
            raise GoalsFailed(f"goal {metric} {kind}: {metric} was not measured (measured: {', '.join(have)})")
        measured, passed = _judge(kind, target, value, base, direction(metric, custom))
        results.append({"metric": metric, "goal": kind, "target": target, "value": value,
                        "baseline": base, "measured": measured, "passed": passed})
    return {"passed": all(r["passed"] for r in results), "results": results}


def speedup(value: float, base: float, higher: bool) -> float | None:
    """How many times faster the model is than its baseline: baseline / model for a time, model /
    baseline for a rate (`higher`); None when either is not positive."""
    if value <= 0 or base <= 0:
        return None
    return value / base if higher else base / value


def _judge(kind: str, target: float, value: float, base: float | None, higher: bool) -> tuple[float | None, bool]:
    """(the number compared with the target, whether the goal is met). The number is None where
    it is undefined (a percent of a zero baseline, a ratio with a non-positive time or rate)."""
    slack = _EPS * max(1.0, abs(target))
    if kind == "at_least":
        return value, value >= target - slack
    if kind == "at_most":
        return value, value <= target + slack
    if kind == "min_speedup":
        ratio = speedup(value, base, higher)
        return ratio, ratio is not None and ratio >= target - slack
    drop = base - value if higher else value - base
    change = drop if kind.startswith("max_drop") else -drop
    if kind.endswith("_percent"):
        if base == 0:  # any change of a zero baseline is infinitely many percent
            if kind.startswith("max_drop"):
                return None, change <= 0
            return None, change > 0 or change == 0 and target == 0
        change = 100 * change / abs(base)
    if kind.startswith("max_drop"):
        return change, change <= target + slack
    return change, change >= target - slack


def describe(r: dict) -> str:
    """One goal and what was measured, e.g.
    `goal accuracy max_drop 0.01 vs baseline: measured drop 0.023 (0.791 vs 0.814)`."""
    kind, m = r["goal"], r["measured"]
    head = f"goal {r['metric']} {kind} {r['target']:g}"
    if not KINDS[kind][0]:
        return f"{head}: measured {r['value']:.4g}"
    what = KINDS[kind][1]
    if m is None:
        shown = "undefined"
    elif kind == "min_speedup":
        shown = f"{m:.3g}x"
    elif kind.endswith("_percent"):
        shown = f"{m:.3g}%"
    else:
        shown = f"{m:.4g}"
    return f"{head} vs baseline: measured {what} {shown} ({r['value']:.4g} vs {r['baseline']:.4g})"


def failure_line(verdict: dict) -> str:
    """Every failed goal on one line."""
    return "; ".join(describe(r) for r in verdict["results"] if not r["passed"])

"""Which trial wins: goals as constraints, the objective's Pareto front, the selection rule.
Pure functions of plain data (trial outcomes and metric directions).

A trial is `failed` (a pass or its evaluation failed: the one-line reason), or it has metrics and
a goals verdict. Only trials meeting every goal are eligible. `fastest-meeting-goals` and
`best:<metric>` take the eligible trial best on that metric; `pareto` takes the front's balanced
point: each objective scaled to 0 (the front's best) .. 1 (its worst), the point nearest the
ideal corner (Euclidean distance; ties by trial order). When finalists were timed again together,
only they compete (figures taken at different moments of a shared machine do not compare).
When no trial is eligible the search
fails naming the closest trial (most goals met, then best on the selection metric), unless the
recipe says on_goal_failure = "warn": then that closest trial is selected, with a warning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from modelmake.metrics import goals as goal_checks
from modelmake.metrics.catalogue import TIMED


@dataclass
class Outcome:
    suffix: str
    params: dict[str, Any]
    metrics: dict[str, Any] | None = None     # None: failed
    error: str | None = None                  # failed: which step, and why
    retimed: dict[str, float] = field(default_factory=dict)   # the finalists' timing in one run

    @property
    def failed(self) -> bool:
        return self.metrics is None

    @property
    def verdict(self) -> dict | None:
        return (self.metrics or {}).get("goals")

    @property
    def meets_goals(self) -> bool:
        return not self.failed and (self.verdict or {"passed": True})["passed"]

    @property
    def goals_met(self) -> int:
        v = self.verdict
        return 0 if v is None else sum(r["passed"] for r in v["results"])

    def value(self, metric: str) -> float | None:
        """The metric, re-timed where this trial was a finalist."""
        v = self.retimed.get(metric, (self.metrics or {}).get(metric))
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


class NoTrialSelected(Exception):
    """No trial can be selected: the message is one line for the user."""

    plain = True


Direction = Callable[[str], bool]   # metric -> higher is better


def _order(metric: str, higher: Direction) -> Callable[[Outcome], tuple]:
    """Sort key: best first, trials without the metric last, then trial order (stable sort)."""
    def key(o: Outcome) -> tuple:
        v = o.value(metric)
        return (v is None, -(v or 0.0) if higher(metric) else (v or 0.0))
    return key


def dominates(a: Outcome, b: Outcome, objective: tuple[str, ...], higher: Direction) -> bool:
    better = False
    for m in objective:
        va, vb = a.value(m), b.value(m)
        if va is None or vb is None:
            return False
        if (va < vb) if higher(m) else (va > vb):
            return False
        if va != vb:
            better = True
    return better


def pareto_front(trials: list[Outcome], objective: tuple[str, ...], higher: Direction) -> list[Outcome]:
    """The trials no other trial beats on every objective (in trial order)."""
    return [t for t in trials if not any(dominates(o, t, objective, higher) for o in trials if o is not t)]


def finalists(eligible: list[Outcome], select_metric: str | None, objective: tuple[str, ...],
              higher: Direction, count: int) -> list[Outcome]:
    """The trials worth timing again together: the best `count` by the timed metric the selection
    uses (for pareto: the front's best by its first timed objective). None when nothing timed decides."""
    if select_metric is not None:
        timed, pool = (select_metric if select_metric in TIMED else None), eligible
    else:
        timed, pool = next((m for m in objective if m in TIMED), None), pareto_front(eligible, objective, higher)
    if timed is None:
        return []
    return sorted(pool, key=_order(timed, higher))[:count]


def knee(front: list[Outcome], objective: tuple[str, ...], higher: Direction) -> Outcome:
    spans = {}
    for m in objective:
        vals = [t.value(m) for t in front if t.value(m) is not None]
        best = max(vals) if higher(m) else min(vals)
        worst = min(vals) if higher(m) else max(vals)
        spans[m] = (best, worst)

    def distance(t: Outcome) -> float:
        total = 0.0
        for m, (best, worst) in spans.items():
            v = t.value(m)
            total += 0.0 if worst == best or v is None else ((v - best) / (worst - best)) ** 2
        return math.sqrt(total)
    return min(front, key=distance)


@dataclass
class Selection:
    selected: Outcome
    rule: str                    # how it was chosen, in words
    front: list[Outcome]
    warning: str | None = None   # the fallback of on_goal_failure = "warn"


def select(trials: list[Outcome], select_rule: str, select_metric: str | None, objective: tuple[str, ...],
           higher: Direction, on_goal_failure: str, timed_together: list[Outcome] | None = None) -> Selection:
    """`timed_together`: the finalists, when they were timed again in one run. Then only they
    compete: their figures and another trial's, taken at another moment, are not comparable."""
    done = [t for t in trials if not t.failed]
    if not done:
        first = trials[0] if trials else None
        raise NoTrialSelected("every trial failed" + (f"; {first.suffix}: {first.error}" if first else ""))
    eligible = [t for t in done if t.meets_goals]
    front = pareto_front(eligible or done, objective, higher)
    warning = None
    if not eligible:
        closest = sorted(done, key=_order(select_metric or objective[0], higher))
        closest = max(closest, key=lambda t: t.goals_met)   # max keeps the first of equals
        missed = goal_checks.failure_line(closest.verdict)
        line = (f"no trial meets the goals; closest: {closest.suffix} ({closest.goals_met} of "
                f"{len(closest.verdict['results'])} met; {missed})")
        if on_goal_failure != "warn":
            raise NoTrialSelected(line)
        warning = line + "; selected it anyway (on_goal_failure = \"warn\")"
        return Selection(closest, "closest to the goals", front, warning)
    pool = [t for t in eligible if t in timed_together] if timed_together else eligible
    if select_metric is None:
        pool_front = pareto_front(pool, objective, higher)
        return Selection(knee(pool_front, objective, higher), "the Pareto front's balanced point", front)
    best = sorted(pool, key=_order(select_metric, higher))[0]
    how = "fastest" if select_rule == "fastest-meeting-goals" else f"best {select_metric}"
    return Selection(best, f"{how} of the trials meeting the goals", front)

"""Racing: a study's winner is chosen on several training runs, not on one.

Under label noise one run's validation accuracy is a draw of a lottery: an EDF near the edge of
stability can score well once and fail the next time. After the search, the top ``candidates``
distinct full-budget configurations are trained again with new training seeds on the same split
(the same data, noise draw and clean validation split as the search), in rounds of one seed
each. After each round, a candidate whose optimistic score falls below the leader's pessimistic
one is out; the race ends when one candidate is left or every round has run. The winner is the
candidate with the best seed-robust score (``rule``): the mean over its runs, or a lower
confidence bound. Pure functions on plain records: the driver runs the races and the storage
keeps them.

A run's score is the mean of its last ``window`` epochs' validation accuracy (a single epoch's
accuracy on a small split moves by about a point from epoch to epoch).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = ["UNSTABLE_POINTS", "Rule", "leader", "run_score", "scores", "spread", "standings",
           "survivors", "unstable"]

Rule = Literal["mean", "lcb"]

# Seeds of one configuration that disagree by more than this many points of accuracy make its
# result a lottery: status, the report, the dashboard and the export say so.
UNSTABLE_POINTS = 2.0

# The spread of one configuration's runs before any has two: about a point of validation
# accuracy on MNIST-1D's splits (measured in bench_racing.py), kept modest so that a single
# run neither wins nor loses a race on its own.
PRIOR_STD = 0.01


def run_score(val_accs: Sequence[float], window: int) -> float:
    """Mean of the last ``window`` epochs' validation accuracy (NaN when there are none)."""
    vals = [float(v) for v in val_accs if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan
    tail = vals[-max(1, window):]
    return sum(tail) / len(tail)


def scores(candidate: Mapping[str, Any]) -> list[float]:
    """Every run's score of a race candidate: its search run, then its re-evaluations."""
    out = [float(candidate["search_score"])]
    out += [float(r["score"]) for r in candidate.get("runs") or []
            if r.get("score") is not None and math.isfinite(float(r["score"]))]
    return out


def _pooled_std(candidates: Sequence[Mapping[str, Any]]) -> float:
    """The within-configuration spread, pooled over every candidate with two runs or more."""
    num = den = 0.0
    for c in candidates:
        s = scores(c)
        if len(s) > 1:
            num += statistics.variance(s) * (len(s) - 1)
            den += len(s) - 1
    return math.sqrt(num / den) if den else PRIOR_STD


def _bound(candidate: Mapping[str, Any], sd: float, z: float) -> float:
    s = scores(candidate)
    return statistics.mean(s) + z * sd / math.sqrt(len(s))


def _own_std(candidate: Mapping[str, Any], pooled: float) -> float:
    """The candidate's own spread over its runs (the pooled one while it has a single run):
    the lower bound penalises a configuration whose seeds disagree."""
    s = scores(candidate)
    return statistics.stdev(s) if len(s) > 1 else pooled


def standings(candidates: Sequence[Mapping[str, Any]], rule: Rule = "mean",
              ) -> list[dict[str, Any]]:
    """The candidates, best first under ``rule``, each with its runs' summary: ``n``, ``mean``,
    ``std``, ``min``, ``max``, ``spread`` (max - min) and ``value`` (what the rule ranks by:
    the mean, or the mean less one standard error of the candidate's own runs).
    Ties go to the earlier trial."""
    sd = _pooled_std(candidates)
    rows = []
    for c in candidates:
        s = scores(c)
        value = statistics.mean(s) if rule == "mean" else _bound(c, _own_std(c, sd), -1.0)
        rows.append({**c, "n": len(s), "mean": statistics.mean(s),
                     "std": statistics.stdev(s) if len(s) > 1 else 0.0, "min": min(s),
                     "max": max(s), "spread": max(s) - min(s), "value": value})
    return sorted(rows, key=lambda r: (-r["value"], r["trial"]))


def leader(candidates: Sequence[Mapping[str, Any]], rule: Rule = "mean") -> dict[str, Any]:
    return standings(candidates, rule)[0]


def survivors(candidates: Sequence[dict[str, Any]], z: float = 1.0,
              evidence: Sequence[Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The candidates still in the race: those whose optimistic score (mean + z standard
    errors) reaches the leader's pessimistic one (by mean). The standard errors use the
    spread pooled over ``evidence`` (every candidate of the race, default ``candidates``):
    what one seed changes is the same question for all of them."""
    if len(candidates) < 2:
        return list(candidates)
    sd = _pooled_std(evidence if evidence is not None else candidates)
    best = max(candidates, key=lambda c: statistics.mean(scores(c)))
    floor = _bound(best, sd, -z)
    return [c for c in candidates if c is best or _bound(c, sd, z) >= floor]


def spread(values: Sequence[float]) -> float:
    """max - min of accuracies (fractions), in points; 0 for fewer than two."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return 100.0 * (max(vals) - min(vals)) if len(vals) > 1 else 0.0


def unstable(values: Sequence[float], points: float = UNSTABLE_POINTS) -> bool:
    """Whether seeds of one configuration disagree by more than ``points`` points."""
    return spread(values) > points

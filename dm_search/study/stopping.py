"""Early-stopping rules for a study's trials, decided on clean validation accuracy.

Pure logic, no Ray: the runner wraps a rule in a Tune scheduler, and the fidelity benchmark
replays the same rule on recorded learning curves. A rule sees each trial's validation
accuracy after every epoch and answers whether the trial goes on.

Why not plain ASHA: under label noise the early epochs rank EDFs almost backwards. Fast
learners (CE, low emphasis modes) peak early and then memorise the wrong labels; robust EDFs
with a high emphasis mode start slowly and finish best. Ray's ASHA also decides a rung as soon
as one other trial has reached it, so whichever trial arrives first sets the bar. The rules
here put the first rung later (a fraction of the budget), decide a rung only once enough
trials have reached it, and score a trial at a rung by where its curve is heading, not only
where it is (see docs and benchmarks/RESULTS.md for the measurements behind the default).
"""

from __future__ import annotations

import heapq
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["MedianRule", "NoStopping", "Replay", "RungRule", "StoppingRule", "expected",
           "replay", "rung_epochs"]


class StoppingRule(Protocol):
    def on_result(self, trial: str, epoch: int, value: float) -> bool:
        """Record ``value`` (validation accuracy after ``epoch``); False stops the trial."""

    def forget(self, trial: str) -> None:
        """The trial ended (finished, stopped or failed)."""


class NoStopping:
    def on_result(self, trial: str, epoch: int, value: float) -> bool:
        return True

    def forget(self, trial: str) -> None:
        pass


def rung_epochs(budget: int, grace: int, reduction_factor: float) -> list[int]:
    """The epochs at which a trial's rung is decided: grace * rf^k, below the budget."""
    rungs: list[int] = []
    r = float(max(grace, 1))
    while round(r) < budget:
        if not rungs or round(r) > rungs[-1]:
            rungs.append(round(r))
        r *= reduction_factor
    return rungs


@dataclass
class RungRule:
    """Asynchronous successive halving with three changes that early rank inversion needs.

    - ``grace`` (epochs) puts the first rung late enough that slow starters are not judged
      on their start.
    - A rung is decided only once ``min_trials`` trials have reached it (the trial itself
      included); the first ones through continue, as in ASHA, but no single early arrival sets
      the bar for the next.
    - A trial's score at a rung is its validation accuracy plus ``trend`` times its gain over
      the last ``window`` epochs (a learner still climbing is scored ahead of one that has
      peaked and is falling back while it memorises). ``trend=0`` is ASHA's score.

    A trial is stopped when its score is below the (1 - 1/reduction_factor) quantile of the
    scores recorded at that rung, which keeps the top 1/reduction_factor.
    """

    budget: int
    grace: int
    reduction_factor: float = 3.0
    min_trials: int = 1
    trend: float = 0.0
    window: int = 5
    rungs: list[int] = field(init=False)
    recorded: dict[int, dict[str, float]] = field(init=False)
    curves: dict[str, list[float]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.rungs = rung_epochs(self.budget, self.grace, self.reduction_factor)
        self.recorded = {r: {} for r in self.rungs}

    def score(self, curve: list[float]) -> float:
        if self.trend == 0.0 or len(curve) <= 1:
            return curve[-1]
        back = curve[-1 - min(self.window, len(curve) - 1)]
        return curve[-1] + self.trend * (curve[-1] - back)

    def on_result(self, trial: str, epoch: int, value: float) -> bool:
        curve = self.curves.setdefault(trial, [])
        curve.append(value if math.isfinite(value) else 0.0)
        if epoch not in self.recorded:
            return True
        rung = self.recorded[epoch]
        s = self.score(curve)
        rung[trial] = s
        if len(rung) < self.min_trials:
            return True
        return s >= _quantile(list(rung.values()), 1.0 - 1.0 / self.reduction_factor)

    def forget(self, trial: str) -> None:
        self.curves.pop(trial, None)  # rung records stay: they are the bar for later trials


@dataclass
class MedianRule:
    """Median stopping: after ``grace`` epochs, stop a trial whose best value so far is below
    the median of the other trials' running means at the same epoch (needs ``min_trials``
    other trials there)."""

    grace: int
    min_trials: int = 3
    means: dict[int, dict[str, float]] = field(default_factory=dict)
    curves: dict[str, list[float]] = field(default_factory=dict)

    def on_result(self, trial: str, epoch: int, value: float) -> bool:
        curve = self.curves.setdefault(trial, [])
        curve.append(value if math.isfinite(value) else 0.0)
        self.means.setdefault(epoch, {})[trial] = statistics.fmean(curve)
        if epoch < self.grace:
            return True
        others = [v for t, v in self.means[epoch].items() if t != trial]
        if len(others) < self.min_trials:
            return True
        return max(curve) >= statistics.median(others)

    def forget(self, trial: str) -> None:
        self.curves.pop(trial, None)


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), without numpy."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class Replay:
    """One replayed study: the trial it returns, and what it cost."""

    returned: int  # index of the best trial that ran its full budget
    epochs: int  # epochs trained in all
    regret: float  # best final value in the pool minus the returned trial's
    compute: float  # epochs / (every trial run to its end)


def replay(curves: Sequence[Sequence[float]], rule: StoppingRule, *, workers: int,
           order: Sequence[int] | None = None, rng: random.Random | None = None) -> Replay:
    """Replay a study on recorded learning curves, without training anything.

    Trials start in ``order`` on ``workers`` slots; each trial's epochs take its own time
    (drawn from 0.7 to 1.3 units per trial when ``rng`` is given, else 1), so that concurrency
    changes the order in which trials reach a rung, as in a live study. The rule sees every
    epoch's value; the study returns the best trial that ran its full budget."""
    queue = list(range(len(curves)) if order is None else order)
    events: list[tuple[float, int, int, int, float]] = []  # (time, seq, trial, epoch, pace)
    seq = 0
    finished: list[int] = []
    epochs = 0

    def start(now: float) -> None:
        nonlocal seq
        if queue:
            pace = rng.uniform(0.7, 1.3) if rng is not None else 1.0
            heapq.heappush(events, (now + pace, seq, queue.pop(0), 1, pace))
            seq += 1

    for _ in range(workers):
        start(0.0)
    while events:
        now, _, trial, done, pace = heapq.heappop(events)
        epochs += 1
        go_on = rule.on_result(str(trial), done, float(curves[trial][done - 1]))
        if done == len(curves[trial]):
            finished.append(trial)
        elif go_on:
            heapq.heappush(events, (now + pace, seq, trial, done + 1, pace))
            seq += 1
            continue
        rule.forget(str(trial))
        start(now)
    if not finished:
        raise ValueError("no trial ran its full budget: the rule stopped every trial")
    best = max(finished, key=lambda t: curves[t][-1])
    top = max(c[-1] for c in curves)
    return Replay(best, epochs, top - curves[best][-1], epochs / sum(len(c) for c in curves))


def expected(curves: Sequence[Sequence[float]], make: Callable[[], StoppingRule], *,
             workers: int, orders: int, seed: int = 0) -> tuple[float, float, float]:
    """(mean regret, worst regret, mean compute share) of a rule over ``orders`` random
    arrival orders (seeded: the same orders for every rule)."""
    regrets, shares = [], []
    for k in range(orders):
        order = list(range(len(curves)))
        random.Random(seed + k).shuffle(order)
        r = replay(curves, make(), workers=workers, order=order,
                   rng=random.Random(seed + 1000 + k))
        regrets.append(r.regret)
        shares.append(r.compute)
    return statistics.mean(regrets), max(regrets), statistics.mean(shares)

"""How well does an early epoch predict the end of training, and which early stopping keeps
the winner? Trains a pool of EDFs at full budget (no early stopping), then replays schedulers
on the recorded curves.

    python benchmarks/bench_fidelity.py [--settings sym0.4 sym0.6 pair0.4] [--orders 50]

Part 1 trains (or reads from benchmarks/results/curves.json) every configuration in POOL on
MNIST-1D under each noise setting for 60 epochs, and prints the Spearman rank correlation
between validation accuracy at 10/20/33/50/75% of the budget and the final validation
accuracy. Part 2 replays early-stopping rules on those curves without retraining: trials
arrive in a random order, run on 2 or 8 workers, and the rule sees
each epoch's validation accuracy as a live study would. For each rule it prints the expected
regret (best final val in the pool minus the final val of the trial the study returns: the
best trial that ran its full budget) and the compute used, in epochs and as a share of running
every trial to the end. Each trial's epochs take their own time (0.7 to 1.3 units, drawn per
trial), so that concurrency changes the order in which trials reach each rung.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import EPOCHS, Job, run_jobs
from scipy.stats import spearmanr

from dm_search.study.stopping import MedianRule, NoStopping, RungRule, expected

# The paper's hand grid (four emphasis modes, four spreads each) and CE, then GCE, the
# Gaussian-bump family and spreads beyond the grid's largest.
PAPER_GRID: list[dict[str, Any]] = [
    {"family": "dm", "lam": lam, "beta": beta}
    for lam, betas in ((0.0, (0.5, 1.0, 2.0, 4.0)), (0.5, (4.0, 8.0, 12.0, 16.0)),
                       (1.0, (8.0, 12.0, 16.0, 20.0)), (2.0, (12.0, 16.0, 20.0, 24.0)))
    for beta in betas
] + [{"family": "cce"}]
POOL: list[dict[str, Any]] = [
    *PAPER_GRID,
    {"family": "gce", "q": 0.4}, {"family": "gce", "q": 0.7}, {"family": "gce", "q": 1.0},
    {"family": "normal", "psi": 0.3, "beta": 16.0},
    {"family": "normal", "psi": 0.5, "beta": 8.0}, {"family": "normal", "psi": 0.7, "beta": 16.0},
    {"family": "dm", "lam": 0.5, "beta": 32.0}, {"family": "dm", "lam": 1.0, "beta": 32.0},
    {"family": "dm", "lam": 1.0, "beta": 48.0}, {"family": "dm", "lam": 3.0, "beta": 24.0},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["sym0.4", "sym0.6", "pair0.4"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--orders", type=int, default=50)
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args()
    jobs = [Job(s, edf) for s in args.settings for edf in POOL]
    run_jobs(jobs, workers=args.workers)
    if args.train_only:
        return
    pools = {s: [r["val_acc"] for r in run_jobs([Job(s, e) for e in POOL], verbose=False)]
             for s in args.settings}
    print(f"# {platform.machine()}, {len(POOL)} configurations x {len(args.settings)} settings, "
          f"{EPOCHS} epochs, seed 0; replays over {args.orders} arrival orders")
    print("\n## Rank correlation of val acc at a fraction of the budget with final val acc\n")
    fracs = (0.10, 0.20, 0.33, 0.50, 0.75)
    print("| setting | best final val | " + " | ".join(f"{f:.0%}" for f in fracs) + " |")
    print("| --- | --- |" + " --- |" * len(fracs))
    for s, curves in pools.items():
        final = [c[-1] for c in curves]
        rhos = [spearmanr([c[round(f * EPOCHS) - 1] for c in curves], final)[0] for f in fracs]
        print(f"| {s} | {max(final):.4f} | " + " | ".join(f"{r:+.2f}" for r in rhos) + " |")
    print("\n## Schedulers replayed on the recorded curves\n")
    print("regret: best final val in the pool minus the returned trial's, in points (mean over "
          "orders, worst in brackets); compute: epochs trained / running every trial to the end")
    rules = candidate_rules(EPOCHS)
    for workers in (2, 8):
        print(f"\n### concurrency {workers}\n")
        print("| rule | " + " | ".join(f"{s} regret | {s} compute" for s in pools)
              + " | mean regret | worst regret | mean compute |")
        print("| --- |" + " --- | --- |" * len(pools) + " --- | --- | --- |")
        for name, make in rules.items():
            cells, regrets, worst, computes = [], [], [], []
            for curves in pools.values():
                r, w, c = expected(curves, make, workers=workers, orders=args.orders)
                cells.append(f"{100 * r:.2f} ({100 * w:.1f}) | {100 * c:.0f}%")
                regrets.append(r)
                worst.append(w)
                computes.append(c)
            print(f"| {name} | " + " | ".join(cells) + f" | {100 * statistics.mean(regrets):.2f} "
                  f"| {100 * max(worst):.1f} | {100 * statistics.mean(computes):.0f}% |",
                  flush=True)


def candidate_rules(budget: int) -> dict[str, Any]:
    """Name -> factory of a fresh rule, for every scheduler the table compares."""
    rules: dict[str, Any] = {"none": NoStopping}
    for g in (0.10, 0.17, 0.33, 0.50):
        for rf in (2, 3, 4):
            grace = max(1, round(g * budget))
            rules[f"asha grace {g:.0%} rf {rf}"] = (
                lambda grace=grace, rf=rf: RungRule(budget, grace, rf))
    for g in (0.17, 0.33):
        rules[f"median grace {g:.0%}"] = lambda g=g: MedianRule(round(g * budget))
    for g in (0.25, 0.33):
        for rf in (3, 4):
            for k in (3, 5):
                for trend in (0.0, 1.0, 3.0):
                    grace = round(g * budget)
                    rules[f"rung grace {g:.0%} rf {rf} min {k} trend {trend:g}"] = (
                        lambda grace=grace, rf=rf, k=k, trend=trend:
                        RungRule(budget, grace, rf, min_trials=k, trend=trend))
    return rules


if __name__ == "__main__":
    main()

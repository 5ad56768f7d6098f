"""Which rule should crown a study's winner? Replays selection rules on a pool of configurations
trained with several seeds on the same data.

    python benchmarks/bench_racing.py [--settings sym0.4 sym0.6 pair0.4] [--seeds 3] [--draws 2000]

Part 1 trains (or reads from benchmarks/results/curves.json) every configuration of
bench_fidelity's POOL on each setting with ``--seeds`` training seeds on one split and one noise
draw (data seed 0; seed 0 is bench_fidelity's run). Part 2 replays a study many times without
training: each draw searches a random subset of the pool, sees ONE run of each configuration
(a random one of its seeds: the lottery a study plays), and a rule crowns one. A racing rule
spends part of the same budget re-running its top candidates with the other seeds, so it
searches fewer configurations. The truth a rule is judged by is each configuration's mean
TEST accuracy over all its seeds (the rules only ever see validation accuracy): regret is the
best configuration's truth minus the crowned one's, in points.
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _pool import EPOCHS, Job, run_jobs
from bench_fidelity import POOL

from dm_search.study import racing

# The paper grid's compute: 17 full-length runs, one of them the CE reference.
BUDGET_RUNS = 16


def train(settings: Sequence[str], seeds: int, workers: int) -> dict[str, list[list[dict]]]:
    """setting -> per configuration, its runs (one record per seed)."""
    jobs = [Job(s, e, seed=k, data_seed=0) for s in settings for e in POOL for k in range(seeds)]
    recs = run_jobs(jobs, workers=workers)
    out: dict[str, list[list[dict]]] = {s: [] for s in settings}
    it = iter(recs)
    for s in settings:
        for _ in POOL:
            out[s].append([next(it) for _ in range(seeds)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", nargs="+", default=["sym0.4", "sym0.6", "pair0.4"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--budget-runs", type=int, nargs="+", default=[BUDGET_RUNS],
                    help="searched runs a study affords (16: the paper grid's compute less "
                         "the CE reference; a study with early stopping runs about 26)")
    ap.add_argument("--train-only", action="store_true")
    args = ap.parse_args()
    pools = train(args.settings, args.seeds, args.workers)
    if args.train_only:
        return
    print(f"# {platform.machine()}, {len(POOL) - 1} searchable configurations x "
          f"{len(args.settings)} settings x {args.seeds} seeds, {EPOCHS} epochs; "
          f"{args.draws} draws per method and setting; budget {BUDGET_RUNS} full runs")
    print("\n## Seed spread of one configuration (points, max - min over seeds)\n")
    print("| setting | median val spread | median test spread | configs > 2 points (test) |"
          " runs that collapsed | best mean test | its spread |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for s, runs in pools.items():
        truth = _truth(runs)
        vs = [racing.spread([_score(r, 1) for r in rs]) for rs in runs]
        ts = [racing.spread([_test(r) for r in rs]) for rs in runs]
        b = max(range(len(runs)), key=lambda i: truth[i])
        dead = sum(1 for rs in runs for r in rs if r.get("failed"))
        print(f"| {s} | {statistics.median(vs):.2f} | {statistics.median(ts):.2f} | "
              f"{sum(t > 2 for t in ts)} of {len(ts)} | {dead} | {100 * truth[b]:.2f} | "
              f"{ts[b]:.2f} |")
    for budget in args.budget_runs:
        _replay_table(pools, args, budget)


def _replay_table(pools: dict[str, list[list[dict]]], args: argparse.Namespace,
                  budget: int) -> None:
    print(f"\n## Selection rules replayed, a budget of {budget} full runs\n")
    print("regret: the best configuration's mean test accuracy over seeds minus the crowned "
          "one's, in points; mean over draws, and the mean of the worst tenth of draws (tail). "
          "race runs: re-evaluation runs spent (of the budget's "
          f"{budget}).\n")
    print("| method | " + " | ".join(f"{s} regret | {s} tail" for s in pools)
          + " | mean regret | mean tail | race runs |")
    print("| --- |" + " --- | --- |" * len(pools) + " --- | --- | --- |")
    for m in methods(args.seeds):
        cells, regrets, tails, spent = [], [], [], []
        for s, runs in pools.items():
            r, t, c = replay(runs, m, args.draws, seed=sum(map(ord, s)), budget=budget)
            cells.append(f"{r:.2f} | {t:.2f}")
            regrets.append(r)
            tails.append(t)
            spent.append(c)
        print(f"| {m.name} | " + " | ".join(cells) + f" | {statistics.mean(regrets):.2f} | "
              f"{statistics.mean(tails):.2f} | {statistics.mean(spent):.1f} |", flush=True)


@dataclass(frozen=True)
class Method:
    name: str
    k: int = 0  # candidates raced (0: crown the best single run)
    seeds: int = 0  # re-evaluation rounds
    window: int = 1  # epochs averaged into a run's score
    rule: racing.Rule = "mean"
    eliminate: bool = True  # drop candidates that cannot catch up, round by round
    on_top: bool = False  # the races' runs come on top of the budget instead of out of it


def methods(seeds: int) -> list[Method]:
    out = [Method(f"single run, last {w} epoch(s)", window=w) for w in (1, 3, 5, 10)]
    for k in (2, 3, 4):
        for s in range(1, seeds):
            for rule in ("mean", "lcb"):
                for elim in (False, True):
                    if rule == "lcb" and not elim:
                        continue
                    out.append(Method(f"race top {k}, {s} seed(s), {rule}, last 5"
                                      + (", eliminating" if elim else ""), k, s, 5, rule, elim))
    for k in (2, 3):
        for s in range(1, seeds):
            out.append(Method(f"race top {k}, {s} seed(s), mean, last 5, ON TOP of the budget",
                              k, s, 5, on_top=True))
    return out


def _test(rec: dict) -> float:
    """A run's final test accuracy; a run that diverged or collapsed is at chance."""
    return 0.1 if rec.get("failed") else rec["test_acc"][-1]


def _score(rec: dict, window: int) -> float:
    """What the study sees of a run: a failed one scores nothing, as in a race."""
    return 0.0 if rec.get("failed") else racing.run_score(rec["val_acc"], window)


def _truth(runs: list[list[dict]]) -> list[float]:
    return [statistics.mean(_test(r) for r in rs) for rs in runs]


def _searchable(runs: list[list[dict]]) -> list[int]:
    return [i for i, rs in enumerate(runs) if rs[0]["edf"]["family"] != "cce"]


def replay(runs: list[list[dict]], m: Method, draws: int, seed: int, budget: int = BUDGET_RUNS,
           ) -> tuple[float, float, float]:
    """(mean regret, mean regret of the worst tenth, mean race runs) of ``m`` over draws."""
    rng = random.Random(seed)
    truth = _truth(runs)
    pool = _searchable(runs)
    best = max(truth[i] for i in pool)
    n_seeds = len(runs[0])
    regrets, spent = [], []
    for _ in range(draws):
        searched = rng.sample(pool, min(len(pool), budget - (0 if m.on_top else m.k * m.seeds)))
        seen = {i: rng.randrange(n_seeds) for i in searched}
        score = {i: _score(runs[i][seen[i]], m.window) for i in searched}
        ranked = sorted(searched, key=lambda i: -score[i])
        if m.k == 0:
            chosen, used = ranked[0], 0
        else:
            chosen, used = _race(runs, ranked[: m.k], seen, score, m, rng)
        regrets.append(100 * (best - truth[chosen]))
        spent.append(used)
    tail = sorted(regrets)[-max(1, draws // 10):]
    return statistics.mean(regrets), statistics.mean(tail), statistics.mean(spent)


def _race(runs: list[list[dict]], top: list[int], seen: dict[int, int], score: dict[int, float],
          m: Method, rng: random.Random) -> tuple[int, int]:
    others = {i: rng.sample([k for k in range(len(runs[i])) if k != seen[i]], m.seeds)
              for i in top}
    cands: list[dict[str, Any]] = [{"trial": i, "search_score": score[i], "runs": []}
                                   for i in top]
    alive, used = list(cands), 0
    for rnd in range(m.seeds):
        for c in alive:
            rec = runs[c["trial"]][others[c["trial"]][rnd]]
            c["runs"].append({"score": _score(rec, m.window)})
            used += 1
        if m.eliminate:
            alive = racing.survivors(alive, evidence=cands)
            if len(alive) == 1:
                break
    return racing.leader(alive, m.rule)["trial"], used


if __name__ == "__main__":
    main()

"""TPE with a bounded history against TPE with the whole study: what each suggestion costs as
the study grows, and what the search finds.

A synthetic objective shaped like dm-search's space (a family to choose, then that family's
coordinates: two for ``dm``, one for ``gce``), with Gaussian noise of one point standing for
the run-to-run spread of a trained network. Each sampler runs ``--trials`` trials, one at a
time, at each of ``--seeds`` seeds, in Optuna's in-memory storage (the database is not the
question here: bench_scale.py measures suggestions on a real one). Reported per sampler: the
median seconds of a suggestion over the last 100 trials; the noise-free value of the trial the
search ranks best, and the mean noise-free value of the last 200 trials (where the search
concentrates).

    python benchmarks/bench_sampler.py --trials 1500 --history 250 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dm_search.study.sampling import BoundedHistory


def truth(params: dict) -> float:
    """The noise-free score: dm peaks at 0.95 near (mode 0.55, spread 18), gce at 0.93."""
    if params["family"] == "dm":
        m, s = params["dm.mode"], params["dm.spread"]
        return 0.95 - 0.8 * (m - 0.55) ** 2 - 0.0006 * (s - 18.0) ** 2
    return 0.93 - 0.9 * (params["gce.mode"] - 0.8) ** 2


def run(sampler: optuna.samplers.BaseSampler, trials: int, seed: int) -> dict:
    noise = random.Random(seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    times = []
    for _ in range(trials):
        t0 = time.perf_counter()
        trial = study.ask()
        family = trial.suggest_categorical("family", ["dm", "gce"])
        if family == "dm":
            trial.suggest_float("dm.mode", 0.0, 1.0)
            trial.suggest_float("dm.spread", 2.0, 30.0)
        else:
            trial.suggest_float("gce.mode", 0.0, 1.0)
        times.append(time.perf_counter() - t0)
        study.tell(trial, truth(trial.params) + noise.gauss(0.0, 0.01))
    done = study.trials
    return {"suggest_s": statistics.median(times[-100:]),
            "best_true": truth(study.best_trial.params),
            "last200_true": statistics.mean(truth(t.params) for t in done[-200:])}


def tpe(seed: int) -> optuna.samplers.TPESampler:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=1500)
    ap.add_argument("--history", type=int, default=250)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(f"{platform.node()}, Python {platform.python_version()}, optuna {optuna.__version__}; "
          f"{args.trials} trials, history {args.history}")
    print("| seed | sampler | suggestion s (last 100) | best trial's true value | "
          "last 200 trials' mean true value |")
    print("|---|---|---|---|---|")
    rows: dict[str, list[dict]] = {"whole study": [], "bounded": []}
    for seed in args.seeds:
        for name, sampler in (("whole study", tpe(seed)),
                              ("bounded", BoundedHistory(tpe(seed), recent=args.history))):
            r = run(sampler, args.trials, seed)
            rows[name].append(r)
            print(f"| {seed} | {name} | {r['suggest_s']:.4f} | {r['best_true']:.4f} | "
                  f"{r['last200_true']:.4f} |", flush=True)
    mean = {n: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for n, rs in rows.items()}
    w, b = mean["whole study"], mean["bounded"]
    print(f"\nmeans over {len(args.seeds)} seeds: suggestion {w['suggest_s']:.4f} s -> "
          f"{b['suggest_s']:.4f} s (ratio {b['suggest_s'] / w['suggest_s']:.2f}); best true "
          f"{w['best_true']:.4f} -> {b['best_true']:.4f}; last 200 {w['last200_true']:.4f} -> "
          f"{b['last200_true']:.4f}")
    assert all(math.isfinite(v) for v in b.values())


if __name__ == "__main__":
    main()
